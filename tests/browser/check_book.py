#!/usr/bin/env python3
"""Check the built book in a real browser, with nothing loaded from outside.

    .venv/bin/python tests/browser/check_book.py [--html _build/html] [--html-zh _build/html-zh]

Run after `make book` and `make book-zh` (`.ci/run` runs it after `make
test`, which builds both). Pass `--html-zh ''` to check the English edition
alone. Two checks:

1. Static: every HTML page and stylesheet of both builds is scanned for
   scripts, stylesheets, fonts, images or frames that point to another host.
2. In a browser: the folder holding both builds (_build/) is served from
   127.0.0.1 by a local static server, so the editions sit side by side as
   their language-switch links expect, and Debian's headless Chromium opens
   the landing page and the chapter-00 tour notebook of each edition, driven
   through the DevTools protocol. On each page it waits for MathJax to
   finish and asserts that the math was typeset (``mjx-container``
   elements, no TeX errors), that every ``<img>`` loaded (and, on the
   notebook page, that it shows figures), that no script threw, that no
   request failed, that no request went to any host but the local server,
   and that the page's language-switch link fetches its twin in the other
   edition (HTTP 200, the other ``<html lang>``). A full-page screenshot of
   each page is saved under ``_build/screenshots/`` (``*-zh.png`` for the
   Chinese pages).

   Beyond those two pages it opens every chapter page (``chapters/**.html``:
   each chapter's index, its notebooks and its exercises) of each edition
   and runs the same checks, without requiring math or figures there.

   On every page it opens, it asserts that the code reads without scrolling:
   with the window 1280 pixels wide and every collapsed block (``<details>``,
   such as the hidden solutions of the exercises) opened, no code block
   (``div.highlight pre``, ``.cell_input pre``) and no text output
   (``.cell_output pre``, output areas) may scroll horizontally
   (``scrollWidth > clientWidth + 1``). A failure names the page, the first
   line of the block and its longest line. The course keeps code lines and
   printed outputs within 88 characters, and ``book/static/llmcourse.css``
   widens the article so that 88 characters fit at that width.

   On a Chinese page it also asserts ``<html lang="zh-CN">`` and that the
   Chinese text renders as real glyphs, not as empty boxes ("tofu"), which
   is what a machine without a CJK font (Debian: ``fonts-noto-cjk``) shows.
   The test draws up to 12 distinct Han characters of the page's first
   Chinese paragraph on a canvas, in that paragraph's computed font (so the
   browser's font matching and fallback are exactly the page's), and draws
   three code points that no font has (U+0378, U+0379, U+FFFF), which come
   out as the .notdef glyph. A missing CJK font makes every Han character
   that same .notdef box (or nothing): so each Han character must leave ink,
   must differ from the .notdef rendering, and the characters must differ
   from one another. Pixels, not font names, decide; the fonts Chromium
   actually used for the paragraph (``CSS.getPlatformFontsForNode``) are
   printed alongside, for the reader of the log.

Exit status 0 when every check passes, 1 otherwise (each failure is printed),
2 when the browser could not be started.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import websocket  # websocket-client, pinned in requirements.txt

ROOT = Path(__file__).resolve().parents[2]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# Schemes that never touch the network.
INERT_SCHEMES = {"data", "blob", "about", "javascript", "chrome", "devtools"}

# What Chromium must not do on its own: talk to Google's services.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


# ---------------------------------------------------------------- static scan
class _ResourceParser(HTMLParser):
    """Collect the URLs a page would load by itself (not the links a reader clicks)."""

    LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut", "manifest", "preconnect", "dns-prefetch"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("script", "img", "iframe", "audio", "video", "source", "embed", "track") and a.get("src"):
            self.urls.append((tag, a["src"]))
        if tag in ("img", "source") and a.get("srcset"):
            for part in a["srcset"].split(","):
                if part.strip():
                    self.urls.append((tag, part.strip().split()[0]))
        if tag == "link" and set(a.get("rel", "").lower().split()) & self.LOADING_RELS:
            self.urls.append((f"link rel={a.get('rel')}", a.get("href", "")))
        if tag == "object" and a.get("data"):
            self.urls.append((tag, a["data"]))


def is_external(url: str) -> bool:
    url = url.strip()
    if url.startswith("//"):
        return True
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme.lower() in INERT_SCHEMES:
        return False
    if parts.scheme.lower() == "file":
        return False
    return (parts.hostname or "") not in LOCAL_HOSTS


_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")


def static_scan(html_dir: Path) -> list[str]:
    problems = []
    pages = sorted(html_dir.rglob("*.html"))
    if not pages:
        return [f"no HTML pages under {html_dir}"]
    for page in pages:
        parser = _ResourceParser()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        for tag, url in parser.urls:
            if is_external(url):
                problems.append(f"{page.relative_to(html_dir)}: <{tag}> loads {url}")
        # inline styles and <style> blocks
        for url in _CSS_URL.findall(page.read_text(encoding="utf-8", errors="replace")):
            if is_external(url):
                problems.append(f"{page.relative_to(html_dir)}: CSS loads {url}")
    for css in sorted(html_dir.rglob("*.css")):
        for url in _CSS_URL.findall(css.read_text(encoding="utf-8", errors="replace")):
            if is_external(url):
                problems.append(f"{css.relative_to(html_dir)}: loads {url}")
    return problems


# ---------------------------------------------------------------- local server
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def serve(html_dir: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# ---------------------------------------------------------------- DevTools client
class CDPError(RuntimeError):
    pass


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.last_id = 0
        self.events: list[dict] = []

    def _receive(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer from Chromium in time")
        self.ws.settimeout(remaining)
        message = json.loads(self.ws.recv())
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method: str, timeout: float = 60, **params: object) -> dict:
        self.last_id += 1
        call_id = self.last_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == call_id:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for message in self.events[seen:]:
                if message["method"] == event:
                    return message
            seen = len(self.events)
            self._receive(deadline)

    def evaluate(self, expression: str, timeout: float = 60) -> object:
        result = self.call(
            "Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise CDPError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()


def start_chromium(binary: str, profile: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """Start headless Chromium; return the process and its DevTools HTTP address."""
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Chromium exited with status {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if port_file.exists():
            lines = port_file.read_text().split()
            if lines:
                return process, f"http://127.0.0.1:{lines[0]}"
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"Chromium did not open its DevTools port within 60 s:\n{log.read_text(errors='replace')[-3000:]}")


def page_target(devtools_http: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{devtools_http}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
        if pages:
            return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.2)
    raise RuntimeError("Chromium shows no page target")


# ---------------------------------------------------------------- page checks
WAIT_FOR_MATHJAX = """
(async () => {
  const deadline = Date.now() + %d;
  const mathNodes = document.querySelectorAll('.math, .MathJax_Preview, script[type^="math/tex"]').length;
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() > deadline) return {mathNodes, loaded: false};
    await new Promise(r => setTimeout(r, 50));
  }
  await MathJax.startup.promise;
  if (MathJax.typesetPromise) await MathJax.typesetPromise();
  return {mathNodes, loaded: true, version: MathJax.version};
})()
"""

PAGE_FACTS = """
(() => {
  const imgs = [...document.querySelectorAll('img')].map(i => ({
    src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth,
    figure: !!i.closest('.cell_output, .output, figure, .figure'),
  }));
  return {
    title: document.title,
    mathNodes: document.querySelectorAll('.math').length,
    typeset: document.querySelectorAll('mjx-container').length,
    texErrors: document.querySelectorAll('mjx-merror, [data-mml-node="merror"]').length,
    imgs,
    height: Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)),
  };
})()
"""


# Code and text outputs that scroll sideways at this window width fail the check.
READING_WIDTH = 1280

# Pages whose stored outputs or code are known to be too wide and wait for
# re-execution (one path per line, relative to the build; '#' starts a comment).
# Their overflows are listed as known, not failed; every other page must fit.
KNOWN_WIDE_FILE = Path(__file__).with_name("known_wide.txt")
KNOWN_WIDE = {
    line.split("#", 1)[0].strip()
    for line in (KNOWN_WIDE_FILE.read_text(encoding="utf-8").splitlines() if KNOWN_WIDE_FILE.is_file() else [])
} - {""}
KNOWN_SEEN: set[str] = set()
KNOWN_REPORTS: list[str] = []

OVERFLOW_FACTS = r"""
(async () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const selectors = [
    'div.highlight pre', '.cell_input pre', '.cell_output pre',
    '.cell_output .output', 'div.output_area', 'div.output pre',
  ];
  const seen = new Set();
  const wide = [];
  let checked = 0;
  for (const el of document.querySelectorAll(selectors.join(', '))) {
    if (seen.has(el) || el.clientWidth === 0) continue;
    seen.add(el);
    checked++;
    if (el.scrollWidth > el.clientWidth + 1) {
      const text = (el.matches('pre') ? el : (el.querySelector('pre') || el)).textContent;
      const lines = text.split('\n');
      const first = lines.find(l => l.trim()) || '';
      const widest = lines.reduce((a, l) => ([...l].length > [...a].length ? l : a), '');
      const longest = [...widest].length;
      const kind = el.closest('.cell_output, .output, .output_area') ? 'output' : 'code';
      wide.push({kind, first: first.slice(0, 100), longest, widest: widest.slice(0, 60),
                 scrollWidth: el.scrollWidth, clientWidth: el.clientWidth});
    }
  }
  // a block nested in another one overflows both: report it once
  const unique = [];
  const keys = new Set();
  for (const w of wide) {
    const key = w.kind + '\n' + w.first;
    if (!keys.has(key)) { keys.add(key); unique.push(w); }
  }
  return {checked, wide: unique};
})()
"""


CJK_FACTS = r"""
(() => {
  const han = /[\u4e00-\u9fff]/;
  const root = document.querySelector('article') || document.body;
  const el = [...root.querySelectorAll('p')].find(e => han.test(e.textContent))
    || [...root.querySelectorAll('li, td, h1, h2, h3')].find(e => han.test(e.textContent));
  if (!el) return {found: false};
  el.setAttribute('data-llmcourse-cjk-probe', '');
  const chars = [...new Set([...el.textContent].filter(c => han.test(c)))].slice(0, 12);
  const style = getComputedStyle(el);
  const font = `${style.fontStyle} ${style.fontWeight} 32px ${style.fontFamily}`;
  const canvas = document.createElement('canvas');
  canvas.width = 48; canvas.height = 48;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const draw = (ch) => {
    ctx.clearRect(0, 0, 48, 48);
    ctx.font = font; ctx.fillStyle = '#000'; ctx.textBaseline = 'top';
    ctx.fillText(ch, 4, 4);
    const data = ctx.getImageData(0, 0, 48, 48).data;
    let ink = 0, hash = 0;
    for (let i = 3; i < data.length; i += 4) { if (data[i]) ink++; hash = (Math.imul(hash, 31) + data[i]) | 0; }
    return {ink, hash, width: Math.round(ctx.measureText(ch).width * 10) / 10};
  };
  return {
    found: true,
    fontFamily: style.fontFamily,
    sample: el.textContent.trim().slice(0, 24),
    glyphs: chars.map(c => ({char: c, ...draw(c)})),
    notdef: ['\u0378', '\u0379', '\uFFFF'].map(draw),
  };
})()
"""

LANGUAGE_SWITCH = r"""
(async () => {
  const a = document.getElementById('llmcourse-language-switch');
  if (!a) return {found: false};
  const answer = await fetch(a.href, {cache: 'no-store'});
  const text = answer.ok ? await answer.text() : '';
  const lang = (text.match(/<html[^>]*\slang="([^"]*)"/) || [])[1] || null;
  return {found: true, href: a.getAttribute('href'), path: new URL(a.href).pathname, status: answer.status, lang};
})()
"""


def check_cjk(tools: DevTools, label: str) -> tuple[list[str], str]:
    """Chinese text must render as glyphs, not as .notdef boxes; return problems and a log line."""
    facts = tools.evaluate(CJK_FACTS)
    if not facts.get("found"):
        return [f"{label}: no Chinese text found in the article"], ""
    problems = []
    glyphs, notdef = facts["glyphs"], facts["notdef"]
    notdef_shapes = {g["hash"] for g in notdef}
    blank = [g["char"] for g in glyphs if g["ink"] == 0]
    boxes = [g["char"] for g in glyphs if g["hash"] in notdef_shapes]
    distinct = len({g["hash"] for g in glyphs})
    if blank:
        problems.append(f"{label}: Chinese characters render as nothing: {''.join(blank)}")
    if boxes:
        problems.append(f"{label}: Chinese characters render as the .notdef box (no CJK font?): {''.join(boxes)}")
    if len(glyphs) > 1 and distinct < len(glyphs):
        problems.append(f"{label}: {len(glyphs)} different Chinese characters render as only {distinct} shape(s) (tofu)")
    # which fonts Chromium used for that paragraph, for the log
    fonts = "?"
    try:
        root = tools.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = tools.call("DOM.querySelector", nodeId=root, selector="[data-llmcourse-cjk-probe]")["nodeId"]
        used = tools.call("CSS.getPlatformFontsForNode", nodeId=node)["fonts"]
        fonts = ", ".join(f"{f['familyName']} ({f['glyphCount']} glyphs)" for f in used) or "none reported"
    except CDPError as exc:
        fonts = f"not available ({exc})"
    verdict = "none blank or .notdef" if not problems else "TOFU"
    line = (
        f"{len(glyphs)} Han characters of {facts['sample']!r} drawn as {distinct} distinct glyphs, "
        f"{verdict}; fonts used: {fonts}"
    )
    return problems, line


def check_language_switch(tools: DevTools, label: str, twin_path: str, twin_lang: str) -> tuple[list[str], str]:
    """The page's language-switch link must fetch its twin in the other edition."""
    switch = tools.evaluate(LANGUAGE_SWITCH, timeout=30)
    if not switch.get("found"):
        return [f"{label}: no language-switch link on the page"], ""
    problems = []
    if switch["path"] != twin_path:
        problems.append(f"{label}: the language-switch link {switch['href']!r} leads to {switch['path']}, not {twin_path}")
    if switch["status"] != 200:
        problems.append(f"{label}: the language-switch link {switch['href']!r} answers HTTP {switch['status']}")
    elif switch["lang"] != twin_lang:
        problems.append(f"{label}: the twin page {switch['path']} says lang={switch['lang']!r}, not {twin_lang!r}")
    return problems, f"language switch {switch['href']} -> {switch['path']} (HTTP {switch['status']}, lang {switch['lang']})"


def check_page(
    tools: DevTools,
    base: str,
    path: str,
    shots: Path,
    *,
    need_math: bool,
    need_figures: bool,
    prefix: str = "",
    lang: str | None = None,
    twin: tuple[str, str] | None = None,
) -> list[str]:
    """Open `prefix/path`; with `lang`, the page must declare it (and, for Chinese, render its
    glyphs); with `twin` = (path of the twin under the server root, its lang), the language
    switch must lead there."""
    problems: list[str] = []
    url = f"{base}/{prefix}{path}"
    tools.events.clear()
    tools.call("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired", timeout=60)

    mathjax = tools.evaluate(WAIT_FOR_MATHJAX % 20000, timeout=40)
    # let late requests (fonts, lazy images) show up
    time.sleep(0.5)
    facts = tools.evaluate(PAGE_FACTS)
    label = f"{prefix}{path}"
    extra_lines = []
    if lang is not None:
        declared = tools.evaluate("document.documentElement.getAttribute('lang')")
        if declared != lang:
            problems.append(f"{label}: <html lang={declared!r}>, expected {lang!r}")
        if lang.startswith("zh"):
            cjk_problems, line = check_cjk(tools, label)
            problems += cjk_problems
            if line:
                extra_lines.append(line)
    if twin is not None:
        switch_problems, line = check_language_switch(tools, label, *twin)
        problems += switch_problems
        if line:
            extra_lines.append(line)

    if facts["mathNodes"] and not mathjax.get("loaded"):
        problems.append(f"{label}: the page has {facts['mathNodes']} math elements but MathJax never started")
    if need_math and not facts["mathNodes"]:
        problems.append(f"{label}: no math on the page, but this page is expected to show some")
    if facts["mathNodes"] and not facts["typeset"]:
        problems.append(f"{label}: {facts['mathNodes']} math elements but no mjx-container: math was not typeset")
    if facts["texErrors"]:
        problems.append(f"{label}: MathJax reports {facts['texErrors']} TeX error(s)")
    for img in facts["imgs"]:
        if not img["complete"] or img["width"] == 0:
            problems.append(f"{label}: image did not load: {img['src']}")
    figures = [img for img in facts["imgs"] if img["figure"] and img["width"] > 0]
    if need_figures and not figures:
        problems.append(f"{label}: no figure among the outputs ({len(facts['imgs'])} <img> on the page)")

    requests = [e["params"] for e in tools.events if e["method"] == "Network.requestWillBeSent"]
    for request in requests:
        if is_external(request["request"]["url"]):
            problems.append(f"{label}: requested {request['request']['url']} (outside this machine)")
    by_id = {r["requestId"]: r["request"]["url"] for r in requests}
    for event in tools.events:
        if event["method"] == "Network.loadingFailed" and not event["params"].get("canceled"):
            failed = by_id.get(event["params"]["requestId"], "?")
            if not failed.endswith("/favicon.ico"):
                problems.append(f"{label}: request failed ({event['params'].get('errorText')}): {failed}")
        elif event["method"] == "Network.responseReceived":
            response = event["params"]["response"]
            if response.get("status", 200) >= 400 and not response["url"].endswith("/favicon.ico"):
                problems.append(f"{label}: HTTP {response['status']} for {response['url']}")
        elif event["method"] == "Runtime.exceptionThrown":
            details = event["params"]["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            problems.append(f"{label}: a script threw: {text}")

    tools.call(
        "Emulation.setDeviceMetricsOverride", width=READING_WIDTH, height=900, deviceScaleFactor=1, mobile=False
    )
    overflow = tools.evaluate(OVERFLOW_FACTS, timeout=30)
    known = path in KNOWN_WIDE
    if known:
        KNOWN_SEEN.add(path)
    for block in overflow["wide"]:
        (KNOWN_REPORTS if known else problems).append(
            f"{label}: {block['kind']} scrolls sideways at {READING_WIDTH} px "
            f"({block['scrollWidth']} > {block['clientWidth']} px, longest line {block['longest']} characters), "
            f"first line: {block['first']!r}; longest line starts {block['widest']!r}"
        )
    facts["height"] = tools.evaluate("Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight))")

    height = max(900, min(int(facts["height"]), 20000))
    tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
    shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, timeout=120)
    tools.call("Emulation.clearDeviceMetricsOverride")
    suffix = "" if lang in (None, "en") else f"-{lang.split('-')[0]}"
    target = shots / (Path(path).with_suffix("").as_posix().replace("/", "__") + suffix + ".png")
    target.write_bytes(base64.b64decode(shot["data"]))

    print(
        f"  {label}: {len(requests)} requests, all local; {facts['mathNodes']} math elements, "
        f"{facts['typeset']} typeset (MathJax {mathjax.get('version', '-')}); {len(facts['imgs'])} images, "
        f"{len(figures)} figure(s); {overflow['checked']} code/output blocks, {len(overflow['wide'])} too wide; "
        f"screenshot {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
    )
    for line in extra_lines:
        print(f"    {line}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the built book in headless Chromium, offline.")
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="built book (default _build/html)")
    parser.add_argument(
        "--html-zh",
        default=str(ROOT / "_build" / "html-zh"),
        help="built Chinese edition, next to --html (default _build/html-zh; '' to skip it)",
    )
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--landing", default="book/intro.html", help="landing page, must show math")
    parser.add_argument(
        "--notebook", default="chapters/00_getting_started/tour.html", help="notebook page, must show figures"
    )
    parser.add_argument(
        "--pages",
        default="chapters/**/*.html",
        help="glob of further pages to open in each edition, relative to the build (default every chapter page; "
        "'' for none)",
    )
    args = parser.parse_args(argv)

    html = args.html.resolve()
    html_zh = Path(args.html_zh).resolve() if args.html_zh else None
    for edition, make_target in ((html, "make book"), (html_zh, "make book-zh")):
        if edition is None:
            continue
        for page in (args.landing, args.notebook, "index.html"):
            if not (edition / page).is_file():
                print(f"FAIL: {edition / page} does not exist; build the book first ({make_target})")
                return 1
    if html_zh is not None and html_zh.parent != html.parent:
        print(f"FAIL: {html_zh} must sit next to {html} (their language-switch links are relative)")
        return 1
    # Serve the folder that holds both editions; each page is opened under its edition's prefix.
    served = html.parent if html_zh is not None else html
    prefix_en = f"{html.name}/" if html_zh is not None else ""
    prefix_zh = f"{html_zh.name}/" if html_zh is not None else ""
    binary = shutil.which(args.chromium) or args.chromium
    if not Path(binary).is_file():
        print(f"FAIL: no Chromium at {args.chromium}; install Debian's chromium (apt-get install chromium)")
        return 2

    problems = []
    for edition in (html, html_zh):
        if edition is None:
            continue
        print(f"static scan of {edition} ...")
        found = static_scan(edition)
        print(f"  {len(list(edition.rglob('*.html')))} pages: {'no external resources' if not found else f'{len(found)} external resource(s)'}")
        problems += found

    args.screenshots.mkdir(parents=True, exist_ok=True)
    server, base = serve(served)
    profile = Path(tempfile.mkdtemp(prefix="llmcourse-chromium-"))
    process = None
    tools = None
    try:
        print(f"Chromium on {base} ...")
        try:
            process, devtools_http = start_chromium(binary, profile, profile / "chromium.log")
            tools = DevTools(page_target(devtools_http))
        except (RuntimeError, OSError, websocket.WebSocketException) as exc:
            print(f"FAIL: could not start Chromium: {exc}")
            return 2
        tools.call("Page.enable")
        tools.call("Network.enable")
        tools.call("Runtime.enable")
        tools.call("Network.setCacheDisabled", cacheDisabled=True)
        tools.call("DOM.enable")
        tools.call("CSS.enable")
        pages = [(args.landing, True, False), (args.notebook, False, True)]
        if args.pages:
            named = {args.landing, args.notebook}
            for found in sorted(html.glob(args.pages)):
                page = found.relative_to(html).as_posix()
                if page not in named:
                    pages.append((page, False, False))
                    named.add(page)
        print(f"{len(pages)} pages to open in each edition")
        for page, math, figures in pages:
            if html_zh is None:
                problems += check_page(tools, base, page, args.screenshots, need_math=math, need_figures=figures)
                continue
            problems += check_page(
                tools, base, page, args.screenshots, need_math=math, need_figures=figures,
                prefix=prefix_en, lang="en", twin=(f"/{prefix_zh}{page}", "zh-CN"),
            )
            problems += check_page(
                tools, base, page, args.screenshots, need_math=math, need_figures=figures,
                prefix=prefix_zh, lang="zh-CN", twin=(f"/{prefix_en}{page}", "en"),
            )
    finally:
        if tools is not None:
            tools.close()
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)

    for report in KNOWN_REPORTS:
        print(f"KNOWN ({KNOWN_WIDE_FILE.name}): {report}")
    wide_pages = {r.split(":", 1)[0] for r in KNOWN_REPORTS}
    for page in sorted(KNOWN_WIDE & KNOWN_SEEN):
        if not any(page in label for label in wide_pages):
            print(f"NOTE: {page} fits now; remove it from {KNOWN_WIDE_FILE.name}")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("browser check:", "passed" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
