"""Tests of tools/run_notebooks.py: stored outputs must read well and pass nbval."""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import coalesce_streams, get_sanitize_patterns

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "tools" / "run_notebooks.py")
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)


def stream(name: str, text: str):
    return nbformat.from_dict({"output_type": "stream", "name": name, "text": text})


def figure():
    return nbformat.from_dict(
        {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}, "metadata": {}}
    )


def nbval_streams(outputs) -> dict[str, str]:
    """The stream texts nbval 0.11 compares, from nbval's own function."""
    coalesced = coalesce_streams(copy.deepcopy(outputs))
    return {o.name: o.text for o in coalesced if o.output_type == "stream"}


BAR = "".join(f"\r{p:3d}%|{'#' * (p // 10):10}| {p}/100" for p in range(0, 101, 10)) + "\n"
SAMPLES = [
    "plain text, words and numbers 1.25\n",
    BAR,
    "epoch 1\n" + BAR + "done\n",
    "\r  0%|  | 0/3\r" + " " * 20 + "\rstep 2: eval\n\r100%|##| 3/3\n",  # tqdm.write between updates
    "a\r\nb\n",  # Windows line ending is kept
    "unfinished\r",
    "back\x08space",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_collapse_agrees_with_nbval(text):
    assert run_notebooks.collapse_stream_text(text) == nbval_streams([stream("stdout", text)])["stdout"]


def test_progress_bar_collapses_to_its_final_state():
    assert run_notebooks.collapse_stream_text("epoch 1\n" + BAR + "done\n") == "epoch 1\n100%|##########| 100/100\ndone\n"


def test_normalize_merges_consecutive_streams_and_keeps_order():
    raw = [stream("stdout", "a\n"), stream("stdout", BAR), figure(), stream("stdout", "after\n")]
    stored = run_notebooks.normalize_outputs(raw)
    assert [o.output_type for o in stored] == ["stream", "display_data", "stream"]
    assert stored[0].text == "a\n100%|##########| 100/100\n"
    assert nbval_streams(stored) == nbval_streams(raw)


def test_normalize_merges_a_stream_whose_line_was_split():
    # A bar on stderr interrupted by a figure before its final newline: only
    # merging the whole stream, as nbval does, gives nbval's view.
    raw = [stream("stderr", "\r 50%|#####     | 50/100"), figure(), stream("stderr", "\r100%|##########| 100/100\n")]
    stored = run_notebooks.normalize_outputs(raw)
    assert nbval_streams(stored) == nbval_streams(raw)
    assert [o.output_type for o in stored] == ["stream", "display_data"]


def test_stored_outputs_are_a_fixed_point():
    raw = [stream("stdout", "x\n"), stream("stderr", BAR), stream("stdout", BAR), figure()]
    once = run_notebooks.normalize_outputs(raw)
    assert run_notebooks.normalize_outputs(copy.deepcopy(once)) == once


def make_notebook(*sources_and_outputs, counts=None):
    nb = nbformat.v4.new_notebook()
    for i, (source, outputs) in enumerate(sources_and_outputs):
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = outputs
        cell.execution_count = (counts or list(range(1, len(sources_and_outputs) + 1)))[i]
        nb.cells.append(cell)
    return nb


@pytest.mark.parametrize(
    "outputs, expected",
    [
        ([stream("stderr", "/x.py:3: UserWarning: careful\n")], "a warning"),
        ([stream("stdout", "Traceback (most recent call last):\n")], "a traceback"),
        ([stream("stdout", "saved to /tmp/run/model.safetensors\n")], "a machine path"),
        ([stream("stdout", "/work/main/llmcourse/x.py\n")], "a machine path"),
        ([stream("stdout", "lib/python3.11/site-packages/torch\n")], "a machine path"),
        ([stream("stderr", "\r 10%|#")], "carriage return"),
        ([nbformat.from_dict({"output_type": "error", "ename": "ValueError", "evalue": "x", "traceback": []})], "stores an error"),
        (
            [nbformat.from_dict({"output_type": "display_data", "metadata": {}, "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "1"}, "text/plain": "w"}})],
            "widget",
        ),
    ],
)
def test_lint_finds_problems(outputs, expected):
    problems = run_notebooks.lint_notebook(make_notebook(("x = 1", outputs)), "nb")
    assert any(expected in p for p in problems), problems


def test_lint_accepts_a_clean_notebook():
    nb = make_notebook(("print(1)", [stream("stdout", "1\n")]), ("plt.plot()", [figure()]), ("", []), counts=[1, 2, None])
    assert run_notebooks.lint_notebook(nb, "nb") == []


def test_lint_finds_stale_and_unexecuted_cells():
    nb = make_notebook(("a = 1", []), ("b = 2", []), counts=[3, 1])
    problems = run_notebooks.lint_notebook(nb, "nb")
    assert any("not run top to bottom" in p for p in problems)
    nb = make_notebook(("a = 1", []), counts=[None])
    assert any("not executed" in p for p in run_notebooks.lint_notebook(nb, "nb"))


def test_lint_rejects_sys_path_edits():
    nb = make_notebook(("import sys\nsys.path.insert(0, '..')", []))
    assert any("sys.path" in p for p in run_notebooks.lint_notebook(nb, "nb"))


def test_sanitize_file_replaces_only_volatile_strings():
    patterns = get_sanitize_patterns((ROOT / "nbval_sanitize.cfg").read_text())
    assert patterns, "nbval_sanitize.cfg has no regex/replace pairs"

    def sanitize(text: str) -> str:
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    assert sanitize("<Model object at 0x7f3a2c1b9d90>") == sanitize("<Model object at 0x55d0c0ffee00>")
    assert sanitize("forward 12.3 ms, backward 1.2 s") == sanitize("forward 9.9 ms, backward 2.0 s")
    assert sanitize("100%|###| 50/50 [00:03<00:00, 15.2it/s]") == sanitize("100%|###| 50/50 [00:04<00:00, 12.0it/s]")
    for stable in ("step 200: train loss 1.8523, val loss 1.9112", "d_model 64, 4 heads, 1000 steps", "ln 65 = 4.1744"):
        assert sanitize(stable) == stable
