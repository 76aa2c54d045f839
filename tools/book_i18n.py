#!/usr/bin/env python3
"""Build the translated editions of the book and extract its messages.

    python tools/book_i18n.py gettext [--partial]          # messages -> _build/gettext/**/*.pot
    python tools/book_i18n.py html zh_CN [--partial]       # Chinese edition -> _build/html-zh
    python tools/book_i18n.py config zh_CN OUT_DIR         # only write OUT_DIR/_config.yml

The book is written once, in English; a translation is a set of Sphinx
gettext catalogs (locale/<lang>/LC_MESSAGES/<document>.po, one per page or
notebook) applied at build time. `make translations` runs `gettext`, then
`sphinx-intl update`; `make book-zh` runs `html zh_CN`.

Both commands run Jupyter Book's own Sphinx build (jupyter_book.sphinx,
the function `jupyter-book build` calls) with the book's _config.yml and
_toc.yml, warnings as errors, nit-picky, keep going, like `make book`. They
call it directly rather than through the command line for one reason: the
command line always puts the doctrees in _build/.doctrees, which the English
build owns. The gettext builder cannot share them (Sphinx refuses an
environment made for another builder), and a second language would rebuild
the English environment every time. So each build here has its own doctrees:
_build/.doctrees-gettext, _build/.doctrees-<lang>.

The configuration of a translated edition is _config.yml with `language`
set, its title translated, and the language-switch link pointing back to the
English edition; it is written to _build/i18n/<lang>/_config.yml. Its table
of contents, _build/i18n/<lang>/_toc.yml, is _toc.yml with the part
captions ("Start here", ...) translated from the root page's catalog: the
captions are extracted into that catalog, but sphinx-external-toc inserts the
toctrees after Sphinx has applied the translations, so they are translated
here instead. With
--partial the build starts from tools/partial_book.py's files in
_build/partial (run it first, as the Makefile does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"

# What differs in each translated edition. The output folder sits next to
# _build/html, so that the relative language-switch links resolve.
EDITIONS = {
    "zh_CN": {
        "out": "html-zh",
        "title": "llmcourse:动手构建大语言模型",
        "search_bar_text": "搜索本书……",
        "twin": {"base": "../html/", "label": "English", "lang": "en", "title": "This page in English"},
    },
}


def source_files(partial: bool) -> tuple[Path, Path]:
    """The _config.yml and _toc.yml the build starts from."""
    if partial:
        config, toc = BUILD / "partial" / "_config.yml", BUILD / "partial" / "_toc.yml"
        if not config.is_file() or not toc.is_file():
            sys.exit("no _build/partial/_config.yml: run `python tools/partial_book.py _build/partial` first")
        return config, toc
    return ROOT / "_config.yml", ROOT / "_toc.yml"


def edition_config(language: str, base_config: Path, out_dir: Path) -> Path:
    """Write the configuration of the edition in `language`; return its path."""
    edition = EDITIONS[language]
    config = yaml.safe_load(base_config.read_text(encoding="utf-8"))
    config["title"] = edition["title"]
    sphinx = config.setdefault("sphinx", {})
    sphinx_config = sphinx.setdefault("config", {})
    sphinx_config["language"] = language
    sphinx_config.setdefault("html_context", {})["llmcourse_twin"] = edition["twin"]
    sphinx_config.setdefault("html_theme_options", {})["search_bar_text"] = edition["search_bar_text"]
    # Paths in the configuration are relative to the source folder, which is
    # still the repository root: locale_dirs, templates_path, bibtex files.
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "_config.yml"
    path.write_text(
        "# Written by tools/book_i18n.py from _config.yml; do not edit.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return path


def edition_toc(language: str, base_toc: Path, out_dir: Path) -> Path:
    """Write the table of contents of the edition in `language` (captions translated)."""
    from babel.messages.pofile import read_po

    toc = yaml.safe_load(base_toc.read_text(encoding="utf-8"))
    catalog_path = ROOT / "locale" / language / "LC_MESSAGES" / f"{toc['root']}.po"
    translations: dict[str, str] = {}
    if catalog_path.is_file():
        with catalog_path.open("rb") as f:
            translations = {m.id: m.string for m in read_po(f) if m.id and m.string and not m.fuzzy}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("caption"), str):
                node["caption"] = translations.get(node["caption"], node["caption"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(toc)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "_toc.yml"
    path.write_text(
        "# Written by tools/book_i18n.py from _toc.yml; do not edit.\n"
        + yaml.safe_dump(toc, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return path


def build(builder: str, out: Path, doctrees: Path, config: Path, toc: Path, quiet: bool = False) -> int:
    from jupyter_book.sphinx import build_sphinx

    print(f"book_i18n: {builder} build of {ROOT} with {config.relative_to(ROOT)} into {out.relative_to(ROOT)}")
    result = build_sphinx(
        ROOT,
        out,
        use_external_toc=True,
        noconfig=True,
        path_config=str(config),
        confoverrides={"external_toc_path": toc.as_posix(), "latex_individualpages": False, "nitpicky": True},
        doctreedir=doctrees,
        builder=builder,
        warningiserror=True,
        keep_going=True,
        quiet=quiet,
    )
    if result != 0:
        print(f"book_i18n: the {builder} build failed ({result})")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gettext = sub.add_parser("gettext", help="extract the messages of every page into _build/gettext")
    html = sub.add_parser("html", help="build a translated edition")
    html.add_argument("language", choices=sorted(EDITIONS))
    for command in (gettext, html):
        command.add_argument("--partial", action="store_true", help="only the pages that exist (tools/partial_book.py)")
        command.add_argument("--quiet", action="store_true", help="print warnings only")
    config = sub.add_parser("config", help="only write the configuration of a translated edition")
    config.add_argument("language", choices=sorted(EDITIONS))
    config.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)

    if args.command == "config":
        print(edition_config(args.language, ROOT / "_config.yml", args.out_dir))
        return 0
    base_config, toc = source_files(args.partial)
    if args.command == "gettext":
        return build("gettext", BUILD / "gettext", BUILD / ".doctrees-gettext", base_config, toc, args.quiet)
    config_path = edition_config(args.language, base_config, BUILD / "i18n" / args.language)
    toc_path = edition_toc(args.language, toc, BUILD / "i18n" / args.language)
    edition = EDITIONS[args.language]
    return build("html", BUILD / edition["out"], BUILD / f".doctrees-{args.language}", config_path, toc_path, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
