"""Tokenizers. Shape legend: ``V`` vocab.

:class:`CharTokenizer` maps each character of a corpus to an id (and optional
special tokens, such as padding or T5's sentinels, to ids after the characters).
It round-trips any text made of its characters: ``decode(encode(s)) == s``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence


class CharTokenizer:
    """Character-level tokenizer: ids ``0 .. len(chars)-1`` for characters, then the specials."""

    def __init__(self, chars: Iterable[str], specials: Sequence[str] = ()) -> None:
        chars = list(chars)
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters.")
        if set(specials) & set(chars) or len(set(specials)) != len(specials):
            raise ValueError("special tokens must be distinct and must not be plain characters.")
        self.chars = chars
        self.specials = list(specials)
        self._stoi = {c: i for i, c in enumerate(chars)}
        self._itos = chars + self.specials

    @classmethod
    def from_text(cls, text: str, specials: Sequence[str] = ()) -> "CharTokenizer":
        """A vocabulary of every character in ``text``, sorted so it is the same on every machine."""
        if not text:
            raise ValueError("cannot build a vocabulary from empty text.")
        return cls(sorted(set(text)), specials)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def special_id(self, token: str) -> int:
        if token not in self.specials:
            raise ValueError(f"{token!r} is not a special token of this tokenizer; it has {self.specials}.")
        return len(self.chars) + self.specials.index(token)

    def with_specials(self, specials: Sequence[str]) -> "CharTokenizer":
        """The same characters plus extra special tokens (ids of existing tokens do not change)."""
        return CharTokenizer(self.chars, self.specials + [s for s in specials if s not in self.specials])

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} is not in this tokenizer's vocabulary of {len(self.chars)} characters; "
                "build the tokenizer from text that contains it (CharTokenizer.from_text)."
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._itos):
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary [0, {len(self._itos)}).")
            out.append(self._itos[i])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars), "specials": self.specials}

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        if data.get("type") != "char":
            raise ValueError(f"not a character tokenizer description: type={data.get('type')!r}.")
        return cls(list(data["chars"]), data.get("specials", []))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, specials={self.specials})"
