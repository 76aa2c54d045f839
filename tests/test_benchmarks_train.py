"""The training and generation benchmarks: their structure and their invariants on a few steps (never timings)."""

import re

import pytest
import torch

from llmcourse.benchmarks import __main__ as benchmarks
from llmcourse.benchmarks import generation, train
from llmcourse.data import LMBatches, load_corpus
from llmcourse.models import build_model
from llmcourse.train import Trainer


def test_the_baseline_is_plain_and_the_fast_run_uses_its_options():
    model, cfg = train.settings((), 65, 2000)
    assert (model.attn_impl, model.fused_kernels, cfg.adamw_impl, cfg.compile, cfg.autocast_dtype) == (
        "explicit", False, "plain", False, None)
    assert (model.n_layers, model.d_model, model.n_heads, model.max_seq_len, cfg.batch_size, cfg.steps) == (
        4, 128, 4, 64, 12, 2000)  # nanoGPT's CPU example
    model, cfg = train.settings(train.OPTIONS, 65, 2000)
    assert (model.attn_impl, model.fused_kernels, cfg.adamw_impl, cfg.compile, cfg.autocast_dtype) == (
        "sdpa", True, "fused", True, "bfloat16")
    with pytest.raises(ValueError, match="unknown option"):
        train.settings(("turbo",), 65, 10)


def test_side_by_side_runs_share_weights_and_batches_and_report_ratios():
    corpus = load_corpus(plays=2)
    c = train.compare(("sdpa", "fused_kernels", "fused_adamw"), steps=6, warmup=2, chunk=2, corpus=corpus, progress=False,
                      eval_batches=2)
    assert c.baseline.steps == c.fast.steps == [2, 2] and len(c.chunk_speedups) == 2
    b, f = c.baseline.trainer, c.fast.trainer
    assert b.history.step == f.history.step == list(range(1, 7))
    # the same initial weights and batches: the first losses agree to float rounding (the kernels differ)
    assert f.history.train_loss[0] == pytest.approx(b.history.train_loss[0], abs=1e-4)
    assert abs(c.val_difference) < 0.02
    # the untimed evaluation after the warm-up (it compiles the evaluation path) logs nothing and changes nothing
    assert b.history.eval_step == f.history.eval_step == [6]
    model_cfg, train_cfg = train.settings((), corpus.vocab_size, 6, eval_batches=2)
    alone = Trainer(build_model(model_cfg, seed=0), train_cfg, LMBatches(corpus.train_ids, train.BATCH, 64),
                    LMBatches(corpus.val_ids, train.BATCH, 64)).train()
    assert alone.train_loss == b.history.train_loss and alone.val_loss == b.history.val_loss
    lines = train.report(c, fpt=1e6, peak=1e12)
    assert re.fullmatch(r"speed-up: x\d+\.\d\d \(per chunk: min x[\d.]+, median x[\d.]+, max x[\d.]+\)", lines[4])
    assert lines[5].startswith("final validation loss: baseline ")
    assert all(len(line) <= 88 for line in lines)


def test_flops_per_token_is_6n_plus_attention():
    cfg, _ = train.settings((), 65, 10)
    from llmcourse import build_model

    model = build_model(cfg, seed=0)
    n = sum(p.numel() for name, p in model.named_parameters() if "positions" not in name)
    assert train.flops_per_token(model, cfg) == 6 * n + 12 * 4 * 128 * 64


def test_generation_with_and_without_the_cache_gives_the_same_tokens_and_less_work():
    r = generation.measure(new_tokens=16, repeats=1)
    assert r.same_tokens
    assert r.recompute_flops > 8 * r.cached_flops  # each recomputed step runs 64 + t positions, a cached one 1
    lines = generation.report(r)
    assert len(lines) == 3 and re.match(r"speed-up of the cache: x\d+\.\d\d \(matmul work x[\d.]+; goal at 512 ", lines[2])


def test_all_runs_every_benchmark_in_turn(monkeypatch, capsys):
    calls = []
    for name, path in benchmarks.BENCHMARKS.items():
        module = __import__(path, fromlist=["main"])
        monkeypatch.setattr(module, "main", lambda argv, name=name: calls.append((name, argv)) or 0)
    assert benchmarks.main(["all", "--quick"]) == 0
    assert calls == [(n, ["--quick"]) for n in ("train", "attention", "generation", "moe", "tokenizer")]
    assert "=== generation ===" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        benchmarks.main(["all", "--steps", "3"])
