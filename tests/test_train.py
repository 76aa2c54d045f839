import math

import pytest
import torch

from llmcourse import LMBatches, TrainConfig, Trainer, build_model
from llmcourse.objectives import lm_loss
from llmcourse.train import lr_at, param_groups


def test_initial_loss_is_near_log_vocab(tiny_config, token_ids):
    model = build_model(tiny_config, seed=0)
    batch = LMBatches(token_ids, 16, 32)(torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = float(lm_loss(model, batch))
    assert abs(loss - math.log(tiny_config.vocab_size)) < 0.1


def test_one_batch_can_be_overfit(tiny_config, token_ids):
    model = build_model(tiny_config, seed=0)
    batch = LMBatches(token_ids, 4, 32)(torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=150, lr=3e-3, warmup_steps=10, weight_decay=0.0, progress=False)
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
    cfg = TrainConfig(steps=steps, batch_size=4, lr=2e-3, warmup_steps=3, eval_every=5, eval_batches=2, seed=seed, progress=False)
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
