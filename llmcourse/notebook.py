"""One call at the top of every notebook: seeds, print precision and figure defaults.

``setup()`` makes a notebook's numbers the same on every run: it seeds PyTorch,
rounds printed tensors to 4 decimals (so stored outputs match across CPUs) and
fixes the figure size and resolution of matplotlib's inline backend.
"""

from __future__ import annotations

import random

import torch


def _text_progress_for_libraries() -> None:
    """Let libraries that use ``tqdm.auto`` (``transformers`` does) fall back to tqdm's text bar quietly.

    In a Jupyter kernel ``tqdm.auto`` looks for ipywidgets. The course installs none
    (a widget would load scripts from a CDN in the book), so tqdm falls back to its
    text bar, which is what we want, but warns first that the widget is missing.
    Importing it once here, with that one expected warning filtered, keeps the
    notebooks' stored outputs free of it; every other warning still shows.
    """
    import warnings

    try:
        from tqdm import TqdmWarning
    except ImportError:  # tqdm is optional outside notebooks
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
        import tqdm.autonotebook  # noqa: F401


def setup(seed: int = 0) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_printoptions(precision=4, sci_mode=False)
    _text_progress_for_libraries()
    try:
        import matplotlib

        matplotlib.rcParams.update({
            "figure.figsize": (7, 4),
            "figure.dpi": 80,
            "savefig.dpi": 80,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
        })
    except ImportError:  # matplotlib is optional outside notebooks
        pass
