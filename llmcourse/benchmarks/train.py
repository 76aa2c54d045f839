"""Training throughput of the baseline decoder, as a fraction of this machine's float32 matmul peak.

``python -m llmcourse.benchmarks train [--steps N] [--compile] [--bf16] [--quick]``

The model is nanoGPT's CPU example (4 layers, d_model 128, 4 heads, context 64,
batch 12) on the Shakespeare corpus. Achieved FLOP/s counts ``6 N`` per token
for the parameter matmuls (forward 2N, backward 4N) plus the attention term
``12 * n_layers * d_model * T`` (scores and weighted sum, forward and backward),
as in the PaLM paper's appendix B and nanoGPT's ``estimate_mfu``. The peak is the
best float32 GEMM rate measured in the same run, so the ratio is meaningful on
any CPU. Optional switches each print their speed-up over the baseline and their
effect on the loss after the same steps.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..data import LMBatches, load_corpus
from ..models import build_model
from ..train import TrainConfig, Trainer


def matmul_peak(n: int = 1024, repeats: int = 10) -> float:
    """Best observed float32 GEMM rate in FLOP/s for ``(n x n) @ (n x n)`` (2 n^3 FLOPs each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b  # warm up the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def flops_per_token(model: torch.nn.Module, config: ModelConfig) -> float:
    """``6 N + 12 L D T`` with N the parameters that take part in matmuls (positions excluded)."""
    n = sum(p.numel() for name, p in model.named_parameters() if "positions" not in name)
    return 6 * n + 12 * config.n_layers * config.d_model * config.max_seq_len


@dataclass
class Measurement:
    tokens_per_s: float
    final_loss: float


def measure(config: ModelConfig, steps: int, warmup: int, *, compile: bool = False, bf16: bool = False, corpus=None) -> Measurement:
    """Train ``steps`` steps; time the ones after ``warmup`` (compilation and allocator warm-up excluded)."""
    model = build_model(config, seed=0)
    batch_size = 12
    train_cfg = TrainConfig(steps=warmup + steps, batch_size=batch_size, lr=1e-3, warmup_steps=20, progress=False)
    batches = LMBatches(corpus.train_ids, batch_size, config.max_seq_len)
    trainer = Trainer(model, train_cfg, batches)
    if compile:
        trainer.model = torch.compile(model)
    if bf16:
        step = trainer.train_step

        def autocast_step(batch):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return step(batch)

        trainer.train_step = autocast_step
    trainer.train(until=warmup)
    t0 = time.perf_counter()
    history = trainer.train(until=warmup + steps)
    elapsed = time.perf_counter() - t0
    tokens = steps * batch_size * config.max_seq_len
    return Measurement(tokens / elapsed, sum(history.train_loss[-20:]) / 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.benchmarks train", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first (default 30)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--bf16", action="store_true", help="also measure bfloat16 autocast")
    parser.add_argument("--quick", action="store_true", help="a few steps, for CI")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 20, 5

    corpus = load_corpus()
    config = ModelConfig(vocab_size=corpus.vocab_size, d_model=128, n_heads=4, n_layers=4, max_seq_len=64, attn_impl="sdpa")
    model = build_model(config, seed=0)
    fpt = flops_per_token(model, config)
    peak = matmul_peak()
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"float32 matmul peak (1024^3 GEMM, best of 10): {peak / 1e9:.1f} GFLOP/s")
    print(f"model: 4 layers, d_model 128, 4 heads, context 64, batch 12; {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"{fpt / 1e6:.2f} MFLOP per token")
    base = measure(config, args.steps, args.warmup, corpus=corpus)
    achieved = base.tokens_per_s * fpt
    print(f"baseline (eager float32): {base.tokens_per_s:,.0f} tokens/s, {achieved / 1e9:.1f} GFLOP/s, "
          f"{achieved / peak:.0%} of the measured matmul peak; loss after {args.warmup + args.steps} steps {base.final_loss:.3f}")
    for flag, kwargs in (("compile", {"compile": True}), ("bf16", {"bf16": True})):
        if not getattr(args, flag):
            continue
        m = measure(config, args.steps, args.warmup, corpus=corpus, **kwargs)
        label = "torch.compile" if flag == "compile" else "bfloat16 autocast"
        print(f"{label}: {m.tokens_per_s:,.0f} tokens/s, speed-up x{m.tokens_per_s / base.tokens_per_s:.2f}, "
              f"{m.tokens_per_s * fpt / peak:.0%} of peak; loss {m.final_loss:.4f} ({m.final_loss - base.final_loss:+.4f} vs baseline {base.final_loss:.4f})")
    return 0
