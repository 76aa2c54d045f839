"""``python -m llmcourse.benchmarks <name> [options]``: run one benchmark."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {
    "train": "llmcourse.benchmarks.train",
    "attention": "llmcourse.benchmarks.attention",
    "moe": "llmcourse.benchmarks.moe",
    "tokenizer": "llmcourse.benchmarks.tokenizer",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m llmcourse.benchmarks", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark to run")
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(BENCHMARKS[args.name])
    return module.main(rest) or 0


if __name__ == "__main__":
    raise SystemExit(main())
