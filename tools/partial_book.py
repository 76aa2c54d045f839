#!/usr/bin/env python3
"""Configure a build of only the pages that exist yet (chapters in progress).

    python tools/partial_book.py OUT_DIR      # writes OUT_DIR/_toc.yml and OUT_DIR/_config.yml

`make book PARTIAL=1` and `make test PARTIAL=1` build with these files. The
table of contents is _toc.yml without the pages that do not exist (each one
is printed); the configuration is _config.yml with warnings about links to
missing pages switched off, since the landing page links every chapter. The
normal build uses _toc.yml and _config.yml themselves, where a missing page
is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = (".md", ".ipynb")
# Jupyter Book's own default, plus links to pages that are not built.
PARTIAL_SUPPRESS = ["myst.domains", "myst.xref_missing"]


def exists(name: str) -> bool:
    return any((ROOT / f"{name}{suffix}").is_file() for suffix in SUFFIXES)


def prune(entries: list, dropped: list[str]) -> list:
    kept = []
    for entry in entries:
        entry = dict(entry)
        if "file" in entry and not exists(entry["file"]):
            dropped.append(entry["file"])
            dropped.extend(child["file"] for child in entry.get("sections", []) if "file" in child)
            continue
        for key in ("chapters", "sections"):
            if key in entry:
                entry[key] = prune(entry[key], dropped)
                if not entry[key]:
                    del entry[key]
        if any(key in entry for key in ("file", "chapters", "url", "glob")):
            kept.append(entry)
    return kept


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    if not exists(toc["root"]):
        print(f"error: the root page {toc['root']} does not exist")
        return 1
    dropped: list[str] = []
    for key in ("parts", "chapters", "sections"):
        if key in toc:
            toc[key] = prune(toc[key], dropped)
    (out / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True))

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["suppress_warnings"] = sorted(set(sphinx_config.get("suppress_warnings", [])) | set(PARTIAL_SUPPRESS))
    (out / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    for name in dropped:
        print(f"partial book: {name} does not exist yet, left out")
    print(f"partial book: {len(dropped)} page(s) left out ({out / '_toc.yml'}, {out / '_config.yml'})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
