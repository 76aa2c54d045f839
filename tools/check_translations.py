#!/usr/bin/env python3
"""Check the translations of the book (locale/<lang>/LC_MESSAGES/*.po).

    python tools/check_translations.py                    # the catalogs only
    python tools/check_translations.py --html _build/html --html-zh _build/html-zh
    python tools/check_translations.py --report-only      # print the counts, never fail

Catalogs (always):
  - every page of _toc.yml has a catalog in every language under locale/, and
    no catalog is left for a page that is no longer in the book;
  - no message is untranslated, fuzzy or obsolete (#~), and every catalog
    parses;
  - a translation keeps the markup of its English message: the same MyST
    roles with the same targets ({term}`中文 <English term>` keeps the
    target `English term`), the same citation keys, the same math ($...$,
    $$...$$) and the same inline code, each the same number of times.

Builds (with --html and --html-zh, after `make book` and `make book-zh`):
  - every page of the English build has its twin at the same path in the
    Chinese one and the other way round;
  - every Chinese page says <html lang="zh-CN"> and shows Chinese text;
  - every page of both builds has the language-switch link, and it points at
    the same page in the other build, which exists.

Exit status 0 when everything passes, 1 otherwise (each problem printed).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = (".md", ".ipynb")
# The language tag each edition must declare in <html lang>.
HTML_LANG = {"zh_CN": "zh-CN"}
CJK = re.compile(r"[\u3400-\u9fff]")

# MyST markup that a translation must keep: inline code first (it may hold
# anything), then roles, then math. Roles: {name}`content`; with an explicit
# title, `title <target>`, only the target must be kept.
_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_ROLE = re.compile(r"\{([a-zA-Z][\w:+-]*)\}(`+)(.+?)\2", re.S)
_DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)(.+?)(?<![\\$])\$", re.S)
_TITLED = re.compile(r"^(.*?)\s*<([^<>]+)>\s*$", re.S)
_LINK = re.compile(r"\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def markup(text: str) -> Counter:
    """The markup of a message that a translation must keep, as a multiset."""
    found: Counter = Counter()
    # roles first, so that their backticks are not read as inline code
    def role(match: re.Match) -> str:
        name, content = match.group(1), match.group(3).strip()
        titled = _TITLED.match(content)
        if titled and name not in ("math",):
            content = titled.group(2).strip()
        if name.startswith("cite"):
            for key in content.split(","):
                found[f"{{{name}}} {key.strip()}"] += 1
        else:
            found[f"{{{name}}} {content}"] += 1
        return " "

    rest = _ROLE.sub(role, text)

    def code(match: re.Match) -> str:
        found[f"code {match.group(2)}"] += 1
        return " "

    rest = _CODE.sub(code, rest)

    def link(match: re.Match) -> str:
        found[f"link {match.group(1)}"] += 1
        return "] "

    rest = _LINK.sub(link, rest)
    for pattern, kind in ((_DISPLAY_MATH, "math"), (_INLINE_MATH, "math")):
        def math(match: re.Match, kind: str = kind) -> str:
            found[f"{kind} {match.group(1).strip()}"] += 1
            return " "

        rest = pattern.sub(math, rest)
    return found


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    counts: dict[str, Counter] = field(default_factory=dict)

    def add(self, problem: str) -> None:
        self.problems.append(problem)


# ---------------------------------------------------------------- catalogs
def toc_documents(toc_path: Path, only_existing: bool = False) -> list[str]:
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    docs = [toc["root"]]

    def walk(entries: list) -> None:
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    for key in ("parts", "chapters", "sections"):
        walk(toc.get(key, []))
    if only_existing:
        docs = [d for d in docs if any((ROOT / f"{d}{s}").is_file() for s in SUFFIXES)]
    return docs


def check_catalog(path: Path, label: str, report: Report) -> Counter:
    counts: Counter = Counter()
    try:
        with path.open("rb") as f:
            catalog = read_po(f, abort_invalid=True)
    except Exception as exc:  # babel raises PoFileError and others
        report.add(f"{label}: cannot be read: {exc}")
        return counts
    for message in catalog:
        if not message.id:  # the header
            continue
        counts["messages"] += 1
        msgid = message.id if isinstance(message.id, str) else message.id[0]
        msgstr = message.string if isinstance(message.string, str) else (message.string or [""])[0]
        first = " ".join(msgid.split())[:70]
        if not msgstr or not msgstr.strip():
            counts["untranslated"] += 1
            report.add(f"{label}: untranslated: {first!r}")
            continue
        if message.fuzzy:
            counts["fuzzy"] += 1
            report.add(f"{label}: fuzzy (check the translation, then remove the fuzzy flag): {first!r}")
            continue
        counts["translated"] += 1
        want, got = markup(msgid), markup(msgstr)
        if want != got:
            lost = sorted((want - got).elements())
            extra = sorted((got - want).elements())
            detail = "; ".join(
                part
                for part in (
                    f"missing: {', '.join(lost)}" if lost else "",
                    f"not in the English: {', '.join(extra)}" if extra else "",
                )
                if part
            )
            report.add(f"{label}: markup differs from the English ({detail}): {first!r}")
    for obsolete in catalog.obsolete.values():
        counts["obsolete"] += 1
        msgid = obsolete.id if isinstance(obsolete.id, str) else obsolete.id[0]
        report.add(f"{label}: obsolete #~ entry (delete it): {' '.join(msgid.split())[:70]!r}")
    return counts


def check_against_templates(pot_dir: Path, locale_dir: Path, languages: list[str], documents: list[str], report: Report) -> None:
    """Every message extracted from the English sources must be in the catalogs."""
    for doc in documents:
        pot = pot_dir / f"{doc}.pot"
        if not pot.is_file():
            report.add(f"no extracted messages for {doc} ({pot}); run `tools/book_i18n.py gettext` first")
            continue
        with pot.open("rb") as f:
            wanted = {m.id for m in read_po(f) if m.id}
        for language in languages:
            path = locale_dir / language / "LC_MESSAGES" / f"{doc}.po"
            if not path.is_file():
                continue  # reported by check_catalogs
            try:
                with path.open("rb") as f:
                    have = {m.id for m in read_po(f) if m.id}
            except Exception:  # reported by check_catalogs
                continue
            for msgid in sorted(wanted - have, key=str):
                text = msgid if isinstance(msgid, str) else msgid[0]
                report.add(
                    f"{language}/{doc}.po: the English text changed, this message is not in the catalog "
                    f"(run `make translations`): {' '.join(text.split())[:70]!r}"
                )
            for msgid in sorted(have - wanted, key=str):
                text = msgid if isinstance(msgid, str) else msgid[0]
                report.add(
                    f"{language}/{doc}.po: message no longer in the English page (run `make translations`): "
                    f"{' '.join(text.split())[:70]!r}"
                )


def check_catalogs(locale_dir: Path, languages: list[str], documents: list[str], report: Report) -> None:
    for language in languages:
        messages_dir = locale_dir / language / "LC_MESSAGES"
        total: Counter = Counter()
        for doc in documents:
            path = messages_dir / f"{doc}.po"
            if not path.is_file():
                report.add(f"{language}: no catalog for {doc} ({path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}); run `make translations`")
                continue
            label = f"{language}/{doc}.po"
            counts = check_catalog(path, label, report)
            report.counts[label] = counts
            total.update(counts)
        wanted = {f"{doc}.po" for doc in documents}
        for path in sorted(messages_dir.rglob("*.po")):
            if path.relative_to(messages_dir).as_posix() not in wanted:
                report.add(f"{language}: {path.relative_to(messages_dir)} belongs to no page of the book; delete it")
        report.counts[language] = total


# ---------------------------------------------------------------- builds
_SWITCH = re.compile(r'<a\b[^>]*\bid="llmcourse-language-switch"[^>]*>', re.S)
_HREF = re.compile(r'\bhref="([^"]*)"')
_HTML_LANG = re.compile(r"<html\b[^>]*\blang=\"([^\"]*)\"", re.S)
# Text a reader sees: drop scripts, styles, code and tags.
_INVISIBLE = re.compile(r"<(script|style|pre)\b.*?</\1>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")


def pages(html_dir: Path) -> set[str]:
    return {
        p.relative_to(html_dir).as_posix()
        for p in html_dir.rglob("*.html")
        if not p.relative_to(html_dir).parts[0].startswith("_")
    }


def check_switch(html_dir: Path, other_dir: Path, page: str, label: str, report: Report) -> None:
    text = (html_dir / page).read_text(encoding="utf-8", errors="replace")
    links = _SWITCH.findall(text)
    if not links:
        # the root redirect page written by sphinx-external-toc has no template
        if "http-equiv=\"Refresh\"" in text or "http-equiv=\"refresh\"" in text:
            return
        report.add(f"{label}: {page} has no language-switch link")
        return
    href = _HREF.search(links[0])
    if not href:
        report.add(f"{label}: {page}: the language-switch link has no href")
        return
    url = urlsplit(href.group(1))
    if url.scheme or url.netloc:
        # an absolute address (a deployed edition elsewhere): only its path can be checked
        if not url.path.endswith("/" + page):
            report.add(f"{label}: {page}: the language-switch link {href.group(1)!r} does not end with /{page}")
        return
    target = Path(os.path.normpath((html_dir / page).parent / unquote(url.path)))
    expected = other_dir / page
    if target.resolve() != expected.resolve():
        report.add(f"{label}: {page}: the language-switch link {href.group(1)!r} leads to {target}, not to {expected}")
    elif not expected.is_file():
        report.add(f"{label}: {page}: the language-switch link leads to a page that does not exist ({expected})")



def check_builds(html: Path, translated: dict[str, Path], report: Report) -> None:
    english = pages(html)
    if not english:
        report.add(f"no pages under {html}; build the English book first (make book)")
        return
    for language, html_tr in translated.items():
        other = pages(html_tr)
        if not other:
            report.add(f"no pages under {html_tr}; build it first (make book-{language.split('_')[0]})")
            continue
        for page in sorted(english - other):
            report.add(f"{language}: {page} has no twin in {html_tr}")
        for page in sorted(other - english):
            report.add(f"{language}: {page} is in {html_tr} but not in the English build {html}")
        for page in sorted(english & other):
            check_switch(html, html_tr, page, "en", report)
            check_switch(html_tr, html, page, language, report)
            text = (html_tr / page).read_text(encoding="utf-8", errors="replace")
            if "http-equiv=\"Refresh\"" in text:
                continue
            lang = _HTML_LANG.search(text)
            want = HTML_LANG.get(language, language.replace("_", "-"))
            if not lang or lang.group(1) != want:
                report.add(f"{language}: {page} declares <html lang={lang.group(1) if lang else None!r}>, not {want!r}")
            visible = _TAG.sub(" ", _INVISIBLE.sub(" ", text))
            if language.startswith("zh") and page.startswith(("book/", "chapters/")) and len(CJK.findall(visible)) < 20:
                report.add(f"{language}: {page} shows almost no Chinese text: is its catalog applied?")
        report.counts[f"{language} pages"] = Counter(pages=len(english & other))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the book's translations (catalogs, and the builds if given).")
    parser.add_argument("--locale", type=Path, default=ROOT / "locale", help="locale folder (default locale/)")
    parser.add_argument("--language", action="append", help="only this language (default: every folder under --locale)")
    parser.add_argument("--toc", type=Path, default=None, help="table of contents (default _toc.yml)")
    parser.add_argument("--partial", action="store_true", help="only the pages of the table of contents that exist")
    parser.add_argument("--pot", type=Path, help="messages just extracted from the English book (_build/gettext)")
    parser.add_argument("--html", type=Path, help="the English build, e.g. _build/html")
    parser.add_argument("--html-zh", type=Path, help="the Chinese build, e.g. _build/html-zh")
    parser.add_argument("--report-only", action="store_true", help="print the counts and problems, exit 0")
    parser.add_argument("--quiet", action="store_true", help="print problems and the totals only")
    args = parser.parse_args(argv)

    languages = args.language or sorted(
        p.name for p in args.locale.iterdir() if p.is_dir() and (p / "LC_MESSAGES").is_dir()
    )
    if not languages:
        print(f"FAIL: no language under {args.locale}")
        return 1
    toc = args.toc or ROOT / "_toc.yml"
    documents = toc_documents(toc, only_existing=args.partial)
    report = Report()
    check_catalogs(args.locale, languages, documents, report)
    if args.pot:
        check_against_templates(args.pot, args.locale, languages, documents, report)
    if args.html or args.html_zh:
        if not (args.html and args.html_zh):
            parser.error("--html and --html-zh go together")
        check_builds(args.html, {"zh_CN": args.html_zh}, report)

    if not args.quiet:
        for label, counts in report.counts.items():
            if "/" in label:
                print(
                    f"  {label}: {counts['translated']}/{counts['messages']} translated"
                    + "".join(f", {counts[k]} {k}" for k in ("untranslated", "fuzzy", "obsolete") if counts[k])
                )
    for language in languages:
        counts = report.counts.get(language, Counter())
        print(
            f"{language}: {len(documents)} pages, {counts['messages']} messages: {counts['translated']} translated, "
            f"{counts['untranslated']} untranslated, {counts['fuzzy']} fuzzy, {counts['obsolete']} obsolete"
        )
        if f"{language} pages" in report.counts:
            print(f"{language}: {report.counts[f'{language} pages']['pages']} built pages checked against the English build")
    for problem in report.problems:
        print(f"{'note' if args.report_only else 'FAIL'}: {problem}")
    if args.report_only:
        return 0
    print("translations:", "ok" if not report.problems else f"{len(report.problems)} problem(s)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
