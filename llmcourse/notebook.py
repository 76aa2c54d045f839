"""One call at the top of every notebook: seeds, print precision and figure defaults.

``setup()`` makes a notebook's numbers the same on every run and every machine:
it pins PyTorch's CPU kernels to one instruction set (:func:`pin_cpu_kernels`),
seeds PyTorch, rounds printed tensors to 4 decimals and fixes the figure size
and resolution of matplotlib's inline backend.
"""

from __future__ import annotations

import os
import platform
import random
import warnings

import torch

# The instruction set every stored notebook output was computed with. PyTorch's
# own kernels (ATen), MKL's matrix products and oneDNN each pick the widest
# vector instructions the CPU has; AVX-512 and AVX2 add numbers in different
# orders, and a few hundred training steps turn that last-bit difference into a
# different third decimal of the loss. Pinning all three to AVX2, which every
# x86-64 CPU of the last decade has, gives the same numbers on all of them.
CPU_KERNEL_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: one code path on Intel and AMD alike
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_DYNAMIC": "FALSE",  # MKL may otherwise use fewer threads on a busy machine, and split its sums differently
}


def pin_cpu_kernels() -> bool:
    """Make PyTorch, MKL and oneDNN use AVX2 kernels on an x86-64 CPU, so results match the stored outputs.

    The libraries read these settings when they first run a kernel, so this must
    happen before the first tensor operation of the process (``import torch``
    alone runs none; ``make`` exports the same settings before Python starts).
    A value the user has already set is kept. Returns True when PyTorch's kernels
    run with AVX2, False on other CPUs (ARM, or x86 without AVX2), where stored
    outputs may differ in the last printed digits; warns when it comes too late.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    for name, value in CPU_KERNEL_ENV.items():
        os.environ.setdefault(name, value)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX2":
        return True
    if capability.startswith(("AVX512", "AMX")):  # chosen already, before the pin could apply
        warnings.warn(
            f"PyTorch already chose its {capability} kernels before setup() could pin them to AVX2, so this "
            "notebook's numbers may differ slightly from the stored ones. Call setup() in the first cell, "
            "before any tensor is created, or restart the kernel.",
            stacklevel=3,
        )
    return False


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
    pin_cpu_kernels()
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
