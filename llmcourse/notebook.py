"""One call at the top of every notebook: seeds, print precision and figure defaults.

``setup()`` makes a notebook's numbers the same on every run: it seeds PyTorch,
rounds printed tensors to 4 decimals (so stored outputs match across CPUs) and
fixes the figure size and resolution of matplotlib's inline backend.
"""

from __future__ import annotations

import random

import torch


def setup(seed: int = 0) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_printoptions(precision=4, sci_mode=False)
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
