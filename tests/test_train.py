import math

import pytest
import torch
from torch import nn

from llmcourse import LMBatches, TrainConfig, Trainer, auxiliary, build_model
from llmcourse.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from llmcourse.objectives import lm_loss
from llmcourse.train import History, clip_grad_norm, grad_norm, lr_at, param_groups


def test_initial_loss_is_near_log_vocab(tiny_config, token_ids):
    model = build_model(tiny_config, seed=0)
    batch = LMBatches(token_ids, 16, 32)(torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = float(lm_loss(model, batch))
    assert abs(loss - math.log(tiny_config.vocab_size)) < 0.1


def test_one_batch_can_be_overfit(tiny_config, token_ids):
    model = build_model(tiny_config, seed=0)
    batch = LMBatches(token_ids, 4, 32)(torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=150, batch_size=4, lr=3e-3, warmup_steps=10, weight_decay=0.0, progress=False)
    history = Trainer(model, cfg, lambda g: batch).train()
    assert history.train_loss[-1] < 0.1 * history.train_loss[0]


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_weight_decay_only_on_matrices(tiny_config):
    model = build_model(tiny_config, seed=0)
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _run(config, ids, steps, seed=0):
    model = build_model(config, seed=seed)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=2e-3, warmup_steps=min(3, steps), eval_every=5, eval_batches=2, seed=seed, progress=False)
    trainer = Trainer(model, cfg, LMBatches(ids, 4, 32), LMBatches(ids, 4, 32))
    return model, trainer


def test_training_is_deterministic_under_a_seed(tiny_config, token_ids):
    config = tiny_config.replace(dropout=0.1)
    m1, t1 = _run(config, token_ids, 12)
    t1.train()
    m2, t2 = _run(config, token_ids, 12)
    t2.train()
    assert t1.history.train_loss == t2.history.train_loss
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_resumed_run_ends_with_exactly_the_same_weights(tiny_config, token_ids, tmp_path):
    config = tiny_config.replace(dropout=0.1)  # dropout makes the global RNG state matter too
    full_model, full = _run(config, token_ids, 12)
    full.train()

    half_model, half = _run(config, token_ids, 12)
    half.train(until=6)
    half.save(tmp_path / "ckpt.safetensors")
    del half, half_model

    resumed_model, resumed = _run(config, token_ids, 12, seed=0)
    torch.manual_seed(999)  # disturb every RNG: the checkpoint must restore them
    resumed.load(tmp_path / "ckpt.safetensors")
    assert resumed.step == 6
    resumed.train()
    assert resumed.history.train_loss == full.history.train_loss
    assert resumed.history.val_loss == full.history.val_loss
    for (name, a), b in zip(full_model.named_parameters(), resumed_model.parameters()):
        assert torch.equal(a, b), name


def test_divergence_is_reported(tiny_config, token_ids):
    model, trainer = _run(tiny_config, token_ids, 5)

    def nan_loss(model, batch):
        return lm_loss(model, batch) * float("nan")

    trainer.loss_fn = nan_loss
    with pytest.raises(FloatingPointError, match="diverged"):
        trainer.train()
    trainer.step = 0
    history = trainer.train(stop_on_divergence=True)
    assert math.isnan(history.train_loss[-1])


def test_bad_train_config():
    with pytest.raises(ValueError, match="steps=0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="grad_accum_steps=0"):
        TrainConfig(grad_accum_steps=0)
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by grad_accum_steps=4"):
        TrainConfig(batch_size=6, grad_accum_steps=4)
    with pytest.raises(ValueError, match="device='gpu0' is not a torch device"):
        TrainConfig(device="gpu0")
    with pytest.raises(ValueError, match="autocast_dtype='float64'.*'bfloat16' or 'float16'"):
        TrainConfig(autocast_dtype="float64")


# --- bit-identical to the loop the notebooks were stored with ------------------------
def _reference_loop(config, ids, cfg, seed):
    """The training loop as it was before the trainer scaled (and the notebooks were stored with)."""
    model = build_model(config, seed=seed)
    batches = LMBatches(ids, cfg.batch_size, 32)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout drew from the global RNG, seeded at construction
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False)
    model.train()
    losses, norms = [], []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = lm_loss(model, batches(generator))
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)))
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return model, losses, norms


@pytest.mark.parametrize("grad_clip", [1.0, 0.05])
def test_default_training_is_bit_identical_to_the_reference_loop(tiny_config, token_ids, grad_clip):
    config = tiny_config.replace(dropout=0.1)  # the dropout sequence must be today's too
    cfg = TrainConfig(steps=12, batch_size=4, lr=3e-3, warmup_steps=3, grad_clip=grad_clip, seed=3, progress=False)
    ref_model, ref_losses, ref_norms = _reference_loop(config, token_ids, cfg, seed=3)
    torch.manual_seed(123)  # the caller's own state must not matter
    model = build_model(config, seed=3)
    history = Trainer(model, cfg, LMBatches(token_ids, 4, 32)).train()
    assert history.train_loss == ref_losses
    assert history.grad_norm == ref_norms
    for (name, a), b in zip(model.named_parameters(), ref_model.parameters()):
        assert torch.equal(a, b), name


def test_trainer_leaves_the_callers_random_state_alone(tiny_config, token_ids):
    torch.manual_seed(5)
    torch.rand(3)
    before = torch.get_rng_state()
    model, trainer = _run(tiny_config.replace(dropout=0.1), token_ids, 4, seed=0)
    after_build = torch.get_rng_state()  # build_model(seed=...) seeds, as it always did
    trainer2 = Trainer(model, TrainConfig(steps=4, batch_size=4, progress=False), LMBatches(token_ids, 4, 32))
    assert torch.equal(torch.get_rng_state(), after_build)  # constructing a trainer draws and seeds nothing
    trainer.train()
    trainer2.train()
    trainer.evaluate()
    assert torch.equal(torch.get_rng_state(), after_build)  # nor does training (dropout) or evaluating
    assert not torch.equal(before, after_build)


def test_each_rank_drops_different_units(tiny_config, token_ids):
    ranks = [Trainer(build_model(tiny_config, seed=0), TrainConfig(batch_size=4, seed=7, progress=False),
                     LMBatches(token_ids, 4, 32), rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(ranks[0].rng_state, torch.Generator().manual_seed(7).get_state())
    assert torch.equal(ranks[1].rng_state, torch.Generator().manual_seed(8).get_state())
    assert torch.equal(ranks[0].generator.get_state(), ranks[1].generator.get_state())  # the same global batches
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        Trainer(build_model(tiny_config, seed=0), TrainConfig(), LMBatches(token_ids, 4, 32), rank=2, world_size=2)


# --- scaling: accumulation, ranks, wrapping, precision ----------------------------------
@pytest.mark.parametrize("accum", [2, 4])
def test_gradient_accumulation_equals_one_batch(tiny_config, token_ids, accum):
    # No biases: a key bias has an exactly-zero gradient (softmax ignores a constant per row), so only
    # rounding noise reaches it, and Adam divides that noise by its own size: a step of +-lr either way.
    config = tiny_config.replace(bias=False)

    def run(k):
        model = build_model(config, seed=0)
        cfg = TrainConfig(steps=6, batch_size=8, lr=3e-3, warmup_steps=2, grad_accum_steps=k, progress=False)
        return model, Trainer(model, cfg, LMBatches(token_ids, 8, 32), LMBatches(token_ids, 8, 32)).train()

    one_model, one = run(1)
    acc_model, acc = run(accum)
    assert acc.train_loss == pytest.approx(one.train_loss, abs=1e-6)
    assert acc.grad_norm == pytest.approx(one.grad_norm, rel=1e-5)
    assert acc.val_loss == pytest.approx(one.val_loss, abs=1e-6)
    for (name, a), b in zip(one_model.named_parameters(), acc_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_a_rank_takes_its_rows_then_splits_them(tiny_config, token_ids):
    cfg = TrainConfig(batch_size=8, grad_accum_steps=2, progress=False)
    trainer = Trainer(build_model(tiny_config, seed=0), cfg, LMBatches(token_ids, 8, 32), rank=1, world_size=2)
    batch = {
        "input_ids": torch.arange(8)[:, None].expand(8, 5),
        "prefix_len": torch.arange(8),
        "table": torch.zeros(3),  # not a per-row tensor: passed through
    }
    micro = trainer.micro_batches(batch)
    assert [m["prefix_len"].tolist() for m in micro] == [[4, 5], [6, 7]]
    assert [m["input_ids"][:, 0].tolist() for m in micro] == [[4, 5], [6, 7]]
    assert all(m["table"] is batch["table"] for m in micro)
    with pytest.raises(ValueError, match="batch of 6 rows but TrainConfig.batch_size=8"):
        trainer.micro_batches({"input_ids": torch.zeros(6, 5, dtype=torch.long)})
    with pytest.raises(ValueError, match="not divisible by world_size \\* grad_accum_steps = 4 \\* 2 = 8"):
        Trainer(build_model(tiny_config, seed=0), TrainConfig(batch_size=12, grad_accum_steps=2), LMBatches(token_ids, 12, 32),
                rank=0, world_size=4)


class _Counting(nn.Module):
    """A stand-in for DDP: wraps the model, counts forward calls."""

    def __init__(self, module):
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.module(*args, **kwargs)


def test_the_wrapped_model_trains_and_the_plain_one_is_saved(tiny_config, token_ids, tmp_path):
    model = build_model(tiny_config, seed=0)
    cfg = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_every=3, eval_batches=2, progress=False)
    trainer = Trainer(model, cfg, LMBatches(token_ids, 4, 32), LMBatches(token_ids, 4, 32), wrap=_Counting)
    trainer.train()
    assert trainer.model is model and trainer.wrapped.module is model
    assert trainer.wrapped.calls == 3 + 2  # three steps, two validation batches
    path = trainer.save(tmp_path / "c.safetensors")
    assert all(not k.startswith("module.") for k in load_checkpoint(path).model_state)
    fresh = Trainer(build_model(tiny_config, seed=1), cfg, LMBatches(token_ids, 4, 32), wrap=_Counting)
    fresh.load(path)
    for a, b in zip(model.parameters(), fresh.model.parameters()):
        assert torch.equal(a, b)
    trainer.model = build_model(tiny_config, seed=0)  # assigning a model wraps it again
    assert trainer.wrapped.module is trainer.model


def test_autocast_trains_in_bfloat16_and_float16(tiny_config, token_ids):
    for dtype in ("bfloat16", "float16"):
        model = build_model(tiny_config, seed=0)
        cfg = TrainConfig(steps=4, batch_size=4, lr=3e-3, warmup_steps=1, autocast_dtype=dtype, progress=False)
        trainer = Trainer(model, cfg, LMBatches(token_ids, 4, 32))
        history = trainer.train()
        assert all(math.isfinite(x) for x in history.train_loss), dtype
        assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
        assert (trainer.scaler is not None) == (dtype == "float16")


def test_one_process_group_of_one_rank_gives_the_same_run(tiny_config, token_ids, tmp_path):
    import torch.distributed as dist

    model_a, plain = _run(tiny_config, token_ids, 5)
    plain.train()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model_b, grouped = _run(tiny_config, token_ids, 5)
        assert (grouped.rank, grouped.world_size) == (0, 1)
        grouped.train()  # all_reduce of the loss, the divergence flag and the validation loss
    finally:
        dist.destroy_process_group()
    assert grouped.history.train_loss == plain.history.train_loss
    assert grouped.history.val_loss == plain.history.val_loss


# --- clipping and the schedule -----------------------------------------------------------
def _model_with_grads(config):
    model = build_model(config, seed=0)
    ids = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    (model(ids).logsumexp(-1).mean() * 100).backward()
    return model


def test_clip_grad_norm_equals_torch(tiny_config):
    for max_norm in (0.01, 1e9):
        ours, theirs = _model_with_grads(tiny_config), _model_with_grads(tiny_config)
        n_ours = clip_grad_norm(ours.parameters(), max_norm)
        n_theirs = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm, foreach=False)
        assert torch.equal(n_ours, n_theirs)
        for a, b in zip(ours.parameters(), theirs.parameters()):
            assert torch.equal(a.grad, b.grad)
    model = _model_with_grads(tiny_config)
    before = [p.grad.clone() for p in model.parameters()]
    assert torch.equal(clip_grad_norm(model.parameters(), None), grad_norm(model.parameters()))  # None: measure only
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))
    assert float(grad_norm([nn.Parameter(torch.zeros(2))])) == 0.0  # no gradients at all


def test_warmup_convention_first_step_already_moves():
    cfg = TrainConfig(steps=50, lr=1e-3, warmup_steps=4)
    assert lr_at(0, cfg) == 1e-3 / 4  # the first step runs at lr / warmup_steps, not 0
    assert [lr_at(s, cfg) for s in range(4)] == [1e-3 * k / 4 for k in (1, 2, 3, 4)]
    assert lr_at(3, cfg) == lr_at(4, cfg) == 1e-3  # full lr at warmup_steps - 1, where the cosine starts
    assert lr_at(50, cfg) == lr_at(80, cfg) == pytest.approx(1e-4)
    assert lr_at(0, TrainConfig(steps=50, lr=1e-3, warmup_steps=0)) == 1e-3


# --- the auxiliary channel -------------------------------------------------------------
class _PenalisedFFN(nn.Module):
    """A test component: an FFN that reports an L2 penalty on its output and the output's RMS."""

    def __init__(self, ffn, coef):
        super().__init__()
        self.ffn, self.coef = ffn, coef

    def forward(self, x):
        h = self.ffn(x)
        auxiliary.add_loss("test.l2", self.coef * h.pow(2).mean())
        auxiliary.add_stat("test.rms", h.pow(2).mean().sqrt())
        auxiliary.add_stat("test.pair", torch.stack([h.mean(), h.std()]))
        return h


def _penalised(config, coef):
    model = build_model(config, seed=0)
    for block in model.decoder.blocks:
        block.ffn = _PenalisedFFN(block.ffn, coef)
    return model


def _ffn_rms(model, batch):
    outputs = []
    hooks = [blk.ffn.register_forward_hook(lambda m, a, out: outputs.append(out)) for blk in model.decoder.blocks]
    with torch.no_grad():
        model.eval()(batch["input_ids"])
    for h in hooks:
        h.remove()
    return sum(float(o.pow(2).mean().sqrt()) for o in outputs) / len(outputs)


def test_auxiliary_losses_are_logged_and_trained(tiny_config, token_ids):
    cfg = TrainConfig(steps=30, batch_size=4, lr=3e-3, warmup_steps=3, eval_every=10, eval_batches=2, progress=False)
    probe = LMBatches(token_ids, 4, 32)(torch.Generator().manual_seed(9))
    runs = {}
    for coef in (0.0, 100.0):
        model = _penalised(tiny_config, coef)
        trainer = Trainer(model, cfg, LMBatches(token_ids, 4, 32), LMBatches(token_ids, 4, 32))
        runs[coef] = (model, trainer, trainer.train())
    h = runs[100.0][2]
    assert len(h.aux_losses["test.l2"]) == len(h.step) == 30
    assert len(h.stats["test.rms"]) == 30 and len(h.stats["test.pair"][0]) == 2
    assert h.stats["test.rms"][-1] < 0.5 * runs[0.0][2].stats["test.rms"][-1]  # logged during training
    # the penalty's gradient reaches the parameters: the penalised outputs shrink
    assert _ffn_rms(runs[100.0][0], probe) < 0.5 * _ffn_rms(runs[0.0][0], probe)
    # train_loss is the objective alone: the first step is the same whatever the penalty
    assert runs[100.0][2].train_loss[0] == runs[0.0][2].train_loss[0]
    assert runs[0.0][2].aux_losses["test.l2"][0] == 0.0 < h.aux_losses["test.l2"][0]


def test_evaluation_leaves_auxiliary_losses_out(tiny_config, token_ids):
    model = _penalised(tiny_config, 10.0)
    cfg = TrainConfig(steps=2, batch_size=4, eval_batches=3, progress=False)
    trainer = Trainer(model, cfg, LMBatches(token_ids, 4, 32), LMBatches(token_ids, 4, 32))
    with torch.no_grad():
        expected = sum(float(lm_loss(model.eval(), b)) for b in trainer.val_set) / 3
    assert trainer.evaluate() == expected


def test_history_keeps_named_series_aligned_and_loads_old_dicts():
    h = History()
    h.log_step(1, 2.0, 1e-3, 0.5)
    h.log_step(2, 1.9, 1e-3, 0.4, {"moe.balance": 0.1}, {"moe.load": [0.5, 0.5]})
    h.log_step(3, 1.8, 1e-3, 0.3)
    assert h.aux_losses["moe.balance"][1:] == [0.1, pytest.approx(float("nan"), nan_ok=True)]
    assert math.isnan(h.aux_losses["moe.balance"][0])
    assert h.stats["moe.load"] == [None, [0.5, 0.5], None]
    old = {"step": [1], "train_loss": [2.0], "lr": [1e-3], "grad_norm": [0.5], "eval_step": [], "val_loss": []}
    loaded = History.from_dict(old)
    assert loaded.aux_losses == {} and loaded.stats == {} and loaded.train_loss == [2.0]


def test_a_checkpoint_from_before_the_auxiliary_channel_still_loads(tiny_config, token_ids, tmp_path):
    model, trainer = _run(tiny_config, token_ids, 4)
    trainer.train(until=2)
    path = trainer.save(tmp_path / "new.safetensors")
    ckpt = load_checkpoint(path)
    old_trainer = dict(ckpt.trainer)
    old_trainer["history"] = {k: v for k, v in ckpt.trainer["history"].items() if k not in ("aux_losses", "stats")}
    old_trainer["train_config"] = {k: v for k, v in ckpt.trainer["train_config"].items()
                                   if k not in ("grad_accum_steps", "device", "autocast_dtype")}
    old_path = save_checkpoint(tmp_path / "old.safetensors", model, tensors=ckpt.tensors, trainer=old_trainer)
    _, resumed = _run(tiny_config, token_ids, 4)
    resumed.load(old_path)
    assert resumed.step == 2 and resumed.history.aux_losses == {}
    resumed.train()
    assert len(resumed.history.step) == 4


# --- never apply or save a non-finite update ---------------------------------------------
def _nan_gradient_loss(model, batch):
    """A finite loss whose gradient is nan: d/dw [0 * sqrt(w - w)] = 0 * inf."""
    w = model.tok_emb.weight
    return lm_loss(model, batch) + 0.0 * (w - w.detach()).sum().sqrt()


def test_a_non_finite_gradient_is_never_applied(tiny_config, token_ids):
    model, trainer = _run(tiny_config, token_ids, 5)
    trainer.train(until=2)
    before = [p.detach().clone() for p in model.parameters()]
    moments = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    trainer.loss_fn = _nan_gradient_loss
    with pytest.raises(FloatingPointError, match="gradient norm became nan.*not applied"):
        trainer.train()
    assert trainer.step == 2
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(torch.equal(s["exp_avg"], m) for s, m in zip(trainer.optimizer.state.values(), moments))
    assert all(p.grad is None for p in model.parameters())
    history = trainer.train(stop_on_divergence=True)
    assert history.step[-1] == 3 and math.isnan(history.train_loss[-1])
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    trainer.loss_fn = lm_loss
    trainer.train()  # and training goes on from the last good weights
    assert trainer.step == 5 and all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_learning_rate_or_clip_is_rejected():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr=.*positive, finite"):
            TrainConfig(lr=bad)
        with pytest.raises(ValueError, match="grad_clip=.*positive, finite"):
            TrainConfig(grad_clip=bad)


def test_trainer_refuses_to_save_non_finite_weights(tiny_config, token_ids, tmp_path):
    model, trainer = _run(tiny_config, token_ids, 2)
    with torch.no_grad():
        model.tok_emb.weight[1, 1] = float("inf")
    with pytest.raises(CheckpointError, match="tok_emb.weight"):
        trainer.save(tmp_path / "c.safetensors")
    trainer.save(tmp_path / "c.safetensors", allow_nonfinite=True)


_DDP_WORKER = """
import json, sys
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from llmcourse import LMBatches, TrainConfig, Trainer, build_model
from llmcourse.config import ModelConfig

rank, store, out, config, ids = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
ids = torch.tensor(json.loads(open(ids).read()))
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
model = build_model(ModelConfig.from_dict(config), seed=0)
cfg = TrainConfig(**json.loads(sys.argv[6]))
trainer = Trainer(model, cfg, LMBatches(ids, 8, 32), LMBatches(ids, 8, 32), wrap=DistributedDataParallel)
history = trainer.train()
weights = [p.detach().reshape(-1).tolist() for p in trainer.model.parameters()]
json.dump({"loss": history.train_loss, "val": history.val_loss, "weights": weights}, open(out, "w"))
dist.destroy_process_group()
"""


def test_two_ranks_with_ddp_train_like_one_process_on_the_global_batch(tiny_config, token_ids, tmp_path):
    import json
    import os
    import subprocess
    import sys

    config = tiny_config.replace(bias=False)  # see test_gradient_accumulation_equals_one_batch
    train = dict(steps=4, batch_size=8, lr=3e-3, warmup_steps=1, eval_every=2, eval_batches=2, progress=False)
    (tmp_path / "ids.json").write_text(json.dumps(token_ids.tolist()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _DDP_WORKER, str(rank), str(tmp_path / "store"), str(tmp_path / f"{rank}.json"),
                          json.dumps(config.to_dict()), str(tmp_path / "ids.json"),
                          json.dumps({**train, "grad_accum_steps": 2})], env=env, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]

    model = build_model(config, seed=0)
    one = Trainer(model, TrainConfig(**train), LMBatches(token_ids, 8, 32), LMBatches(token_ids, 8, 32)).train()
    for r in ranks:
        assert r["loss"] == pytest.approx(one.train_loss, abs=1e-6)  # the mean over both ranks' rows
        assert r["val"] == pytest.approx(one.val_loss, abs=1e-6)
        for a, b in zip(r["weights"], model.parameters()):
            torch.testing.assert_close(torch.tensor(a), b.detach().reshape(-1), atol=1e-6, rtol=0)


# --- loading checks everything first ---------------------------------------------------
def _saved_run(config, ids, tmp_path, **train):
    model = build_model(config, seed=0)
    cfg = TrainConfig(**{**dict(steps=4, batch_size=4, lr=2e-3, warmup_steps=1, eval_every=2, eval_batches=2, progress=False), **train})
    trainer = Trainer(model, cfg, LMBatches(ids, 4, 32), LMBatches(ids, 4, 32))
    trainer.train(until=2)
    return trainer.save(tmp_path / "run.safetensors")


def _fresh(config, ids, **train):
    cfg = TrainConfig(**{**dict(steps=4, batch_size=4, lr=2e-3, warmup_steps=1, eval_every=2, eval_batches=2, progress=False), **train})
    return Trainer(build_model(config, seed=5), cfg, LMBatches(ids, 4, 32), LMBatches(ids, 4, 32))


def test_load_names_the_train_config_fields_that_differ(tiny_config, token_ids, tmp_path):
    path = _saved_run(tiny_config, token_ids, tmp_path)
    trainer = _fresh(tiny_config, token_ids, lr=1e-3, steps=8, desc="resumed")  # desc is cosmetic
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(CheckpointError, match=r"steps: checkpoint 4, now 8; lr: checkpoint 0.002, now 0.001\. .*config_mismatch='allow'"):
        trainer.load(path)
    assert trainer.step == 0 and all(torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before))
    trainer.load(path, config_mismatch="allow")
    assert trainer.step == 2 and trainer.cfg.lr == 1e-3
    _fresh(tiny_config, token_ids, progress=True, desc="x").load(path)  # nothing that matters differs
    with pytest.raises(ValueError, match="config_mismatch='ignore'"):
        trainer.load(path, config_mismatch="ignore")


def test_a_failed_load_changes_nothing(tiny_config, token_ids, tmp_path):
    path = _saved_run(tiny_config, token_ids, tmp_path)
    ckpt = load_checkpoint(path)
    tensors = dict(ckpt.tensors)
    tensors["optim.0.exp_avg"] = torch.zeros(3)  # the weights fit, the optimizer state does not
    model = build_model(tiny_config, seed=9)
    bad = save_checkpoint(tmp_path / "bad.safetensors", model, tensors=tensors, trainer=ckpt.trainer)
    trainer = _fresh(tiny_config, token_ids)
    trainer.train(until=1)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    rng, moments = trainer.rng_state.clone(), [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    with pytest.raises(CheckpointError, match=r"optim\.0\.exp_avg has shape \(3,\)"):
        trainer.load(bad)
    assert trainer.step == 1 and len(trainer.history.step) == 1
    assert all(torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before))
    assert torch.equal(trainer.rng_state, rng)
    assert all(torch.equal(s["exp_avg"], m) for s, m in zip(trainer.optimizer.state.values(), moments))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(beta1=1.0), "beta1=1.0"),
        (dict(beta2=float("nan")), "beta2=nan"),
        (dict(beta1=-0.1), "beta1=-0.1"),
        (dict(weight_decay=-0.1), "weight_decay=-0.1"),
        (dict(weight_decay=float("nan")), "weight_decay=nan"),
        (dict(steps=True), "steps=True"),
        (dict(warmup_steps=2.5), "warmup_steps=2.5"),
        (dict(lr="1e-3"), "lr='1e-3'"),
        (dict(min_lr=float("nan")), "min_lr=nan"),
        (dict(seed=1.5), "seed=1.5"),
        (dict(progress="no"), "progress='no'"),
    ],
)
def test_train_config_refuses_bad_optimiser_fields(kwargs, field):
    """Issue 18 item 4: beta1, beta2, weight_decay (negative), steps=True and types were unchecked."""
    with pytest.raises(ValueError) as err:
        TrainConfig(**kwargs)
    assert field in str(err.value)


def test_evaluate_restores_training_mode_when_the_loss_raises(tiny_config, token_ids):
    """Issue 18, the rest of the list: an error inside evaluate() left the model in eval mode (dropout off)."""
    def loss_fn(model, batch):
        if not model.training:
            raise RuntimeError("boom in eval")
        return lm_loss(model, batch)

    cfg = TrainConfig(steps=2, batch_size=4, eval_batches=1, progress=False)
    trainer = Trainer(build_model(tiny_config, seed=0), cfg, LMBatches(token_ids, 4, 32), LMBatches(token_ids, 4, 32), loss_fn)
    trainer.model.train()
    with pytest.raises(RuntimeError, match="boom in eval"):
        trainer.evaluate()
    assert trainer.model.training
