"""Training throughput: the command's fastest settings against a plain eager float32 loop, side by side.

``python -m llmcourse.benchmarks train [--steps N] [--fast OPTIONS] [--quick]``

The model is nanoGPT's CPU example (4 layers, d_model 128, 4 heads, context 64,
batch 12, 2000 steps) on the Shakespeare corpus. Two runs train it from the same
initial weights on the same batches:

- the **baseline**, a plain eager float32 loop: attention written out
  (``attn_impl="explicit"``), norms and activations from elementwise operations
  (``fused_kernels=False``), AdamW one parameter at a time (``adamw_impl="plain"``);
- the **fast** run, with the settings named by ``--fast`` (default
  :data:`FASTEST`): any of ``sdpa`` (PyTorch's fused attention kernel),
  ``fused_kernels`` (one-kernel LayerNorm and GeLU), ``fused_adamw``,
  ``compile`` (``torch.compile``), ``bf16`` (bfloat16 autocast).

The two runs advance in alternating chunks of steps, so a machine that slows
down or speeds up during the benchmark slows both alike; the first
``--warmup`` steps of each and one evaluation (compilation of the training and
the evaluation graphs, allocator warm-up) are not timed.
Reported: tokens/s of each and their ratio, the final validation loss of each
(the same fixed validation batches) and their difference, and the achieved
FLOP/s as a fraction of the best float32 matmul rate measured in the same run.
Achieved FLOP/s counts ``6 N`` per token for the parameter matmuls (forward
``2N``, backward ``4N``) plus ``12 * n_layers * d_model * T`` for attention
(PaLM's appendix B, nanoGPT's ``estimate_mfu``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

import torch

from ..config import ModelConfig
from ..data import LMBatches, load_corpus
from ..models import build_model
from ..progress import progress_bar
from ..train import TrainConfig, Trainer

OPTIONS = ("sdpa", "fused_kernels", "fused_adamw", "compile", "bf16")
FASTEST = ("sdpa", "fused_kernels", "fused_adamw", "compile")  # measured on a 2-core Xeon (see chapter 09)
NANOGPT_CPU = dict(n_layers=4, d_model=128, n_heads=4, max_seq_len=64)  # nanoGPT's README, "I only have a macbook"
BATCH = 12


def matmul_peak(n: int = 1024, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best observed GEMM rate in FLOP/s for ``(n x n) @ (n x n)`` (``2 n^3`` FLOPs each)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b  # warm up the BLAS threads
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def flops_per_token(model: torch.nn.Module, config: ModelConfig) -> float:
    """Training FLOPs per token: ``6 N + 12 L D T``, N the parameters that take part in matmuls.

    Learned position embeddings are a lookup, not a matmul, so they are left out;
    the tied token embedding counts once, as the output projection.
    """
    n = sum(p.numel() for name, p in model.named_parameters() if "positions" not in name)
    return 6 * n + 12 * config.n_layers * config.d_model * config.max_seq_len


def settings(options: tuple[str, ...], vocab_size: int, steps: int, eval_batches: int = 20) -> tuple[ModelConfig, TrainConfig]:
    """The model and train configs of a run with ``options`` (``()`` is the baseline)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; choose from {', '.join(OPTIONS)}.")
    model = ModelConfig(
        vocab_size=vocab_size, **NANOGPT_CPU,
        attn_impl="sdpa" if "sdpa" in options else "explicit",
        fused_kernels="fused_kernels" in options,
    )
    train = TrainConfig(
        steps=steps, batch_size=BATCH, lr=1e-3, warmup_steps=min(100, steps // 10), eval_every=steps,
        eval_batches=eval_batches, progress=False,
        adamw_impl="fused" if "fused_adamw" in options else "plain",
        compile="compile" in options,
        autocast_dtype="bfloat16" if "bf16" in options else None,
    )
    return model, train


@dataclass
class Run:
    name: str
    trainer: Trainer
    seconds: list[float] = field(default_factory=list)  # per timed chunk
    steps: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return sum(self.steps) * BATCH * self.trainer.model.config.max_seq_len / sum(self.seconds)

    @property
    def val_loss(self) -> float:
        return self.trainer.history.final_val_loss


@dataclass
class Comparison:
    baseline: Run
    fast: Run
    options: tuple[str, ...]

    @property
    def speedup(self) -> float:
        return self.fast.tokens_per_s / self.baseline.tokens_per_s

    @property
    def chunk_speedups(self) -> list[float]:
        return [b / f for b, f in zip(self.baseline.seconds, self.fast.seconds)]

    @property
    def val_difference(self) -> float:
        return self.fast.val_loss - self.baseline.val_loss


def compare(options: tuple[str, ...] = FASTEST, steps: int = 2000, warmup: int = 50, chunk: int = 100,
            corpus=None, progress: bool = True, eval_batches: int = 20) -> Comparison:
    """Train the baseline and the ``options`` run side by side (alternating chunks); see the module docstring."""
    corpus = corpus if corpus is not None else load_corpus()
    runs = []
    for name, opts in (("baseline", ()), ("fast", tuple(options))):
        model_cfg, train_cfg = settings(opts, corpus.vocab_size, steps, eval_batches)
        batches = LMBatches(corpus.train_ids, BATCH, model_cfg.max_seq_len)
        val = LMBatches(corpus.val_ids, BATCH, model_cfg.max_seq_len)
        model = build_model(model_cfg, seed=0)
        if name == "fast":  # the same initial weights, whatever the settings (the names are the same)
            model.load_state_dict(runs[0].trainer.model.state_dict())
        runs.append(Run(name, Trainer(model, train_cfg, batches, val)))
    warmup = min(warmup, steps - 1)
    for run in runs:
        run.trainer.train(until=warmup)
        run.trainer.evaluate()  # compiles the evaluation path too (untimed); draws nothing, logs nothing
    with progress_bar(2 * steps, "train benchmark", progress) as bar:
        bar.update(2 * warmup)
        while runs[0].trainer.step < steps:
            until = min(steps, runs[0].trainer.step + chunk)
            for run in runs if len(runs[0].seconds) % 2 == 0 else runs[::-1]:  # alternate who goes first
                done = until - run.trainer.step
                t0 = time.perf_counter()
                run.trainer.train(until=until)  # the last chunk also evaluates (eval_every = steps)
                run.seconds.append(time.perf_counter() - t0)
                run.steps.append(done)
                bar.update(done)
    return Comparison(runs[0], runs[1], tuple(options))


def report(c: Comparison, fpt: float, peak: float) -> list[str]:
    """Printable lines of a comparison (ratios and losses; the tokens/s are this machine's), each <= 88 characters."""
    b, f = c.baseline, c.fast
    spread = sorted(c.chunk_speedups)
    return [
        "baseline: eager float32, explicit attention, plain AdamW",
        f"  {b.tokens_per_s:,.0f} tokens/s, {b.tokens_per_s * fpt / peak:.1%} of the float32 matmul peak",
        f"fast: {' + '.join(c.options) or 'nothing'}",
        f"  {f.tokens_per_s:,.0f} tokens/s, {f.tokens_per_s * fpt / peak:.1%} of the float32 matmul peak",
        f"speed-up: x{c.speedup:.2f} (per chunk: min x{spread[0]:.2f}, median x{statistics.median(spread):.2f}, "
        f"max x{spread[-1]:.2f})",
        f"final validation loss: baseline {b.val_loss:.4f}, fast {f.val_loss:.4f}, "
        f"difference {c.val_difference:+.4f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.benchmarks train", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps of each run (default 2000, nanoGPT's)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first (default 50)")
    parser.add_argument("--chunk", type=int, default=100, help="steps per alternating chunk (default 100)")
    parser.add_argument("--fast", default=",".join(FASTEST),
                        help=f"comma-separated options of the fast run (default {','.join(FASTEST)}; any of {', '.join(OPTIONS)})")
    parser.add_argument("--quick", action="store_true", help="60 steps in chunks of 20 (a smoke test; loss not comparable)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.chunk = 60, 10, 20
    options = tuple(o for o in args.fast.split(",") if o)
    try:
        settings(options, 65, 10)
    except ValueError as e:
        parser.error(f"--fast: {e}")
    if args.steps < 2 or args.chunk < 1:
        parser.error("--steps must be >= 2 and --chunk >= 1.")

    corpus = load_corpus()
    model_cfg, _ = settings((), corpus.vocab_size, args.steps)
    model = build_model(model_cfg, seed=0)
    fpt = flops_per_token(model, model_cfg)
    peak = matmul_peak()
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"model: nanoGPT's CPU example (4 layers, d_model 128, 4 heads, context 64, batch {BATCH}), "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, {fpt / 1e6:.2f} MFLOP per token; "
          f"{args.steps} steps each")
    print(f"float32 matmul peak (1024^3 GEMM, best of 10): {peak / 1e9:.1f} GFLOP/s")
    c = compare(options, args.steps, args.warmup, args.chunk, corpus=corpus, progress=False)
    after = matmul_peak()  # a machine busy at the start would understate the peak: keep the best of both
    if after > peak:
        print(f"float32 matmul peak measured again after the runs: {after / 1e9:.1f} GFLOP/s (used below)")
        peak = after
    for line in report(c, fpt, peak):
        print(line)
    return 0
