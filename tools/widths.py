#!/usr/bin/env python3
"""Report notebook lines wider than the page, without building the book.

    python tools/widths.py                      # every notebook under chapters/
    python tools/widths.py chapters/06_mixture_of_experts/02_capacity.ipynb

A code line or a line of a stored text output (streams, text/plain results)
longer than LIMIT characters (88, the course's line length; the page shows 92
at a 1280-pixel window) makes a block scroll sideways in the rendered book.
The browser check (tests/browser/check_book.py) is the authority; this is the
quick look before a notebook is re-executed. Exit status 1 when a line is too
wide, so it can gate a script.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

import nbformat

LIMIT = 88
ROOT = Path(__file__).resolve().parent.parent


def width(line: str) -> int:
    """Display width: East Asian wide and full-width characters count twice."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def wide_lines(path: Path, limit: int = LIMIT) -> list[tuple[int, str, int, str]]:
    """(cell index, 'code' or 'output', width, line) of every line wider than limit."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            if width(line) > limit:
                found.append((i, "code", width(line), line))
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out.get("text", "")
            else:
                text = out.get("data", {}).get("text/plain", "")
                if "text/html" in out.get("data", {}) or "image/png" in out.get("data", {}):
                    text = ""
            if isinstance(text, list):
                text = "".join(text)
            for line in text.splitlines():
                line = line.rsplit("\r", 1)[-1]
                if width(line) > limit:
                    found.append((i, "output", width(line), line))
    return found


def main(argv: list[str]) -> int:
    args = [Path(a) for a in argv] or [ROOT / "chapters"]
    paths = []
    for a in args:
        paths += sorted(a.rglob("*.ipynb")) if a.is_dir() else [a]
    bad = 0
    for path in paths:
        if ".ipynb_checkpoints" in path.parts:
            continue
        lines = wide_lines(path)
        if lines:
            bad += 1
            print(f"{path}: {len(lines)} line(s) over {LIMIT}")
            for cell, kind, w, line in lines[:5]:
                print(f"  cell {cell} {kind} ({w}): {line[:70]}...")
    print(f"{bad} of {len(paths)} notebook(s) have lines over {LIMIT} characters")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
