"""``python -m llmcourse.benchmarks <name> [options]``: run one benchmark, or ``all`` of them in turn.

``all`` runs train, attention, generation, moe and tokenizer with their default
settings (each measures its baseline in the same run and prints ratios);
``all --quick`` passes ``--quick`` to each, a smoke test of a few seconds each.
"""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {
    "train": "llmcourse.benchmarks.train",
    "attention": "llmcourse.benchmarks.attention",
    "generation": "llmcourse.benchmarks.generation",
    "moe": "llmcourse.benchmarks.moe",
    "tokenizer": "llmcourse.benchmarks.tokenizer",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m llmcourse.benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="which benchmark to run ('all': every one)")
    args, rest = parser.parse_known_args(argv)
    if args.name != "all":
        module = importlib.import_module(BENCHMARKS[args.name])
        return module.main(rest) or 0
    if rest not in ([], ["--quick"]):
        parser.error(f"'all' takes only --quick (got {' '.join(rest)}); pass other options to one benchmark.")
    failed = []
    for name, path in BENCHMARKS.items():
        print(f"=== {name} ===", flush=True)
        code = importlib.import_module(path).main(list(rest)) or 0
        if code:
            failed.append(f"{name} (exit {code})")
        print(flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
