"""Byte-level BPE speed: the course's pure-Python tokenizer against Hugging Face ``tokenizers`` (Rust), in one run.

``python -m llmcourse.benchmarks tokenizer [--quick] [--bytes N] [--vocab-size V] [--repeats R]``

Both train on the same first ``N`` bytes of the Shakespeare corpus (default
1,000,000) to the same vocabulary (default 4,096, no special tokens), then
encode the same text with the same merges: Hugging Face's tokenizer is built
from the ``vocab.json`` and ``merges.txt`` the course saved, so both do the
same work and must produce the same ids (checked and printed). Times are the
best of ``R`` runs; encoding is timed once with an empty cache (a freshly
loaded tokenizer, every pre-token seen for the first time) and once warm (the
same text again, every pre-token found in the cache), each as one string, and
then line by line (a fresh course tokenizer; ``encode_batch`` of the lines for
Hugging Face, the way it is usually fed and the way it uses several cores).
Hugging Face uses all the machine's cores when it trains and encodes a batch;
the course uses one.

The report prints the course's figures, Hugging Face's, and their ratio
(``course/hf`` for seconds, so above 1 means the course is slower; ``hf/course``
for throughput, likewise), and whether the course meets its targets: training
1 MB to 4,096 tokens in at most 30 s and encoding at least 1 MB/s. The merges
of the two trainers agree until the first tie between equally frequent pairs
(the course takes the greater pair of byte strings, Hugging Face the pair of
smaller ids); the report says how far.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..data import corpus_text
from ..tokenizers import BPETokenizer, bytes_to_unicode

TRAIN_TARGET_S = 30.0  # for 1 MB and 4,096 tokens
ENCODE_TARGET_MBPS = 1.0


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls, and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def text_of_bytes(n_bytes: int) -> str:
    """The first ``n_bytes`` bytes of the Shakespeare corpus as text (a cut multi-byte character is dropped)."""
    return corpus_text("shakespeare").encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")


def encode_lines(tok: BPETokenizer, lines: list[str], cold: bool) -> list[list[int]]:
    """Each line on its own, one cache for all lines (emptied first if ``cold``)."""
    if cold:
        tok._cache.clear()
    return [tok.encode(line) for line in lines]


def merges_of_hf_files(directory: Path) -> list[tuple[bytes, bytes]]:
    """Hugging Face's ``merges.txt`` read back into byte pairs, independently of the course's loader."""
    b2u = {c: b for b, c in bytes_to_unicode().items()}
    lines = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    return [tuple(bytes(b2u[c] for c in t) for t in line.split(" ")) for line in lines if line]


def run(n_bytes: int, vocab_size: int, repeats: int) -> dict:
    """Measure both tokenizers; every figure of the report."""
    import tokenizers as hf_tokenizers

    text = text_of_bytes(n_bytes)
    mb = len(text.encode("utf-8")) / 1e6
    train_s, ours = best_time(lambda: BPETokenizer.train(text, vocab_size), repeats)

    def hf_train():
        tok = hf_tokenizers.ByteLevelBPETokenizer()
        # min_frequency=0: keep merging pairs seen once, as the course does
        tok.train_from_iterator([text], vocab_size=vocab_size, min_frequency=0, show_progress=False)
        return tok

    hf_train_s, hf_trained = best_time(hf_train, repeats)

    with tempfile.TemporaryDirectory() as tmp:
        ours_dir, hf_dir = Path(tmp) / "course", Path(tmp) / "hf"
        ours.save(ours_dir)
        hf_dir.mkdir()
        hf_trained.save_model(str(hf_dir))
        hf_merges = merges_of_hf_files(hf_dir)
        agree = next((k for k, (a, b) in enumerate(zip(ours.merges, hf_merges)) if a != b), min(len(ours.merges), len(hf_merges)))
        hf = hf_tokenizers.ByteLevelBPETokenizer(str(ours_dir / "vocab.json"), str(ours_dir / "merges.txt"))
        cold = []
        for _ in range(repeats):
            fresh = BPETokenizer.load(ours_dir)  # empty cache
            t0 = time.perf_counter()
            ids = fresh.encode(text)
            cold.append(time.perf_counter() - t0)
        warm_s, _ = best_time(lambda: fresh.encode(text), repeats)
        hf_encode_s, hf_ids = best_time(lambda: hf.encode(text).ids, repeats)
        # how a corpus is usually fed to HF: a batch of lines, which it spreads over its cores
        lines = text.splitlines(keepends=True)
        by_line = BPETokenizer.load(ours_dir)
        lines_s, line_ids = best_time(lambda: encode_lines(by_line, lines, cold=True), repeats)
        hf_lines_s, hf_line_ids = best_time(lambda: [e.ids for e in hf.encode_batch(lines)], repeats)

    return {
        "megabytes": mb,
        "vocab_size": vocab_size,
        "merges": len(ours.merges),
        "train_s": train_s,
        "hf_train_s": hf_train_s,
        "encode_mbps": mb / min(cold),
        "encode_warm_mbps": mb / warm_s,
        "hf_encode_mbps": mb / hf_encode_s,
        "lines_mbps": mb / lines_s,
        "hf_lines_mbps": mb / hf_lines_s,
        "tokens": len(ids),
        "same_ids": ids == hf_ids and line_ids == hf_line_ids,
        "merges_agree": agree,
        "hf_version": hf_tokenizers.__version__,
    }


def report(r: dict, full_size: bool) -> str:
    """The printed table. ``full_size``: the run is the 1 MB / 4,096 one the targets are stated for."""
    lines = [
        f"byte-level BPE on {r['megabytes'] * 1e6:,.0f} bytes of Shakespeare, vocabulary {r['vocab_size']:,} "
        f"({r['merges']:,} merges, {r['tokens']:,} tokens, {r['megabytes'] * 1e6 / r['tokens']:.2f} bytes/token)",
        f"course: pure Python, 1 core; hf: tokenizers {r['hf_version']} (Rust), up to {os.cpu_count()} cores",
        f"{'':<22}{'course':>10}{'hf':>10}{'ratio':>10}",
        f"{'train (s)':<22}{r['train_s']:>10.3f}{r['hf_train_s']:>10.3f}{r['train_s'] / r['hf_train_s']:>10.1f} course/hf",
        f"{'encode cold (MB/s)':<22}{r['encode_mbps']:>10.2f}{r['hf_encode_mbps']:>10.2f}{r['hf_encode_mbps'] / r['encode_mbps']:>10.1f} hf/course",
        f"{'encode warm (MB/s)':<22}{r['encode_warm_mbps']:>10.2f}{r['hf_encode_mbps']:>10.2f}{r['hf_encode_mbps'] / r['encode_warm_mbps']:>10.1f} hf/course",
        f"{'encode lines (MB/s)':<22}{r['lines_mbps']:>10.2f}{r['hf_lines_mbps']:>10.2f}{r['hf_lines_mbps'] / r['lines_mbps']:>10.1f} hf/course",
        f"same ids as hf (whole text, and line by line): {'yes' if r['same_ids'] else 'NO'}",
        f"merges equal hf's until the first tie: {r['merges_agree']:,} of {r['merges']:,}",
    ]
    if full_size:
        train_ok = r["train_s"] <= TRAIN_TARGET_S
        encode_ok = r["encode_mbps"] >= ENCODE_TARGET_MBPS
        lines.append(
            f"targets: train <= {TRAIN_TARGET_S:.0f} s {'met' if train_ok else 'MISSED'}; "
            f"encode >= {ENCODE_TARGET_MBPS:.0f} MB/s {'met' if encode_ok else 'MISSED'}"
        )
    else:
        lines.append("targets: not judged (they are stated for 1,000,000 bytes and 4,096 tokens)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.benchmarks tokenizer", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 bytes, vocabulary 512, one repeat (a smoke test)")
    parser.add_argument("--bytes", type=int, default=None, help="bytes of Shakespeare to train and encode on (default 1,000,000)")
    parser.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (default 4,096)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per measurement, best kept (default 3)")
    args = parser.parse_args(argv)
    n_bytes = args.bytes or (50_000 if args.quick else 1_000_000)
    vocab_size = args.vocab_size or (512 if args.quick else 4096)
    repeats = args.repeats or (1 if args.quick else 3)
    if n_bytes < 1000 or vocab_size < 257 or repeats < 1:
        parser.error("--bytes must be at least 1000, --vocab-size at least 257 and --repeats at least 1")
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        parser.error("the comparison needs Hugging Face's tokenizers: pip install tokenizers")
    r = run(n_bytes, vocab_size, repeats)
    print(report(r, full_size=n_bytes >= 1_000_000 and vocab_size == 4096))
    return 0 if r["same_ids"] else 1
