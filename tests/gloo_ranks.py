"""Run a worker script on two gloo ranks and collect what each rank wrote (shared by the 2-process tests).

The worker is the body of a script: it runs after ``json``, ``sys``, ``torch`` and
``torch.distributed as dist`` are imported and the process has joined a 2-rank gloo
group as ``rank``; it fills the dict ``results`` (its extra arguments are ``sys.argv[4:]``),
which is written as JSON for the test to read, and the group is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_HEADER = """
import json, sys
import torch
import torch.distributed as dist

rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
results = {}
"""
_FOOTER = """
json.dump(results, open(out, "w"))
dist.destroy_process_group()
"""


def run_two_ranks(worker: str, tmp_path: Path, *args: str, timeout: float = 180) -> list[dict]:
    """Start ``worker`` as ranks 0 and 1 (one thread each), wait, and return each rank's JSON results."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _HEADER + worker + _FOOTER, str(rank), str(tmp_path / "store"),
                          str(tmp_path / f"{rank}.json"), *args], env=env, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]
    return [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
