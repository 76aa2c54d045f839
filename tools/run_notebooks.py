#!/usr/bin/env python3
"""Execute the course's notebooks in place, deterministically, and lint them.

    python tools/run_notebooks.py                       # every notebook under chapters/
    python tools/run_notebooks.py chapters/01_architectures/02_causal_decoder.ipynb
    python tools/run_notebooks.py chapters/02_normalization/   # every notebook in a folder
    python tools/run_notebooks.py --check               # lint the stored notebooks only

Each notebook runs top to bottom in a fresh kernel of this Python (the one
running this script, so the project's .venv), with the notebook's folder as
working directory and ``PYTHONHASHSEED=0``. Its outputs are then made stable
for storage and for ``nbval``:

* stream outputs: consecutive outputs of the same stream are merged and
  carriage-return updates (progress bars) are collapsed to the final state of
  each line, exactly as nbval collapses them before it compares;
* volatile metadata (execution timings) is dropped.

A notebook fails when a cell raises, or when the stored result contains an
error, a traceback, a warning, a machine path (``/root/``, ``/work/``,
``/tmp/``, ``site-packages`` ...), an interactive widget, or a progress bar
that was left unfinished. A notebook that fails to execute is left untouched
on disk; one that executes but fails the lint is written, so it can be
inspected, and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / "chapters"

# --- stream outputs, the way nbval 0.11 reads them ---------------------------
# nbval (plugin.coalesce_streams) concatenates all outputs of one stream name
# in a cell, then deletes, on every line, everything up to the last carriage
# return that is followed by another character. (Its backspace step never
# runs: the loop condition is false on entry.) tests/test_run_notebooks.py
# checks that this copy agrees with nbval's own function.
_CARRIAGE_RETURN = re.compile(r"^.*\r(?=[^\n])", re.MULTILINE)


def collapse_stream_text(text: str) -> str:
    """Keep, on each line, only what follows the last carriage return (as nbval does)."""
    return _CARRIAGE_RETURN.sub("", text)


def nbval_view(outputs: list) -> dict[str, str]:
    """What nbval compares of a cell's streams: one collapsed text per stream name."""
    merged: dict[str, str] = {}
    for out in outputs:
        if out.get("output_type") == "stream":
            merged[out["name"]] = merged.get(out["name"], "") + out["text"]
    return {name: collapse_stream_text(text) for name, text in merged.items()}


def _merge_streams(outputs: list, consecutive_only: bool) -> list:
    merged: list = []
    first_of: dict[str, dict] = {}
    for out in outputs:
        if out.get("output_type") != "stream":
            merged.append(out)
            if consecutive_only:
                first_of.clear()
            continue
        name = out["name"]
        if name in first_of:
            first_of[name]["text"] += out["text"]
            continue
        out = nbformat.from_dict({"output_type": "stream", "name": name, "text": out["text"]})
        if consecutive_only:
            first_of.clear()
        first_of[name] = out
        merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = collapse_stream_text(out["text"])
    return merged


def normalize_outputs(outputs: list) -> list:
    """Merge and collapse stream outputs so that they read well and nbval agrees.

    Consecutive outputs of one stream are merged, keeping streams and figures in
    the order the reader saw them. If a line was split by another output (a bar
    on stderr interrupted by a figure, say), collapsing each part alone would
    disagree with nbval, which collapses the whole stream at once: then every
    output of that stream is merged into its first one, as nbval does.
    """
    target = nbval_view(outputs)
    merged = _merge_streams(outputs, consecutive_only=True)
    if nbval_view(merged) != target:
        merged = _merge_streams(outputs, consecutive_only=False)
    assert nbval_view(merged) == target
    return merged


# --- lint ---------------------------------------------------------------------
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"[^\"]+\", line \d+", re.MULTILINE)
_WARNING = re.compile(r"\b[A-Z]?\w*Warning\b")
_MACHINE_PATH = re.compile(
    r"(/root/|/home/[^/\s]+/|/Users/[^/\s]+/|/work/|/tmp/|/var/folders/|site-packages|dist-packages"
    r"|/usr/(local/)?lib/python|[A-Za-z]:\\Users\\)"
)
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_SYS_PATH_EDIT = re.compile(r"\bsys\.path\.(insert|append|extend)\b|\bsys\.path\s*[+]?=")


def _output_texts(out: dict) -> list[tuple[str, str]]:
    """(label, text) pairs of every textual part of an output; images are skipped."""
    kind = out.get("output_type")
    if kind == "stream":
        return [(out["name"], out["text"])]
    if kind == "error":
        return [("error", "\n".join(out.get("traceback", [])) + f"\n{out.get('ename')}: {out.get('evalue')}")]
    texts = []
    for mime, value in out.get("data", {}).items():
        if mime.startswith("text/") or mime in ("application/json", "image/svg+xml"):
            texts.append((mime, value if isinstance(value, str) else str(value)))
    return texts


def lint_notebook(nb, label: str) -> list[str]:
    """Problems a reader would see, or that make nbval or the book unreliable."""
    problems = []
    expected_count = 1
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"{label}, cell {index}"
        source = cell.source
        if _SYS_PATH_EDIT.search(source):
            problems.append(f"{where}: edits sys.path; import from the installed llmcourse package instead")
        if not source.strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"{where}: has no stored output (not executed); run make notebooks")
            continue
        if cell.execution_count != expected_count:
            problems.append(
                f"{where}: execution count {cell.execution_count}, expected {expected_count}: "
                "the notebook was not run top to bottom in one fresh kernel; run make notebooks"
            )
            expected_count = cell.execution_count
        expected_count += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"{where}: stores an error ({out.get('ename')}: {out.get('evalue')})")
                continue
            if _WIDGET_MIME in out.get("data", {}):
                problems.append(
                    f"{where}: stores an interactive widget, which would make the book load scripts "
                    "from the internet; use tqdm.std.tqdm (text) instead of tqdm.auto or ipywidgets"
                )
            for part, text in _output_texts(out):
                for pattern, what in (
                    (_TRACEBACK, "a traceback"),
                    (_WARNING, "a warning"),
                    (_MACHINE_PATH, "a machine path"),
                ):
                    match = pattern.search(text)
                    if match:
                        problems.append(f"{where}: {part} output contains {what}: {match.group(0)!r}")
                if out.get("output_type") == "stream" and re.search(r"\r(?!\n)|\x08", text):
                    problems.append(
                        f"{where}: {part} output keeps a carriage return or a backspace: a progress bar "
                        "was not closed (use it as a context manager or call .close())"
                    )
    return problems


def toc_files(toc: Path = ROOT / "_toc.yml") -> set[str]:
    return set(re.findall(r"file:\s*([^\s#]+)", toc.read_text())) if toc.exists() else set()


# --- execution ------------------------------------------------------------------
def _kernel_manager():
    """A kernel manager whose kernel runs this very Python, whatever kernelspecs say."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class ThisPythonKernelSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--IPKernelApp.log_level=ERROR"],
                display_name="Python 3 (ipykernel)",
                language="python",
                resource_dir="",
            )

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPythonKernelSpecs())


def execute_notebook(path: Path, timeout: int):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        km=_kernel_manager(),
        timeout=timeout,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        if cell.cell_type == "code":
            cell.outputs = normalize_outputs(cell.outputs)
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    return nb


def find_notebooks(args: list[str]) -> list[Path]:
    if not args:
        args = [str(DEFAULT_DIR)]
    found: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts)
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"error: {arg} is neither a notebook (.ipynb) nor a folder")
    return found


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks or folders (default: chapters/)")
    parser.add_argument("--check", action="store_true", help="only lint the stored notebooks")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    parser.add_argument("--budget", type=float, default=90.0, help="seconds a notebook should take (default 90)")
    args = parser.parse_args(argv)

    notebooks = find_notebooks(args.notebooks)
    if not notebooks:
        print("no notebooks found")
        return 0

    # The kernel inherits this environment.
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

    problems: list[str] = []
    if args.check:
        listed = toc_files()
        for path in notebooks:
            label = _label(path)
            problems += lint_notebook(nbformat.read(path, as_version=4), label)
            if listed and label.startswith("chapters/") and label[: -len(".ipynb")] not in listed:
                problems.append(f"{label}: not listed in _toc.yml, so the book does not show it")
        for problem in problems:
            print(f"FAIL {problem}")
        print(f"checked {len(notebooks)} notebook(s): {'ok' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0

    timings: list[tuple[float, str]] = []
    failed: list[str] = []
    for path in notebooks:
        label = _label(path)
        print(f"running {label} ...", flush=True)
        start = time.perf_counter()
        try:
            nb = execute_notebook(path, args.timeout)
        except Exception as exc:  # a cell raised or timed out: keep the stored notebook
            seconds = time.perf_counter() - start
            print(f"FAIL {label}: execution stopped after {seconds:.1f} s, notebook left unchanged\n{exc}", flush=True)
            failed.append(label)
            continue
        seconds = time.perf_counter() - start
        timings.append((seconds, label))
        nbformat.write(nb, path)
        found = lint_notebook(nb, label)
        problems += found
        over = f"  (over the {args.budget:.0f} s budget)" if seconds > args.budget else ""
        print(f"{'FAIL' if found else 'ok  '} {label}: {seconds:.1f} s{over}", flush=True)
        for problem in found:
            print(f"     {problem}", flush=True)

    print("\nwall time per notebook, slowest first:")
    for seconds, label in sorted(timings, reverse=True):
        print(f"  {seconds:7.1f} s  {label}")
    print(f"  {sum(s for s, _ in timings):7.1f} s  total")
    if failed or problems:
        print(f"\n{len(failed)} notebook(s) failed to execute, {len(problems)} problem(s) in stored outputs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
