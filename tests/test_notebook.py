"""llmcourse.notebook: the set-up every notebook calls first."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmcourse.notebook import CPU_KERNEL_ENV

ROOT = Path(__file__).resolve().parent.parent


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


X86_AVX2 = platform.machine().lower() in ("x86_64", "amd64") and "avx2" in _cpu_flags()


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CPU_KERNEL_ENV}  # as in a plain Jupyter kernel
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True, check=True)


@pytest.mark.skipif(not X86_AVX2, reason="the pin applies to x86-64 CPUs with AVX2")
def test_setup_pins_the_cpu_kernels_to_avx2_after_torch_is_imported():
    code = (
        "import torch\n"
        "from llmcourse.notebook import setup\n"
        "setup()\n"
        "import os\n"
        "print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'])\n"
    )
    assert _fresh_python(code).stdout.split() == ["AVX2", "AVX2"]


@pytest.mark.skipif(not X86_AVX2 or "avx512f" not in _cpu_flags(), reason="needs a CPU whose own choice is AVX-512")
def test_setup_warns_when_pytorch_chose_its_kernels_already():
    code = "import torch\n(torch.ones(64) + 1).sum()\nfrom llmcourse.notebook import setup\nsetup()\n"
    assert "before setup() could pin them to AVX2" in _fresh_python(code).stderr


def test_the_makefile_exports_the_same_pins():
    exported = dict(re.findall(r"^export (\w+) := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE))
    assert {k: exported.get(k) for k in CPU_KERNEL_ENV} == CPU_KERNEL_ENV
