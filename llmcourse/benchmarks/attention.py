"""Time, peak memory and matmul work of every attention path against sequence length, in one process.

``python -m llmcourse.benchmarks attention [--quick] [--lengths 256 512 ...] [--repeats N] [--max-gb G] [--no-rss]``

Causal self-attention of one layer (``B=1``, ``H=4``, ``Dh=32``, float32),
forward and backward, for the explicit path, PyTorch's fused
``scaled_dot_product_attention``, the FlashAttention-style tiled kernel, two
sparse patterns computed sparsely (Sparse Transformer strided with stride
about ``sqrt(T)``; BigBird with blocks of 64) and Performer's random features.
Every number is also printed as a ratio to the explicit path measured in the
same run, and the growth exponent ``p`` of each path's peak memory (``memory ~
T^p``, least squares in log-log space) is fitted over the longer lengths.

How memory is measured. ``tracemalloc`` does not see PyTorch's allocations and
the CPU allocator keeps no statistics, so :class:`PeakTensorMemory` counts
tensor storage directly: a ``TorchDispatchMode`` sees every tensor an operator
creates, adds its storage's bytes once (views share a storage), and a weak
reference subtracts them when the storage is freed; the peak of that running
sum is the peak memory. Inputs created before the measurement are not counted.
It is exact and deterministic for everything that passes through PyTorch's
dispatcher, but it misses scratch buffers a fused kernel allocates internally.
So the full run cross-checks it against the growth of the resident set
(the kernel's high-water mark ``VmHWM``, reset before the step) of a fresh
subprocess per path, which sees everything the process touches, allocator
overheads included (Linux only).

Matmul work is counted with ``torch.utils.flop_counter.FlopCounterMode``
(matrix products only; exponentials and masks are not counted).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from ..attention import explicit_attention, sdpa_attention
from ..efficient_attention import flash_attention, performer_attention, sparse_attention

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once among the tensors created inside the ``with`` block.

    Usage::

        with PeakTensorMemory() as mem:
            out = f(x); out.sum().backward()
        mem.peak  # bytes
    """

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[int, weakref.finalize] = {}
        self.live = 0
        self.peak = 0

    def _release(self, key: int, nbytes: int) -> None:
        self._seen.pop(key, None)
        self.live -= nbytes

    def _watch(self, t: torch.Tensor, count: bool) -> None:
        storage = t.untyped_storage()
        key = id(storage)  # a storage's Python object lives exactly as long as the storage
        if key in self._seen or storage.data_ptr() == 0:
            return
        nbytes = storage.nbytes() if count else 0  # storages that existed before the block cost nothing
        self._seen[key] = weakref.finalize(storage, self._release, key, nbytes)
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for a in tree_flatten((args, kwargs))[0]:
            if isinstance(a, torch.Tensor):
                self._watch(a, count=False)
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._watch(t, count=True)
        return out


def stride_for(T: int) -> int:
    """The Sparse Transformer's stride ``~ sqrt(T)``: the power of two at or above ``sqrt(T)`` (it divides ``T``)."""
    return 2 ** math.ceil(math.log2(T) / 2)


def paths(scale: float) -> dict[str, Callable[[int], Kernel]]:
    """Every benchmarked path: name -> (T -> kernel(q, k, v)), all causal."""
    return {
        "explicit": lambda T: lambda q, k, v: explicit_attention(q, k, v, causal=True, scale=scale),
        "sdpa": lambda T: lambda q, k, v: sdpa_attention(q, k, v, causal=True, scale=scale),
        "flash": lambda T: lambda q, k, v: flash_attention(q, k, v, causal=True, scale=scale, block_size=128),
        "strided": lambda T: lambda q, k, v: sparse_attention(q, k, v, pattern="strided", block=stride_for(T), scale=scale),
        "bigbird": lambda T: lambda q, k, v: sparse_attention(
            q, k, v, pattern="bigbird", block=64, global_blocks=1, random_blocks=1, scale=scale
        ),
        "performer": lambda T: lambda q, k, v: performer_attention(q, k, v, causal=True, scale=scale, n_features=64),
    }


@dataclass
class Shape:
    batch: int = 1
    heads: int = 4
    head_dim: int = 32

    def inputs(self, T: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(
            torch.randn(self.batch, self.heads, T, self.head_dim, generator=g).requires_grad_() for _ in range(3)
        )


def _step(kernel: Kernel, q, k, v) -> None:
    out = kernel(q, k, v)
    out.backward(torch.ones_like(out))
    for x in (q, k, v):
        x.grad = None


def measure(kernel: Kernel, T: int, shape: Shape, repeats: int = 3) -> dict:
    """Forward + backward of ``kernel`` at length ``T``: best time of ``repeats``, peak tensor memory, matmul FLOPs."""
    q, k, v = shape.inputs(T)
    _step(kernel, q, k, v)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _step(kernel, q, k, v)
        times.append(time.perf_counter() - t0)
    with PeakTensorMemory() as mem, FlopCounterMode(display=False) as flops:
        _step(kernel, q, k, v)
    counted = flops.get_total_flops()
    # the counter has no formula for the CPU's fused SDPA kernel: it reports 0, which would be a false claim
    return {"T": T, "time_s": min(times), "peak_bytes": mem.peak, "flops": counted if counted else None}


def explicit_bytes_estimate(T: int, shape: Shape) -> int:
    """About four ``T x T`` float32 matrices per head are alive at once in the explicit forward + backward."""
    return 4 * shape.batch * shape.heads * T * T * 4


def run(
    lengths: list[int],
    names: list[str] | None = None,
    shape: Shape | None = None,
    repeats: int = 3,
    max_bytes: float = 8e9,
    max_seconds: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Measure each path at each length; returns rows ``{path, T, time_s, peak_bytes, flops}``.

    A path stops growing once one call takes longer than ``max_seconds``; the
    explicit path also skips lengths whose ``T x T`` matrices would exceed ``max_bytes``.
    """
    shape = shape or Shape()
    scale = shape.head_dim**-0.5
    table = paths(scale)
    names = names or list(table)
    rows = []
    for name in names:
        for T in lengths:
            if name == "explicit" and explicit_bytes_estimate(T, shape) > max_bytes:
                if log:
                    log(f"  {name:<9} T={T:<5} skipped: its T x T matrices would need about {explicit_bytes_estimate(T, shape) / 1e9:.1f} GB")
                continue
            row = {"path": name, **measure(table[name](T), T, shape, repeats if T <= 2048 else 1)}
            rows.append(row)
            if log:
                log(f"  {name:<9} T={T:<5} {row['time_s'] * 1e3:9.1f} ms  {row['peak_bytes'] / 2**20:9.1f} MiB")
            if row["time_s"] > max_seconds:
                break
    return rows


def growth_exponent(lengths: list[int], values: list[float]) -> float:
    """Slope ``p`` of ``log(value) = p log(T) + c`` by least squares."""
    x = torch.tensor([math.log(t) for t in lengths], dtype=torch.float64)
    y = torch.tensor([math.log(max(v, 1e-30)) for v in values], dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


def exponents(rows: list[dict], key: str = "peak_bytes", fit_from: int | None = None) -> dict[str, float]:
    """Growth exponent of ``key`` for each path over lengths ``>= fit_from`` (default: the upper half of lengths)."""
    lengths = sorted({r["T"] for r in rows})
    if fit_from is None:
        fit_from = lengths[len(lengths) // 2 - 1] if len(lengths) > 2 else lengths[0]
    out = {}
    for name in dict.fromkeys(r["path"] for r in rows):
        pts = [(r["T"], r[key]) for r in rows if r["path"] == name and r["T"] >= fit_from]
        if len(pts) >= 2:
            out[name] = growth_exponent([t for t, _ in pts], [v for _, v in pts])
    return out


def format_tables(rows: list[dict]) -> str:
    """Raw numbers, then ratios to the explicit path measured in the same run, then memory growth exponents."""
    names = list(dict.fromkeys(r["path"] for r in rows))
    lengths = sorted({r["T"] for r in rows})
    at = {(r["path"], r["T"]): r for r in rows}
    width = max(9, max(len(n) for n in names))

    def table(title: str, fmt: Callable[[str, int], str]) -> list[str]:
        lines = [title, f"{'path':<{width}}" + "".join(f"{'T=' + str(t):>10}" for t in lengths)]
        for n in names:
            lines.append(f"{n:<{width}}" + "".join(f"{fmt(n, t):>10}" for t in lengths))
        return lines + [""]

    def value(key: str, unit: float, digits: int) -> Callable[[str, int], str]:
        return lambda n, t: f"{at[n, t][key] / unit:.{digits}f}" if at.get((n, t), {}).get(key) is not None else "-"

    def ratio(key: str) -> Callable[[str, int], str]:
        def f(n: str, t: int) -> str:
            if at.get((n, t), {}).get(key) is None or at.get(("explicit", t), {}).get(key) is None:
                return "-"
            return f"{at[n, t][key] / at['explicit', t][key]:.3f}"
        return f

    lines = []
    lines += table("time, forward + backward (ms, best of the repeats)", value("time_s", 1e-3, 1))
    lines += table("peak tensor memory (MiB)", value("peak_bytes", 2**20, 2))
    lines += table("matmul work (GFLOP, forward + backward; '-': a fused kernel the counter cannot see)", value("flops", 1e9, 3))
    lines += table("time / explicit time (same run)", ratio("time_s"))
    lines += table("peak memory / explicit peak memory (same run)", ratio("peak_bytes"))
    lines += table("matmul work / explicit matmul work", ratio("flops"))
    fit_lengths = sorted({r["T"] for r in rows})
    fit_from = fit_lengths[len(fit_lengths) // 2 - 1] if len(fit_lengths) > 2 else fit_lengths[0]
    mem_p, time_p = exponents(rows, "peak_bytes", fit_from), exponents(rows, "time_s", fit_from)
    lines.append(f"growth exponents p (quantity ~ T^p), fitted over T >= {fit_from}")
    lines.append(f"{'path':<{width}}{'memory':>10}{'time':>10}")
    for n in names:
        if n in mem_p:
            lines.append(f"{n:<{width}}{mem_p[n]:>10.2f}{time_p[n]:>10.2f}")
    return "\n".join(lines)


# --- resident-set cross-check -----------------------------------------------------
def _status_bytes(field: str) -> int | None:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def _rss_child(name: str, T: int, shape: Shape) -> int:
    """In a fresh process: growth of the peak resident set (bytes) during one forward + backward.

    The peak is the kernel's per-process high-water mark ``VmHWM``, reset just
    before the measured step by writing 5 to ``/proc/self/clear_refs``.
    ``getrusage``'s ``ru_maxrss`` cannot be used: Linux carries it across
    ``fork`` + ``exec``, so a child of a large parent starts with the
    parent's peak, and a step that stays below it shows no growth at all.
    """
    kernel = paths(shape.head_dim**-0.5)[name](T)
    _step(paths(shape.head_dim**-0.5)[name](256), *shape.inputs(256))  # load code paths and thread pools
    q, k, v = shape.inputs(T)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
    except OSError as e:
        raise RuntimeError(f"the resident-set cross-check needs Linux's /proc/self/clear_refs ({e}); run with --no-rss") from e
    before = _status_bytes("VmRSS")
    _step(kernel, q, k, v)
    after = _status_bytes("VmHWM")
    if before is None or after is None:
        raise RuntimeError("the resident-set cross-check needs Linux's /proc/self/status; run with --no-rss")
    return after - before


def rss_check(names: list[str], T: int, shape: Shape) -> dict[str, int]:
    """Resident-set growth of each path at length ``T``, one fresh subprocess per path."""
    out = {}
    for name in names:
        cmd = [sys.executable, "-m", "llmcourse.benchmarks.attention", "--rss-child", name, str(T),
               "--heads", str(shape.heads), "--head-dim", str(shape.head_dim), "--batch", str(shape.batch)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = int(res.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.benchmarks attention", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="lengths 256-1024, one repeat, no RSS check (a few seconds, for CI)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (default 256 ... 8192)")
    parser.add_argument("--paths", nargs="+", default=None, help="subset of: " + ", ".join(paths(1.0)))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per point (the best counts); one above T=2048")
    parser.add_argument("--max-gb", type=float, default=8.0, help="skip explicit lengths whose T x T matrices exceed this")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop a path after a call slower than this")
    parser.add_argument("--no-rss", action="store_true", help="skip the resident-set cross-check")
    parser.add_argument("--rss-length", type=int, default=None, help="length of the RSS cross-check (default: 4096, or the largest below)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--rss-child", nargs=2, metavar=("PATH", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = Shape(args.batch, args.heads, args.head_dim)
    if args.rss_child:
        print(_rss_child(args.rss_child[0], int(args.rss_child[1]), shape))
        return 0
    lengths = args.lengths or ([256, 512, 1024] if args.quick else [256, 512, 1024, 2048, 4096, 8192])
    repeats = 1 if args.quick else args.repeats
    names = args.paths or list(paths(1.0))
    unknown = sorted(set(names) - set(paths(1.0)))
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(paths(1.0))}")
    print(
        f"attention benchmark: causal self-attention, forward + backward, B={shape.batch} H={shape.heads} "
        f"Dh={shape.head_dim} float32, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("paths: explicit (scores, mask, softmax), sdpa (F.scaled_dot_product_attention), flash (tiles of 128 keys), "
          "strided (Sparse Transformer, stride ~ sqrt T), bigbird (blocks of 64, 1 global, 1 random), performer (64 features)")
    rows = run(lengths, names, shape, repeats, args.max_gb * 1e9, args.max_seconds, log=lambda s: print(s, flush=True))
    print()
    print(format_tables(rows))
    if not args.quick and not args.no_rss:
        measured = sorted({r["T"] for r in rows if r["path"] == "explicit"})
        T = args.rss_length or max([t for t in measured if t <= 4096] or [min(lengths)])
        print()
        print(f"cross-check at T={T}: peak tensor memory (dispatcher) vs growth of the resident set (fresh process each)")
        rss = rss_check([n for n in names if any(r["path"] == n and r["T"] == T for r in rows)], T, shape)
        at = {(r["path"], r["T"]): r for r in rows}
        for n, b in rss.items():
            print(f"  {n:<9} tensors {at[n, T]['peak_bytes'] / 2**20:9.1f} MiB   resident set +{b / 2**20:9.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
