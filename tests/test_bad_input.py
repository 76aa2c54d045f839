"""Bad input gets a clear error, never a silent wrong answer (the rest of the reliability list)."""

import errno

import pytest
import torch

from llmcourse import LMBatches, ModelConfig, TrainConfig, Trainer, build_model, to_prefix_decoder
from llmcourse import checkpoint
from llmcourse.checkpoint import save_checkpoint
from llmcourse.masks import prefix_bias
from llmcourse.train import lr_at

TINY = dict(vocab_size=50, d_model=32, n_heads=2, n_layers=1, max_seq_len=16)


def _batches():
    return LMBatches(torch.arange(1000) % 50, 4, 8)


def test_warmup_longer_than_the_run_is_refused_and_the_default_fits_the_run():
    with pytest.raises(ValueError, match="warmup_steps=60 is more than steps=50"):
        TrainConfig(steps=50, warmup_steps=60)
    short = TrainConfig(steps=50, lr=1e-3)  # the default warmup (100) used to exceed the run
    assert short.resolved_warmup_steps == 50
    assert lr_at(49, short) == pytest.approx(1e-3)  # the peak is reached
    assert TrainConfig(steps=1000).resolved_warmup_steps == 100


def test_a_model_with_every_parameter_frozen_is_refused():
    model = build_model(ModelConfig(**TINY), seed=0).requires_grad_(False)
    with pytest.raises(ValueError, match="every parameter of the model is frozen"):
        Trainer(model, TrainConfig(steps=2, progress=False), _batches())


def test_a_non_scalar_or_detached_loss_is_named():
    model = build_model(ModelConfig(**TINY), seed=0)

    def per_token(m, batch):
        return m(batch["input_ids"]).mean(-1)  # (B, T): forgot to reduce

    def detached(m, batch):
        return m(batch["input_ids"]).mean().detach()

    for fn, pattern in ((per_token, r"per_token returned \(4, 8\), not a scalar"),
                        (detached, "does not depend on any trainable parameter")):
        trainer = Trainer(model, TrainConfig(steps=2, batch_size=4, progress=False), _batches(), loss_fn=fn)
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(ValueError, match=pattern):
            trainer.train()
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("prefix_len", [2.5, torch.tensor([2.5, 3.0]), True])
def test_a_fractional_prefix_length_is_refused_not_rounded(prefix_len):
    with pytest.raises(ValueError, match="prefix_len must"):
        prefix_bias(prefix_len, 8)
    model = to_prefix_decoder(build_model(ModelConfig(**TINY), seed=0))
    with pytest.raises(ValueError, match="prefix_len must"):
        model(torch.randint(0, 50, (2, 8)), prefix_len=prefix_len)


def test_prefix_len_on_a_cached_step_is_refused_not_ignored():
    model = to_prefix_decoder(build_model(ModelConfig(**TINY), seed=0))
    cache = model.new_cache()
    model(torch.randint(0, 50, (1, 4)), prefix_len=4, cache=cache)
    with pytest.raises(ValueError, match="cached step"):
        model(torch.randint(0, 50, (1, 1)), prefix_len=2, cache=cache)


def test_decode_ignores_whatever_masked_source_positions_hold():
    cfg = ModelConfig(**TINY, arch="encoder_decoder")
    model = build_model(cfg, seed=0).eval()
    src = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    memory = model.encode(src, attention_mask=mask)
    dec = torch.randint(0, 50, (2, 5))
    clean = model.decode(dec, memory, attention_mask=mask)
    poisoned = memory.clone()
    poisoned[0, 4:] = float("nan")
    out = model.decode(dec, poisoned, attention_mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, clean, rtol=0, atol=0)


def test_a_failed_save_names_the_target_and_keeps_the_old_file(tmp_path, monkeypatch):
    model = build_model(ModelConfig(**TINY), seed=0)
    target = tmp_path / "ck.safetensors"
    save_checkpoint(target, model)
    old = target.read_bytes()

    def refuse(state, filename, metadata=None):
        raise PermissionError(errno.EACCES, "Permission denied", filename)

    monkeypatch.setattr(checkpoint, "save_file", refuse)
    with pytest.raises(PermissionError) as info:
        save_checkpoint(target, model)
    message = str(info.value)
    assert str(target) in message and ".tmp-" not in message and "writable" in message
    assert target.read_bytes() == old


def test_evaluate_without_validation_batches_names_the_fix():
    """evaluate() on a trainer without val_batches divided by zero."""
    trainer = Trainer(build_model(ModelConfig(**TINY), seed=0), TrainConfig(steps=2, progress=False), _batches())
    with pytest.raises(ValueError, match="no validation batches; give the Trainer val_batches"):
        trainer.evaluate()


def test_load_with_another_config_allowed_trains_under_the_new_weight_decay_and_betas(tmp_path):
    """Trainer.load(config_mismatch='allow') let the checkpoint's weight decay and betas win silently."""
    def trainer(**train):
        cfg = TrainConfig(**(dict(steps=4, batch_size=4, warmup_steps=1, progress=False) | train))
        return Trainer(build_model(ModelConfig(**TINY), seed=0), cfg, _batches())

    old = trainer(weight_decay=0.1, beta1=0.9, beta2=0.95)
    old.train(until=2)
    path = old.save(tmp_path / "run.safetensors")
    new = trainer(weight_decay=0.0, beta1=0.8, beta2=0.99)
    new.load(path, config_mismatch="allow")
    assert [g["weight_decay"] for g in new.optimizer.param_groups] == [0.0, 0.0]
    assert all(g["betas"] == (0.8, 0.99) for g in new.optimizer.param_groups)
    same = trainer(weight_decay=0.1, beta1=0.9, beta2=0.95)
    same.load(path)
    assert [g["weight_decay"] for g in same.optimizer.param_groups] == [0.1, 0.0]
    assert all(g["betas"] == (0.9, 0.95) for g in same.optimizer.param_groups)


def test_train_config_assignment_is_validated_and_undone_when_invalid():
    """TrainConfig was checked only on construction: trainer.cfg.lr = nan afterwards made the next update nan."""
    trainer = Trainer(build_model(ModelConfig(**TINY), seed=0), TrainConfig(steps=4, batch_size=4, progress=False), _batches())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    for name, value, pattern in (("lr", float("nan"), "lr=nan must be a positive, finite number"),
                                 ("grad_clip", float("inf"), "grad_clip=inf"),
                                 ("steps", 0, "steps=0 must be a positive integer"),
                                 ("beta2", 1.0, r"beta2=1.0 must lie in \[0, 1\)")):
        old = getattr(trainer.cfg, name)
        with pytest.raises(ValueError, match=pattern):
            setattr(trainer.cfg, name, value)
        assert getattr(trainer.cfg, name) == old
    trainer.cfg.lr = 2e-3  # a valid change is kept
    assert trainer.cfg.lr == 2e-3 and trainer.cfg == TrainConfig(steps=4, batch_size=4, progress=False, lr=2e-3)
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert not all(torch.equal(p, b) for p, b in zip(trainer.model.parameters(), before))


def test_batches_with_another_row_count_than_batch_size_are_refused():
    """batch_size was read only when splitting: one process trained on any number of rows and saved 32."""
    model = build_model(ModelConfig(**TINY), seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = Trainer(model, TrainConfig(steps=2, progress=False), _batches())  # 4 rows, batch_size 32
    with pytest.raises(ValueError, match=r"batch of 4 rows but TrainConfig.batch_size=32.*batch_size=4"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    Trainer(build_model(ModelConfig(**TINY), seed=0), TrainConfig(steps=2, batch_size=4, progress=False),
            _batches()).train()


def test_an_update_that_overflows_is_named_at_the_next_step():
    """An optimizer step can overflow with a finite gradient (weight decay times a huge learning rate); the next
    step's error said the weights were those before the step, as if they were still good."""
    model = build_model(ModelConfig(**TINY), seed=0)
    trainer = Trainer(model, TrainConfig(steps=3, batch_size=4, progress=False), _batches())
    step = trainer.optimizer.step

    def overflowing_step(*args, **kwargs):
        step(*args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("inf"))

    trainer.optimizer.step = overflowing_step
    with pytest.raises(FloatingPointError, match=r"weights are already non-finite .*update of step 1 overflowed"):
        trainer.train()
