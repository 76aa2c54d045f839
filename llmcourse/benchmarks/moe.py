"""Time and peak memory of a mixture-of-experts layer against the dense layer with the same active parameters.

``python -m llmcourse.benchmarks moe [--quick] [--tokens N] [--memory-tokens 1024 2048 4096] [--repeats R]``

One MoE feed-forward layer (:class:`~llmcourse.moe.MoEFeedForward`: ``E=8`` experts of width
``F``, top-2, capacity factor 1.25, ``D=256``, float32), forward and backward over ``N=4096``
tokens with its auxiliary losses (what a training step runs), measured three ways in one process
(every feed-forward block with PyTorch's fused activation, as ``ModelConfig.fused_kernels`` does):

- ``dense``: a :class:`~llmcourse.ffn.FeedForward` of width ``top_k * F``, the same parameters a
  token uses in the MoE layer (less the ``D x E`` router), so the same matmul work per token;
- ``sorted``: the MoE layer with the sorted dispatch (``moe_dispatch="sorted"``);
- ``reference``: the MoE layer with the reference dispatch (a loop over experts with masks).

Times are the best of the repeats and are printed as ratios to ``dense`` (and ``sorted`` to
``reference``) measured in the same run; the goal for the sorted dispatch is at most 1.5x the
dense time at the default 4,096 tokens (``--quick`` times 1,024 tokens once, where fixed costs
weigh more; it checks that the benchmark runs, not the goal). Peak tensor memory of one step
is measured at several token counts with
:class:`~llmcourse.benchmarks.attention.PeakTensorMemory`, and the growth exponent ``p``
(``memory ~ N^p``, least squares in log-log space) is fitted: every path should be linear in
tokens (``p ~ 1``). Below about 1k tokens the parameters' gradients (8 MiB for the MoE layer's
2.1 M parameters, the same at every ``N``) weigh on the peak and flatten the fit, which is why
the table starts at 1,024 tokens; their size is printed next to it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .. import auxiliary
from ..ffn import FeedForward, count_parameters
from ..moe import MoEFeedForward
from .attention import PeakTensorMemory, growth_exponent

PATHS = ("dense", "sorted", "reference")


@dataclass
class Setup:
    d_model: int = 256
    n_experts: int = 8
    top_k: int = 2
    expert_d_ff: int = 512
    capacity_factor: float = 1.25
    kind: str = "gelu"

    def layer(self, path: str, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        if path == "dense":
            return FeedForward(self.d_model, self.top_k * self.expert_d_ff, self.kind, bias=False, fused=True)
        layer = MoEFeedForward(
            self.d_model, self.expert_d_ff, self.n_experts, self.top_k, self.kind, bias=False, fused=True,
            capacity_factor=self.capacity_factor, dispatch=path,
        )
        with torch.no_grad():  # the course's init (std 0.02) for the router, so routing is not uniform
            layer.router.gate.weight.normal_(0.0, 0.02)
        return layer

    def describe(self) -> str:
        return (
            f"D={self.d_model}, E={self.n_experts} experts of width F={self.expert_d_ff} ({self.kind}), "
            f"top-{self.top_k}, capacity factor {self.capacity_factor}; dense width top_k*F={self.top_k * self.expert_d_ff}"
        )


def _inputs(n_tokens: int, d_model: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, d_model, generator=g).requires_grad_()
    grad = torch.randn(n_tokens, d_model, generator=g)
    return x, grad


def _step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> dict:
    """Forward and backward of one training step (auxiliary losses included); returns the statistics."""
    with auxiliary.collect() as aux:
        out = layer(x)
    loss = (out * grad).sum() + aux.total()
    loss.backward()
    x.grad = None
    for p in layer.parameters():
        p.grad = None
    return aux.stats


def time_step(layer: nn.Module, n_tokens: int, d_model: int, repeats: int) -> tuple[float, dict]:
    """Best wall time of ``repeats`` forward + backward steps (after one warm-up), and the statistics."""
    x, grad = _inputs(n_tokens, d_model)
    stats = _step(layer, x, grad)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _step(layer, x, grad)
        best = min(best, time.perf_counter() - t0)
    return best, stats


def peak_memory(layer: nn.Module, n_tokens: int, d_model: int) -> int:
    """Peak bytes of tensor storage created during one forward + backward step."""
    x, grad = _inputs(n_tokens, d_model)
    _step(layer, x, grad)  # warm-up outside the measurement
    with PeakTensorMemory() as mem:
        _step(layer, x, grad)
    return mem.peak


def parameter_bytes(layer: nn.Module) -> int:
    """Bytes of one gradient per parameter: the part of a step's peak memory that does not grow with tokens."""
    return sum(p.numel() * p.element_size() for p in layer.parameters())


def run(
    setup: Setup | None = None,
    n_tokens: int = 4096,
    memory_tokens: tuple[int, ...] = (1024, 2048, 4096),
    repeats: int = 5,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Measure every path; returns ``{"time": {path: s}, "memory": {path: {N: bytes}}, "params": ..., "stats": ...}``."""
    setup = setup or Setup()
    layers = {path: setup.layer(path) for path in PATHS}
    result: dict = {"setup": setup, "n_tokens": n_tokens, "time": {}, "memory": {}, "params": {}, "stats": {}}
    for path, layer in layers.items():
        total = count_parameters(layer)
        per_expert = count_parameters(layer.experts[0]) if isinstance(layer, MoEFeedForward) else 0
        active = total - (setup.n_experts - setup.top_k) * per_expert if per_expert else total
        result["params"][path] = (total, active)
    # interleave the paths, repeat by repeat, so a busy moment on a shared machine hits them alike
    best = {path: float("inf") for path in PATHS}
    for _ in range(max(1, repeats)):
        for path, layer in layers.items():
            t, stats = time_step(layer, n_tokens, setup.d_model, 1)
            best[path] = min(best[path], t)
            result["stats"][path] = stats
    result["time"] = best
    if log:
        for path in PATHS:
            log(f"  {path:<9} N={n_tokens:<5} {best[path] * 1e3:8.1f} ms")
    for path, layer in layers.items():
        result["memory"][path] = {n: peak_memory(layer, n, setup.d_model) for n in memory_tokens}
        result.setdefault("grad_bytes", {})[path] = parameter_bytes(layer)
        if log:
            log(f"  {path:<9} memory " + "  ".join(f"N={n}: {b / 2**20:.1f} MiB" for n, b in result["memory"][path].items()))
    return result


def format_report(result: dict) -> str:
    """Parameters, time ratios measured in the same run, memory against tokens with growth exponents."""
    setup, times, memory = result["setup"], result["time"], result["memory"]
    lines = [f"setup: {setup.describe()}", ""]
    lines.append("parameters (total, active per token)")
    for path in PATHS:
        total, active = result["params"][path]
        lines.append(f"{path:<10}{total:>12,}{active:>12,}")
    lines.append("")
    lines.append(f"time, forward + backward at N={result['n_tokens']} tokens (ms, best of the repeats)")
    for path in PATHS:
        lines.append(f"{path:<10}{times[path] * 1e3:>10.2f}")
    lines.append("")
    lines.append("time ratios (same run)")
    lines.append(f"{'sorted / dense':<22}{times['sorted'] / times['dense']:>8.3f}   (goal at N=4096: at most 1.5)")
    lines.append(f"{'reference / dense':<22}{times['reference'] / times['dense']:>8.3f}")
    lines.append(f"{'sorted / reference':<22}{times['sorted'] / times['reference']:>8.3f}")
    lines.append("")
    stats = result["stats"].get("sorted", {})
    if stats:
        load = ", ".join(f"{v:.3f}" for v in stats["moe.load"])
        lines.append(f"routing at N={result['n_tokens']}: dropped assignments {stats['moe.dropped']:.3f}, "
                     f"dropped tokens {stats['moe.dropped_tokens']:.3f}, loads [{load}]")
        lines.append("")
    tokens = sorted(next(iter(memory.values())))
    lines.append("peak tensor memory of one step (MiB), and its growth exponent p (memory ~ N^p; 1 = linear)")
    lines.append(f"{'path':<10}" + "".join(f"{'N=' + str(n):>10}" for n in tokens) + f"{'p':>8}{'grads':>8}")
    for path in PATHS:
        values = [memory[path][n] for n in tokens]
        p = growth_exponent(tokens, values) if len(tokens) >= 2 else float("nan")
        lines.append(f"{path:<10}" + "".join(f"{v / 2**20:>10.2f}" for v in values) + f"{p:>8.2f}"
                     + f"{result['grad_bytes'][path] / 2**20:>8.2f}")
    lines.append("grads: MiB of one gradient per parameter, the same at every N")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.benchmarks moe", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,024 timed tokens, one repeat (for CI)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens of the timed step (default 4096)")
    parser.add_argument("--memory-tokens", type=int, nargs="+", default=None, help="token counts of the memory table")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per path (the best counts)")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--expert-d-ff", type=int, default=512)
    parser.add_argument("--capacity-factor", type=float, default=1.25)
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= args.experts:
        parser.error(f"--top-k={args.top_k} must be between 1 and --experts={args.experts}")
    setup = Setup(args.d_model, args.experts, args.top_k, args.expert_d_ff, args.capacity_factor)
    n_tokens = args.tokens or (1024 if args.quick else 4096)
    memory_tokens = tuple(args.memory_tokens or (1024, 2048, 4096))
    repeats = 1 if args.quick else args.repeats
    print(f"moe benchmark: one feed-forward layer, forward + backward with auxiliary losses, float32, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    result = run(setup, n_tokens, memory_tokens, repeats, log=lambda s: print(s, flush=True))
    print()
    print(format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
