"""Run a worker script on two gloo ranks and collect what each rank wrote (shared by the 2-process tests).

The script gets ``rank store out *args`` on its command line: it joins the group with
``dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)``
and writes its results as JSON to ``out``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_two_ranks(worker: str, tmp_path: Path, *args: str, timeout: float = 180) -> list[dict]:
    """Start ``worker`` as ranks 0 and 1 (one thread each), wait, and return each rank's JSON results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", worker, str(rank), str(tmp_path / "store"),
                          str(tmp_path / f"{rank}.json"), *args], env=env, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
    return [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
