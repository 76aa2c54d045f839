"""Generation with a KV cache against recomputing the whole sequence for every new token, in one process.

``python -m llmcourse.benchmarks generation [--new-tokens N] [--batch B] [--repeats R] [--quick]``

A decoder of nanoGPT's CPU size (4 layers, d_model 128, 4 heads) with a context
long enough for a 64-token prompt and ``N`` new tokens (default 512) generates
greedily, once with the cache (:func:`~llmcourse.generate.generate` with
``use_cache=True``: one position per step after the prompt) and once without
(every step runs the model over the whole sequence so far). Both must produce
the same tokens; the command prints tokens/s of each and their ratio, the
best of ``R`` alternating repeats (the machine's noise slows a run, never
speeds it). The matmul work of each, counted, explains the ratio: without a
cache step ``t`` costs about ``t`` tokens of work, so ``N`` new tokens cost
about ``N^2 / 2`` instead of ``N``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import ModelConfig
from ..generate import generate
from ..models import build_model

PROMPT = 64
GOAL_TOKENS, GOAL_SPEEDUP = 512, 5.0  # the cache should pay at least this much at this length


def model_for(new_tokens: int, vocab_size: int = 65) -> torch.nn.Module:
    """The benchmark's model: nanoGPT's CPU size, context ``PROMPT + new_tokens`` (random weights; speed only)."""
    config = ModelConfig(vocab_size=vocab_size, n_layers=4, d_model=128, n_heads=4, max_seq_len=PROMPT + new_tokens,
                         attn_impl="sdpa", position="learned")
    return build_model(config, seed=0).eval()


@dataclass
class GenerationResult:
    new_tokens: int
    batch: int
    cached_s: float
    recompute_s: float
    cached_flops: int
    recompute_flops: int
    same_tokens: bool

    @property
    def speedup(self) -> float:
        return self.recompute_s / self.cached_s

    def tokens_per_s(self, cached: bool) -> float:
        return self.new_tokens * self.batch / (self.cached_s if cached else self.recompute_s)


def _run(model, prompt, new_tokens, use_cache):
    with torch.no_grad():
        return generate(model, prompt, new_tokens, greedy=True, use_cache=use_cache)


def measure(new_tokens: int = 512, batch: int = 1, repeats: int = 3, model: torch.nn.Module | None = None) -> GenerationResult:
    """Time both ways (best of ``repeats``, alternating), count their matmul FLOPs, compare their tokens."""
    model = model if model is not None else model_for(new_tokens)
    prompt = torch.randint(0, model.config.vocab_size, (batch, PROMPT), generator=torch.Generator().manual_seed(0))
    outputs, flops = {}, {}
    for use_cache in (True, False):  # counted once, untimed (the counter slows the run)
        with FlopCounterMode(display=False) as counter:
            outputs[use_cache] = _run(model, prompt, new_tokens, use_cache)
        flops[use_cache] = counter.get_total_flops()
    best = {True: float("inf"), False: float("inf")}
    for r in range(repeats):
        for use_cache in ((True, False) if r % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            _run(model, prompt, new_tokens, use_cache)
            best[use_cache] = min(best[use_cache], time.perf_counter() - t0)
    return GenerationResult(new_tokens, batch, best[True], best[False], flops[True], flops[False],
                            bool(torch.equal(outputs[True], outputs[False])))


def report(r: GenerationResult) -> list[str]:
    return [
        f"with the KV cache: {r.tokens_per_s(True):,.0f} tokens/s, {r.cached_flops / 1e9:.3f} GFLOP of matmuls",
        f"recomputing every step: {r.tokens_per_s(False):,.0f} tokens/s, {r.recompute_flops / 1e9:.3f} GFLOP of matmuls",
        f"speed-up of the cache: x{r.speedup:.2f} (matmul work x{r.recompute_flops / r.cached_flops:.1f}; "
        f"goal at {GOAL_TOKENS} new tokens: at least x{GOAL_SPEEDUP:g}); same tokens: {'yes' if r.same_tokens else 'NO'}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.benchmarks generation", description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=512, help="tokens to generate (default 512)")
    parser.add_argument("--batch", type=int, default=1, help="prompts generated together (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each, best kept (default 3)")
    parser.add_argument("--quick", action="store_true", help="64 new tokens, one repeat (a smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = 64, 1
    for name in ("new_tokens", "batch", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1.")
    print(f"greedy generation of {args.new_tokens} tokens after a {PROMPT}-token prompt, batch {args.batch}; "
          f"4 layers, d_model 128, 4 heads (nanoGPT's CPU size); best of {args.repeats}")
    r = measure(args.new_tokens, args.batch, args.repeats)
    for line in report(r):
        print(line)
    return 0 if r.same_tokens else 1
