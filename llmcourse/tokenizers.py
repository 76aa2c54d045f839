"""Tokenizers. Shape legend: ``V`` vocab, ``M`` merges (``V = 256 + M + specials``).

:class:`CharTokenizer` maps each character of a corpus to an id (and optional
special tokens, such as padding or T5's sentinels, to ids after the characters).
It round-trips any text made of its characters: ``decode(encode(s)) == s``.

:class:`BPETokenizer` is GPT-2's byte-level byte-pair encoding
(Sennrich et al. 2016; Radford et al. 2019). Text is UTF-8 bytes, so every
string is encodable and nothing is ever unknown. Training starts from the 256
single bytes and repeatedly fuses the most frequent adjacent pair into a new
token::

    (a, b) = argmax_{pairs} count(a, b)     ties: the lexicographically greater (bytes(a), bytes(b))
    vocab  <- vocab + [bytes(a) + bytes(b)]  merges <- merges + [(a, b)]

Pairs are counted only inside *pre-tokens*, the pieces of GPT-2's regex
(:data:`GPT2_SPLIT_PATTERN`): words with their leading space, digit runs,
punctuation runs and whitespace, so a merge never glues a word to the
punctuation after it. Encoding splits the same way and applies the learned
merges to each pre-token in the order they were learned (lowest rank first).

Ids. A tokenizer trained here has ids ``0..255`` = the raw byte values, then one
id per merge in the order learned, then the special tokens. The files are
GPT-2's: ``vocab.json`` writes each token's bytes in GPT-2's printable
alphabet (:func:`bytes_to_unicode`: byte 32, the space, is ``"Ġ"``; byte 10
is ``"Ċ"``; the 188 printable bytes stand for themselves), so id ``b < 256``
is written as ``bytes_to_unicode()[b]``. GPT-2's own file orders its first 256
ids differently (the printable bytes first: id 0 is ``"!"``), which is why a
loaded tokenizer keeps the ids of its file and never assumes ``id == byte``.

Hugging Face's ``BpeTrainer`` runs the same algorithm but gives ties to the
pair of *smaller ids* (its ids sort the byte alphabet by GPT-2 character), so
its merges equal the course's up to the first tie between equally frequent
pairs; encodings through the same files are equal always (both checked in
``tests/test_tokenizers.py``).

Command line::

    python -m llmcourse.tokenizers train --vocab-size 4096 --special-tokens '<|endoftext|>' --out tok/ corpus.txt
    python -m llmcourse.tokenizers encode --tokenizer tok/ text.txt   # ids of each line, one line each
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import warnings
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import regex

_argv = getattr(sys, "orig_argv", [])
if "-m" in _argv and _argv[_argv.index("-m") + 1 : _argv.index("-m") + 2] == [__name__]:
    # `python -m llmcourse.tokenizers`: the package imports this module before runpy runs it again as
    # __main__, and runpy warns that the module is already imported. It is harmless here (the command
    # below calls this module's main, one copy of every class), so spare the reader the warning.
    warnings.filterwarnings("ignore", message=f"'{__name__}' found in sys.modules", category=RuntimeWarning)


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


# ---------------------------------------------------------------------------
# Byte-level BPE
# ---------------------------------------------------------------------------

#: GPT-2's pre-tokenizer: contractions, letters, digits and other symbols (each
#: with at most one leading space), then whitespace. ``\s+(?!\S)`` leaves the
#: last space of a run to the word after it, so " hello" stays one piece.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PRETOKENIZE = regex.compile(GPT2_SPLIT_PATTERN)
_WHITESPACE = regex.compile(r"\s")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to 256 printable characters (the alphabet of ``vocab.json``).

    The 188 printable Latin-1 bytes stand for themselves; the other 68 (controls,
    space, soft hyphen...) are shifted to ``chr(256 + n)`` in byte order, so a
    token's text never holds whitespace or control characters and ``merges.txt``
    can separate a pair with one space.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return dict(sorted(chars.items()))


def _token_to_text(token: bytes) -> str:
    """A token's bytes spelled in GPT-2's printable alphabet (``b" the"`` -> ``"Ġthe"``)."""
    alphabet = bytes_to_unicode()
    return "".join(alphabet[b] for b in token)


@lru_cache(maxsize=1)
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _text_to_token(text: str, where: str) -> bytes:
    """Inverse of :func:`_token_to_text`; a character outside the alphabet means the file is not byte-level."""
    alphabet = _unicode_to_bytes()
    try:
        return bytes(alphabet[c] for c in text)
    except KeyError as e:
        raise ValueError(
            f"{where}: token {text!r} has the character {e.args[0]!r}, which is not in GPT-2's byte-level alphabet; "
            "this is not a byte-level BPE file (or a special token is missing from special_tokens.json: "
            "pass it as special_tokens=[...])."
        ) from None


class _Greater:
    """Wraps a pair of byte strings so that ``heapq`` (a min-heap) pops the lexicographically *greater* pair first."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[bytes, bytes]) -> None:
        self.key = key

    def __lt__(self, other: "_Greater") -> bool:
        return self.key > other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Greater) and self.key == other.key


def _merge_word(word: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace every ``a, b`` in ``word`` by ``new``, left to right (``a a a`` with ``(a, a)`` -> ``aa a``)."""
    out = []
    i, n = 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level BPE tokenizer, GPT-2 style: train, encode, decode, save/load GPT-2's files.

    ``BPETokenizer.train(text, vocab_size=4096, special_tokens=["<|endoftext|>"])``
    learns ``vocab_size - 256 - len(special_tokens)`` merges (fewer if the text
    runs out of pairs). ``encode(text) -> list[int]`` of length ``T``;
    ``decode(ids) -> str``; ``decode(encode(s)) == s`` for every string ``s``.

    Attributes:
        vocab: id -> bytes of every regular token (the 256 bytes and the merges).
        merges: the learned pairs of token bytes, highest priority first.
        special_tokens: special token text -> id. They are matched in the text
            before anything else (longest first), never split and never merged.
    """

    #: how many pre-tokens the encoding cache keeps before it starts afresh
    #: (bounds memory when streaming a large file of mostly unique words)
    cache_size = 200_000

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: dict[str, int] | Sequence[str] = (),
    ) -> None:
        self.vocab = dict(vocab)
        self.merges = [(bytes(a), bytes(b)) for a, b in merges]
        if not isinstance(special_tokens, dict):
            special_tokens = list(special_tokens)
            if len(set(special_tokens)) != len(special_tokens):
                raise ValueError(f"special tokens must be distinct; got {special_tokens}.")
            start = max(self.vocab, default=-1) + 1
            special_tokens = {s: start + i for i, s in enumerate(special_tokens)}
        self.special_tokens = dict(special_tokens)
        self._check_and_index()

    # -- construction ------------------------------------------------------

    def _check_and_index(self) -> None:
        """Validate the tables and build the encoder's lookups (byte -> id, (id, id) -> (rank, id))."""
        ids_of = {}
        for i, tok in self.vocab.items():
            if tok in ids_of:
                raise ValueError(f"the vocabulary holds the token {tok!r} twice (ids {ids_of[tok]} and {i}); a vocabulary must be a bijection.")
            ids_of[tok] = i
        missing = [b for b in range(256) if bytes([b]) not in ids_of]
        if missing:
            raise ValueError(
                f"the vocabulary lacks {len(missing)} of the 256 single-byte tokens (first: byte {missing[0]}, "
                f"{_token_to_text(bytes([missing[0]]))!r} in vocab.json); a byte-level BPE must hold every byte so that any text "
                "can be encoded. Train it with the full byte alphabet (HF: initial_alphabet=ByteLevel.alphabet())."
            )
        for s, i in self.special_tokens.items():
            if not isinstance(s, str) or not s:
                raise ValueError(f"special tokens must be non-empty strings; got {s!r}.")
            if i in self.vocab:
                raise ValueError(f"special token {s!r} has id {i}, which is already the regular token {self.vocab[i]!r}.")
        if len(set(self.special_tokens.values())) != len(self.special_tokens):
            raise ValueError(f"two special tokens share an id: {self.special_tokens}.")
        self._byte_ids = [ids_of[bytes([b])] for b in range(256)]
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            if a not in ids_of or b not in ids_of or a + b not in ids_of:
                missing_tok = next(t for t in (a, b, a + b) if t not in ids_of)
                raise ValueError(
                    f"merge {rank} ({_token_to_text(a)} {_token_to_text(b)}) uses or makes the token "
                    f"{_token_to_text(missing_tok)!r}, which is not in the vocabulary; merges.txt and vocab.json do not belong together."
                )
            self._ranks.setdefault((ids_of[a], ids_of[b]), (rank, ids_of[a + b]))
        self._id_to_bytes = {**self.vocab, **{i: s.encode("utf-8") for s, i in self.special_tokens.items()}}
        specials = sorted(self.special_tokens, key=lambda s: (-len(s), s))  # longest first: "<|a|><|b|>" before "<|a|>"
        self._special_split = regex.compile("(" + "|".join(regex.escape(s) for s in specials) + ")") if specials else None
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(
        cls,
        text_or_files: str | Path | Iterable[str | Path],
        vocab_size: int,
        special_tokens: Sequence[str] = (),
    ) -> "BPETokenizer":
        """Learn byte-level BPE merges from a text (a ``str``) or from files (a ``Path`` or a list of paths).

        Counting works on unique pre-tokens weighted by frequency, and after a
        merge only the words that contain the merged pair are updated (an index
        pair -> words finds them), instead of recounting the corpus per merge.
        The best pair comes from a heap whose counts may be stale but never too
        low (a count only falls, except for pairs the new token makes, which
        are pushed fresh), so the first popped entry whose count is current is
        the true maximum; a stale one is pushed back with its current count.

        Args:
            text_or_files: the training text, or one or more UTF-8 text files.
            vocab_size: the size of the vocabulary, special tokens included;
                at least ``256 + len(special_tokens)``.
            special_tokens: strings that are cut out of the text before
                counting (never merged with their neighbours) and get the last ids.
        """
        special_tokens = list(special_tokens)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise ValueError(f"vocab_size must be an integer, not {vocab_size!r}.")
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"vocab_size={vocab_size} is too small: a byte-level BPE needs 256 byte tokens + {len(special_tokens)} "
                f"special tokens = {256 + len(special_tokens)} ids before its first merge; raise vocab_size."
            )
        probe = cls({i: bytes([i]) for i in range(256)}, [], special_tokens)  # validates the specials
        chunks = _read_training_chunks(text_or_files, special_tokens)
        words = Counter(probe._pieces_of(chunks, specials=False))
        vocab = {i: bytes([i]) for i in range(256)}
        merges = _learn_merges(words, vocab, vocab_size - 256 - len(special_tokens))
        spelled = {_token_to_text(t) for t in vocab.values()}
        clash = [s for s in special_tokens if s in spelled]
        if clash:
            # vocab.json lists specials under their own text: it could not tell the two apart
            raise ValueError(
                f"special token {clash[0]!r} is spelled like a regular token in vocab.json's byte alphabet; "
                "wrap it in characters the text never uses, e.g. '<|...|>'."
            )
        return cls(vocab, merges, special_tokens)

    # -- encoding ----------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (the number of ids when they are contiguous, as after :meth:`train`)."""
        return max([*self.vocab, *self.special_tokens.values()]) + 1

    @property
    def specials(self) -> list[str]:
        """The special tokens in id order (the same attribute as :class:`CharTokenizer`'s)."""
        return sorted(self.special_tokens, key=self.special_tokens.__getitem__)

    def special_id(self, token: str) -> int:
        if token not in self.special_tokens:
            raise ValueError(
                f"{token!r} is not a special token of this tokenizer; it has {self.specials}. "
                "Pass it to BPETokenizer.train(special_tokens=...) or use with_specials()."
            )
        return self.special_tokens[token]

    def with_specials(self, specials: Sequence[str]) -> "BPETokenizer":
        """The same tokenizer plus extra special tokens after the largest id (existing ids do not change)."""
        table = dict(self.special_tokens)
        for s in specials:
            if s not in table:
                table[s] = max([*self.vocab, *table.values()]) + 1
        return BPETokenizer(self.vocab, self.merges, table)

    def _bpe(self, piece: str) -> list[int]:
        """The ids of one pre-token: apply the merges, lowest rank first, each to all its occurrences."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        byte_ids, ranks = self._byte_ids, self._ranks
        ids = [byte_ids[b] for b in piece.encode("utf-8")]
        while len(ids) > 1:
            best = None
            for pair in zip(ids, ids[1:]):
                r = ranks.get(pair)
                if r is not None and (best is None or r[0] < best[1][0]):
                    best = (pair, r)
            if best is None:
                break
            (a, b), (_, new) = best
            ids = _merge_word(ids, a, b, new)
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def _segments(self, text: str) -> Iterator[tuple[str, bool]]:
        """``(segment, is_special)`` in order: the text cut at special tokens, longest match first."""
        if self._special_split is None:
            if text:
                yield text, False
            return
        for i, part in enumerate(self._special_split.split(text)):
            if i % 2:
                yield part, True
            elif part:
                yield part, False

    def _pieces_of(self, chunks: Iterable[str], specials: bool = True) -> Iterator[str]:
        """Pre-tokens of the concatenated ``chunks``, and the special tokens themselves if ``specials``."""
        findall = _PRETOKENIZE.findall
        for chunk in chunks:
            for seg, is_special in self._segments(chunk):
                if is_special:
                    if specials:
                        yield seg
                else:
                    yield from findall(seg)

    def encode(self, text: str) -> list[int]:
        """``text -> ids``: cut out special tokens, pre-tokenize with GPT-2's regex, apply the merges per piece.

        Shapes: ``str -> (T,)`` list of ints.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}; decode bytes first (bytes.decode('utf-8')).")
        out: list[int] = []
        bpe, special = self._bpe, self.special_tokens
        findall = _PRETOKENIZE.findall
        for seg, is_special in self._segments(text):
            if is_special:
                out.append(special[seg])
            else:
                for piece in findall(seg):
                    out.extend(bpe(piece))
        return out

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Stream the ids of ``"".join(iterable)`` (e.g. an open text file, line by line) in bounded memory.

        The ids equal ``encode("".join(iterable))``: text is held back only until
        the pre-token at the end of what has been read is certain to be complete
        (:func:`_safe_chunks`), so memory is bounded by the longest line, not the file.

        Shapes: iterable of str -> iterator of ids.
        """
        for chunk in _safe_chunks(iterable, self.special_tokens):
            yield from self.encode(chunk)

    def decode(self, ids: Iterable[int]) -> str:
        """``ids -> text``; byte sequences that are not valid UTF-8 (a cut multi-byte character) become U+FFFD, as in GPT-2."""
        table = self._id_to_bytes
        parts = []
        for i in ids:
            i = int(i)
            tok = table.get(i)
            if tok is None:
                raise ValueError(f"token id {i} is not in this tokenizer's vocabulary (ids 0..{self.vocab_size - 1}).")
            parts.append(tok)
        return b"".join(parts).decode("utf-8", errors="replace")

    def token_bytes(self, i: int) -> bytes:
        """The bytes of token ``i`` (a special token's UTF-8 text)."""
        if i not in self._id_to_bytes:
            raise ValueError(f"token id {i} is not in this tokenizer's vocabulary (ids 0..{self.vocab_size - 1}).")
        return self._id_to_bytes[i]

    # -- files -------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``vocab.json`` and ``merges.txt`` (GPT-2's format), ``special_tokens.json`` and ``tokenizer_config.json``.

        Special tokens are also in ``vocab.json`` under their own text, as in
        GPT-2's file (``"<|endoftext|>": 50256``), so a loader that knows
        nothing of ``special_tokens.json`` still finds their ids.
        ``special_tokens.json`` (text -> id) is what :meth:`load` reads;
        ``tokenizer_config.json`` tells ``transformers`` the same, so
        ``AutoTokenizer.from_pretrained(directory)`` treats them as special too.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = {_token_to_text(tok): i for i, tok in sorted(self.vocab.items())}
        for s, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1]):
            if s in vocab:
                raise ValueError(f"special token {s!r} is spelled like the regular token with id {vocab[s]}; vocab.json cannot hold both.")
            vocab[s] = i
        (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        lines = ["#version: 0.2"] + [f"{_token_to_text(a)} {_token_to_text(b)}" for a, b in self.merges]
        (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (directory / "special_tokens.json").write_text(
            json.dumps(dict(sorted(self.special_tokens.items(), key=lambda kv: kv[1])), ensure_ascii=False, indent=1) + "\n",
            encoding="utf-8",
        )
        (directory / "tokenizer_config.json").write_text(json.dumps(self._hf_config(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return directory

    def _hf_config(self) -> dict:
        """``transformers``' description: GPT-2's tokenizer class, no prefix space, the special tokens."""
        eot = "<|endoftext|>" if "<|endoftext|>" in self.special_tokens else None
        return {
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": False,
            # GPT2Tokenizer's defaults are "<|endoftext|>"; None stops it adding that token when we lack it
            "bos_token": eot,
            "eos_token": eot,
            "unk_token": eot,
            "added_tokens_decoder": {
                str(i): {"content": s, "special": True, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
                for s, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1])
            },
        }

    @classmethod
    def load(cls, directory: str | Path, special_tokens: Sequence[str] = ()) -> "BPETokenizer":
        """Read ``vocab.json`` + ``merges.txt`` written by :meth:`save`, GPT-2, or Hugging Face ``tokenizers``.

        Special tokens come from ``special_tokens.json`` if present (else from
        the special entries of a ``tokenizer_config.json``'s
        ``added_tokens_decoder``, as ``transformers`` 4 wrote it), plus any
        listed in ``special_tokens`` (they must be in ``vocab.json``; e.g.
        ``["<|endoftext|>"]`` for GPT-2's own files).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"tokenizer folder {str(directory)!r} does not exist; pass the folder that BPETokenizer.save wrote.")
        vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
        for path in (vocab_path, merges_path):
            if not path.is_file():
                raise ValueError(f"{path.name} is missing from {str(directory)!r}; a byte-level BPE folder holds vocab.json and merges.txt.")
        try:
            table = json.loads(vocab_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"vocab.json in {str(directory)!r} is not valid JSON ({e}); re-save the tokenizer.") from None
        if not isinstance(table, dict) or not all(isinstance(i, int) and i >= 0 for i in table.values()):
            raise ValueError(f"vocab.json in {str(directory)!r} must be one JSON object mapping token text to a non-negative integer id.")
        specials: dict[str, int] = {}
        special_path = directory / "special_tokens.json"
        if special_path.is_file():
            try:
                saved = json.loads(special_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"special_tokens.json in {str(directory)!r} is not valid JSON ({e}).") from None
            if not isinstance(saved, dict) or not all(isinstance(i, int) for i in saved.values()):
                raise ValueError(f"special_tokens.json in {str(directory)!r} must map each special token to its integer id.")
            specials.update(saved)
        elif (directory / "tokenizer_config.json").is_file():
            try:
                config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
                added = config.get("added_tokens_decoder", {}) if isinstance(config, dict) else {}
                specials.update({t["content"]: int(i) for i, t in added.items() if t.get("special") and t["content"] in table})
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"tokenizer_config.json in {str(directory)!r} is not a valid transformers config ({e!r}).") from None
        for s in special_tokens:
            if s not in table:
                raise ValueError(f"special token {s!r} is not in vocab.json of {str(directory)!r}; check its spelling.")
            specials[s] = table[s]
        for s, i in specials.items():
            if table.get(s, i) != i:
                raise ValueError(f"special token {s!r} has id {i} in special_tokens.json but {table[s]} in vocab.json.")
        vocab = {i: _text_to_token(t, "vocab.json") for t, i in table.items() if t not in specials}
        try:
            lines = merges_path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"merges.txt in {str(directory)!r} is not UTF-8 text ({e.reason} at byte {e.start}); re-save the tokenizer.") from None
        merges = []
        for n, line in enumerate(lines, start=1):
            if not line or (n == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise ValueError(f"merges.txt line {n} is {line!r}; each line must be two tokens separated by one space.")
            merges.append((_text_to_token(parts[0], "merges.txt"), _text_to_token(parts[1], "merges.txt")))
        return cls(vocab, merges, specials)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, specials={self.specials})"


def _learn_merges(words: Counter, vocab: dict[int, bytes], n_merges: int) -> list[tuple[bytes, bytes]]:
    """The BPE loop on unique pre-tokens ``words`` (text -> count); adds the new tokens to ``vocab`` in place."""
    seqs = [list(w.encode("utf-8")) for w in words]  # each word as byte ids
    freqs = list(words.values())
    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> words that contain (or once contained) it
    for idx, (seq, f) in enumerate(zip(seqs, freqs)):
        for pair in zip(seq, seq[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + f
            where.setdefault(pair, set()).add(idx)
    heap = [(-c, _Greater((vocab[a], vocab[b])), a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        neg, key, a, b = heapq.heappop(heap)
        current = pair_counts.get((a, b), 0)
        if current != -neg:  # stale: the count fell since the push
            if current > 0:
                heapq.heappush(heap, (-current, key, a, b))
            continue
        new = len(vocab)
        vocab[new] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
        fresh = set()
        for idx in where.pop((a, b)):
            seq = seqs[idx]
            merged = _merge_word(seq, a, b, new)
            if len(merged) == len(seq):
                continue  # a stale index entry: an earlier merge already consumed the pair here
            f = freqs[idx]
            for pair in zip(seq, seq[1:]):
                pair_counts[pair] -= f
            for pair in zip(merged, merged[1:]):
                pair_counts[pair] = pair_counts.get(pair, 0) + f
                if new in pair:
                    fresh.add(pair)
                    where.setdefault(pair, set()).add(idx)
            seqs[idx] = merged
        del pair_counts[(a, b)]
        for pair in fresh:
            c = pair_counts.get(pair, 0)
            if c > 0:
                heapq.heappush(heap, (-c, _Greater((vocab[pair[0]], vocab[pair[1]])), pair[0], pair[1]))
    return merges


def _read_training_chunks(text_or_files, special_tokens: Sequence[str]) -> Iterator[str]:
    """A ``str`` is the text itself; a ``Path`` or a list of paths are UTF-8 files, streamed in safe pieces."""
    if isinstance(text_or_files, str):
        yield text_or_files
        return
    paths = [text_or_files] if isinstance(text_or_files, Path) else list(text_or_files)
    for p in paths:  # check them all before the long part starts
        if not Path(p).is_file():
            raise ValueError(f"training file {str(p)!r} does not exist (or is not a file); pass UTF-8 text files, or the text itself as a str.")
    for p in paths:
        with Path(p).open(encoding="utf-8", newline="") as f:
            try:
                # file boundaries are hard boundaries: no pre-token spans two files
                yield from _safe_chunks(f, special_tokens)
            except UnicodeDecodeError as e:
                raise ValueError(f"training file {str(p)!r} is not UTF-8 text ({e.reason} at byte {e.start}).") from None


def _safe_chunks(chunks: Iterable[str], special_tokens: dict[str, int] | Sequence[str]) -> Iterator[str]:
    """Re-cut a stream of text so that no pre-token or special token spans two of the yielded pieces.

    A piece ends right after a pre-token that ends in a non-whitespace
    character and is followed by at least two more characters already read.
    GPT-2's regex has no lookbehind; its one lookahead, ``\\s+(?!\\S)``, never
    reaches past a non-whitespace character; and its alternatives are tried
    in order, not longest first, so ``'`` at the end of what was read could
    still become ``'ll``: two characters of margin settle every contraction.
    So the pre-tokens before the cut are those of the whole text. Text that
    could still start a special token is held back too.
    Tokenizing each piece on its own therefore equals tokenizing the whole.
    """
    specials = list(special_tokens)
    splitter = (
        regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=lambda s: (-len(s), s)))) if specials else None
    )
    prefixes = {s[:k] for s in specials for k in range(1, len(s))}
    longest = max((len(s) for s in specials), default=0)
    buf = ""
    for chunk in chunks:
        if not chunk:
            continue
        buf += chunk
        limit = len(buf)  # hold back a tail that may be the start of a special token
        for k in range(min(longest - 1, len(buf)), 0, -1):
            if buf[-k:] in prefixes:
                limit = len(buf) - k
                break
        start = 0  # start of the last run of plain text before limit
        if splitter is not None:
            for m in splitter.finditer(buf, 0, limit):
                start = m.end()
        cut = start
        for m in _PRETOKENIZE.finditer(buf, start, limit):
            end = m.end()
            # two characters of margin: a contraction ("'ll") is decided only 3 characters after its quote
            if end <= limit - 2 and not _WHITESPACE.match(buf, end - 1):
                cut = end
        if cut > 0:
            yield buf[:cut]
            buf = buf[cut:]
    if buf:
        yield buf


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.tokenizers {train,encode} ...``; see ``--help``."""
    parser = argparse.ArgumentParser(prog="python -m llmcourse.tokenizers", description="Train or apply a byte-level BPE tokenizer.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="learn merges from UTF-8 text files and save vocab.json + merges.txt")
    tr.add_argument("files", nargs="+", type=Path, metavar="FILE", help="UTF-8 training text")
    tr.add_argument("--vocab-size", type=int, required=True, help="vocabulary size, specials included (>= 256 + specials)")
    tr.add_argument("--special-tokens", nargs="*", default=[], metavar="T", help="special tokens, e.g. '<|endoftext|>'")
    tr.add_argument("--out", type=Path, required=True, help="folder to write the tokenizer into")
    en = sub.add_parser("encode", help="print the ids of each line of FILE, space-separated, one line per input line")
    en.add_argument("file", type=Path, metavar="FILE")
    en.add_argument("--tokenizer", type=Path, required=True, metavar="DIR", help="folder written by train (or GPT-2's files)")
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            for f in args.files:
                if not f.is_file():
                    parser.error(f"training file {str(f)!r} does not exist")
            tok = BPETokenizer.train(args.files, args.vocab_size, special_tokens=args.special_tokens)
            tok.save(args.out)
            print(f"{tok!r} saved to {args.out}")
        else:
            if not args.file.is_file():
                parser.error(f"input file {str(args.file)!r} does not exist")
            tok = BPETokenizer.load(args.tokenizer)
            # each line on its own, its line break included, so the concatenated ids decode back to the file
            with args.file.open(encoding="utf-8", newline="") as f:
                for line in f:
                    print(" ".join(map(str, tok.encode(line))))
    except (ValueError, UnicodeDecodeError) as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    from llmcourse.tokenizers import main as _main  # the package's copy, not a second __main__ module

    raise SystemExit(_main())
