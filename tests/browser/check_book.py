#!/usr/bin/env python3
"""Check the built book in a real browser, with nothing loaded from outside.

    .venv/bin/python tests/browser/check_book.py [--html _build/html]

Run after `make book` (`.ci/run` runs it after `make test`). Two checks:

1. Static: every HTML page and stylesheet of the build is scanned for
   scripts, stylesheets, fonts, images or frames that point to another host.
2. In a browser: the book is served from 127.0.0.1 by a local static server
   and Debian's headless Chromium opens the landing page and the chapter-00
   tour notebook, driven through the DevTools protocol. On each page it
   waits for MathJax to finish and asserts that the math was typeset
   (``mjx-container`` elements, no TeX errors), that every ``<img>`` loaded
   (and, on the notebook page, that it shows figures), that no script threw,
   that no request failed, and that no request went to any host but the
   local server. A full-page screenshot of each page is saved under
   ``_build/screenshots/``.

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


def check_page(tools: DevTools, base: str, path: str, shots: Path, *, need_math: bool, need_figures: bool) -> list[str]:
    problems: list[str] = []
    url = f"{base}/{path}"
    tools.events.clear()
    tools.call("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired", timeout=60)

    mathjax = tools.evaluate(WAIT_FOR_MATHJAX % 20000, timeout=40)
    # let late requests (fonts, lazy images) show up
    time.sleep(0.5)
    facts = tools.evaluate(PAGE_FACTS)
    label = path

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

    height = max(900, min(int(facts["height"]), 20000))
    tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=height, deviceScaleFactor=1, mobile=False)
    shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, timeout=120)
    tools.call("Emulation.clearDeviceMetricsOverride")
    target = shots / (Path(path).with_suffix("").as_posix().replace("/", "__") + ".png")
    target.write_bytes(base64.b64decode(shot["data"]))

    print(
        f"  {label}: {len(requests)} requests, all local; {facts['mathNodes']} math elements, "
        f"{facts['typeset']} typeset (MathJax {mathjax.get('version', '-')}); {len(facts['imgs'])} images, "
        f"{len(figures)} figure(s); screenshot {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the built book in headless Chromium, offline.")
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="built book (default _build/html)")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--landing", default="book/intro.html", help="landing page, must show math")
    parser.add_argument(
        "--notebook", default="chapters/00_getting_started/tour.html", help="notebook page, must show figures"
    )
    args = parser.parse_args(argv)

    html = args.html.resolve()
    for page in (args.landing, args.notebook, "index.html"):
        if not (html / page).is_file():
            print(f"FAIL: {html / page} does not exist; build the book first (make book)")
            return 1
    binary = shutil.which(args.chromium) or args.chromium
    if not Path(binary).is_file():
        print(f"FAIL: no Chromium at {args.chromium}; install Debian's chromium (apt-get install chromium)")
        return 2

    print(f"static scan of {html} ...")
    problems = static_scan(html)
    print(f"  {len(list(html.rglob('*.html')))} pages: {'no external resources' if not problems else f'{len(problems)} external resource(s)'}")

    args.screenshots.mkdir(parents=True, exist_ok=True)
    server, base = serve(html)
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
        problems += check_page(tools, base, args.landing, args.screenshots, need_math=True, need_figures=False)
        problems += check_page(tools, base, args.notebook, args.screenshots, need_math=False, need_figures=True)
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

    for problem in problems:
        print(f"FAIL: {problem}")
    print("browser check:", "passed" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
