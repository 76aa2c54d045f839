"""Tests of tools/check_translations.py: the check of the book's translations must fail
on an untranslated, fuzzy or obsolete message, on broken markup, on a catalog that is
missing or left over, on English text the catalogs do not know, and on builds whose
pages or language-switch links do not match."""

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_translations", ROOT / "tools" / "check_translations.py")
ct = importlib.util.module_from_spec(_spec)
sys.modules["check_translations"] = ct  # dataclasses look their module up there
_spec.loader.exec_module(ct)

HEADER = """\
msgid ""
msgstr ""
"Language: zh_CN\\n"
"MIME-Version: 1.0\\n"
"Content-Type: text/plain; charset=utf-8\\n"
"Content-Transfer-Encoding: 8bit\\n"

"""

GOOD = HEADER + textwrap.dedent(
    """\
    msgid "The causal decoder"
    msgstr "因果解码器"

    msgid "A {term}`causal decoder` reads `x` with $\\\\ln V$ {cite}`a2020,b2021`; see [the tour](tour)."
    msgstr "{term}`因果解码器 <causal decoder>` 用 $\\\\ln V$ 读取 `x` {cite}`a2020,b2021`;见[导览](tour)。"

    msgid "-"
    msgstr "-"
    """
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    report = ct.Report()
    ct.check_catalog(write(tmp_path / "page.po", text), "page.po", report)
    return report.problems


def test_a_complete_catalog_passes(tmp_path):
    report = ct.Report()
    counts = ct.check_catalog(write(tmp_path / "page.po", GOOD), "page.po", report)
    assert report.problems == []
    assert counts["messages"] == counts["translated"] == 3


def test_untranslated_message_is_reported(tmp_path):
    text = GOOD + '\nmsgid "A new paragraph."\nmsgstr ""\n'
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "untranslated" in problems[0] and "A new paragraph." in problems[0]


def test_fuzzy_message_is_reported(tmp_path):
    text = GOOD + '\n#, fuzzy\nmsgid "Changed paragraph."\nmsgstr "旧的译文。"\n'
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "fuzzy" in problems[0]


def test_obsolete_entry_is_reported(tmp_path):
    text = GOOD + '\n#~ msgid "Removed paragraph."\n#~ msgstr "删去的段落。"\n'
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "obsolete" in problems[0]


@pytest.mark.parametrize(
    "msgstr, lost",
    [
        ("{term}`因果解码器` 读取 `x`,$\\\\ln V$ {cite}`a2020,b2021`,[导览](tour)。", "{term} causal decoder"),
        ("{term}`因果解码器 <causal decoder>` 读取 `y`,$\\\\ln V$ {cite}`a2020,b2021`,[导览](tour)。", "code x"),
        ("{term}`因果解码器 <causal decoder>` 读取 `x`,$\\\\log V$ {cite}`a2020,b2021`,[导览](tour)。", "math \\ln V"),
        ("{term}`因果解码器 <causal decoder>` 读取 `x`,$\\\\ln V$ {cite}`a2020`,[导览](tour)。", "{cite} b2021"),
        ("{term}`因果解码器 <causal decoder>` 读取 `x`,$\\\\ln V$ {cite}`a2020,b2021`,[导览](intro)。", "link tour"),
    ],
)
def test_broken_markup_is_reported(tmp_path, msgstr, lost):
    msgid = "A {term}`causal decoder` reads `x` with $\\\\ln V$ {cite}`a2020,b2021`; see [the tour](tour)."
    text = HEADER + f'msgid "{msgid}"\nmsgstr "{msgstr}"\n'
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1 and "markup differs" in problems[0], problems
    assert lost in problems[0]


def test_markup_reads_roles_code_math_and_links():
    found = ct.markup("{term}`标记 <token>` `a` $x$ $$y$$ {cite:t}`k1, k2` [t](../x/index) {ref}`sec`")
    assert found == {
        "{term} token": 1,
        "code a": 1,
        "math x": 1,
        "math y": 1,
        "{cite:t} k1": 1,
        "{cite:t} k2": 1,
        "link ../x/index": 1,
        "{ref} sec": 1,
    }
    # the order of the markup may change in a translation, its content may not
    assert ct.markup("$a$ then `b`") == ct.markup("`b` 然后 $a$")


def test_missing_and_left_over_catalogs_are_reported(tmp_path):
    locale = tmp_path / "locale"
    write(locale / "zh_CN" / "LC_MESSAGES" / "book" / "intro.po", GOOD)
    write(locale / "zh_CN" / "LC_MESSAGES" / "book" / "removed_page.po", GOOD)
    report = ct.Report()
    ct.check_catalogs(locale, ["zh_CN"], ["book/intro", "book/glossary"], report)
    assert any("no catalog for book/glossary" in p for p in report.problems)
    assert any("removed_page.po belongs to no page" in p for p in report.problems)
    assert len(report.problems) == 2


def test_english_text_unknown_to_the_catalog_is_reported(tmp_path):
    locale = tmp_path / "locale"
    write(locale / "zh_CN" / "LC_MESSAGES" / "book" / "intro.po", GOOD)
    pot = GOOD.replace('msgid "The causal decoder"', 'msgid "The causal decoder, rewritten"')
    write(tmp_path / "gettext" / "book" / "intro.pot", pot)
    report = ct.Report()
    ct.check_against_templates(tmp_path / "gettext", locale, ["zh_CN"], ["book/intro"], report)
    assert len(report.problems) == 2
    assert any("English text changed" in p and "rewritten" in p for p in report.problems)
    assert any("no longer in the English page" in p for p in report.problems)


def test_the_repository_toc_lists_every_page():
    docs = ct.toc_documents(ROOT / "_toc.yml")
    assert docs[0] == "book/intro" and "book/glossary" in docs
    assert len(docs) == len(set(docs))


# ---------------------------------------------------------------- builds
PAGE = """<!DOCTYPE html>
<html lang="{lang}" data-content_root="../">
<body><a class="btn btn-sm llmcourse-language-switch" id="llmcourse-language-switch"
   href="{href}" hreflang="x">switch</a>
<p>{text}</p></body></html>
"""
CHINESE = "这是一个用中文写成的页面,里面有足够多的汉字来通过检查。"


def build_pair(tmp_path: Path, *, zh_href: str = "../../html/book/intro.html", zh_lang: str = "zh-CN") -> tuple[Path, Path]:
    html, html_zh = tmp_path / "html", tmp_path / "html-zh"
    write(html / "book" / "intro.html", PAGE.format(lang="en", href="../../html-zh/book/intro.html", text="English"))
    write(html_zh / "book" / "intro.html", PAGE.format(lang=zh_lang, href=zh_href, text=CHINESE))
    return html, html_zh


def test_matching_builds_pass(tmp_path):
    html, html_zh = build_pair(tmp_path)
    report = ct.Report()
    ct.check_builds(html, {"zh_CN": html_zh}, report)
    assert report.problems == []


def test_a_switch_link_to_another_page_is_reported(tmp_path):
    html, html_zh = build_pair(tmp_path, zh_href="../../html/book/glossary.html")
    report = ct.Report()
    ct.check_builds(html, {"zh_CN": html_zh}, report)
    assert len(report.problems) == 1 and "language-switch link" in report.problems[0]


def test_missing_twin_and_wrong_language_are_reported(tmp_path):
    html, html_zh = build_pair(tmp_path, zh_lang="zh_CN")
    write(html / "book" / "glossary.html", PAGE.format(lang="en", href="../../html-zh/book/glossary.html", text="x"))
    report = ct.Report()
    ct.check_builds(html, {"zh_CN": html_zh}, report)
    assert any("book/glossary.html has no twin" in p for p in report.problems)
    assert any("declares <html lang='zh_CN'>" in p for p in report.problems)


def test_an_untranslated_chinese_page_is_reported(tmp_path):
    html, html_zh = build_pair(tmp_path)
    write(html_zh / "book" / "intro.html", PAGE.format(lang="zh-CN", href="../../html/book/intro.html", text="English only"))
    report = ct.Report()
    ct.check_builds(html, {"zh_CN": html_zh}, report)
    assert len(report.problems) == 1 and "almost no Chinese text" in report.problems[0]


def test_main_fails_on_an_untranslated_fixture(tmp_path, capsys):
    locale = tmp_path / "locale"
    toc = write(tmp_path / "_toc.yml", "format: jb-book\nroot: book/intro\n")
    write(locale / "zh_CN" / "LC_MESSAGES" / "book" / "intro.po", GOOD + '\nmsgid "New."\nmsgstr ""\n')
    assert ct.main(["--locale", str(locale), "--toc", str(toc)]) == 1
    out = capsys.readouterr().out
    assert "1 untranslated" in out and "FAIL" in out
    write(locale / "zh_CN" / "LC_MESSAGES" / "book" / "intro.po", GOOD)
    assert ct.main(["--locale", str(locale), "--toc", str(toc)]) == 0
