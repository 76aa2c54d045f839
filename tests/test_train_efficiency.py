"""Trainer options that change how a step is computed, not what it computes: activation checkpointing,
torch.compile, the AdamW kernel, the device."""

import pytest
import torch

from llmcourse import LMBatches, TrainConfig, Trainer, build_model
from llmcourse.objectives import lm_loss
from llmcourse.train import main

TRAIN = dict(steps=3, batch_size=4, lr=3e-3, warmup_steps=1, eval_every=3, eval_batches=1, progress=False)


def _grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss = lm_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("variant", [{}, {"dropout": 0.1}, {"n_experts": 4, "top_k": 2}, {"parallel_residual": True}])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(tiny_config, token_ids, variant):
    config = tiny_config.replace(**variant)
    batch = LMBatches(token_ids, 4, 32)(torch.Generator().manual_seed(0))
    losses, grads = [], []
    for on in (False, True):
        model = build_model(config, seed=0)
        trainer = Trainer(model, TrainConfig(**TRAIN, activation_checkpointing=on), LMBatches(token_ids, 4, 32))
        assert all(b.activation_checkpointing is on for b in model.decoder.blocks)
        torch.manual_seed(7)  # the same dropout masks in both runs; checkpointing replays them in backward
        loss, g = _grads(trainer.wrapped, batch)
        losses.append(loss)
        grads.append(g)
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=0)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=0, msg=name)


def test_activation_checkpointing_trains_the_same_run_and_keeps_auxiliary_losses_once(tiny_config, token_ids):
    config = tiny_config.replace(n_experts=4, top_k=2)
    runs = []
    for on in (False, True):
        trainer = Trainer(build_model(config, seed=0), TrainConfig(**TRAIN, activation_checkpointing=on),
                          LMBatches(token_ids, 4, 32), LMBatches(token_ids, 4, 32))
        runs.append(trainer.train())
    assert runs[1].train_loss == pytest.approx(runs[0].train_loss, abs=1e-6)
    assert runs[1].val_loss == pytest.approx(runs[0].val_loss, abs=1e-6)
    for name in runs[0].aux_losses:  # reported by the forward pass, not again by the recomputation
        assert runs[1].aux_losses[name] == pytest.approx(runs[0].aux_losses[name], abs=1e-6)


def test_activation_checkpointing_saves_activation_memory(tiny_config, token_ids):
    """Fewer tensors stay saved for backward: count the bytes autograd keeps, with and without."""
    config = tiny_config.replace(n_layers=4)
    batch = LMBatches(token_ids, 4, 32)(torch.Generator().manual_seed(0))
    saved = []
    for on in (False, True):
        model = build_model(config, seed=0)
        for b in model.decoder.blocks:
            b.activation_checkpointing = on
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            lm_loss(model, batch)
        saved.append(total[0])
    assert saved[1] < saved[0] / 2


def test_no_checkpointing_without_gradients_or_with_a_cache(tiny_config, token_ids):
    from llmcourse.generate import generate

    model = build_model(tiny_config, seed=0)
    ids = token_ids[:8][None]
    expected = generate(model, ids, max_new_tokens=4, temperature=0.0)
    for b in model.decoder.blocks:
        b.activation_checkpointing = True
    assert torch.equal(generate(model, ids, max_new_tokens=4, temperature=0.0), expected)


def test_adamw_implementations_take_the_same_steps(tiny_config, token_ids):
    runs = {}
    for impl in ("plain", "foreach", "fused"):
        trainer = Trainer(build_model(tiny_config, seed=0), TrainConfig(**TRAIN, adamw_impl=impl), LMBatches(token_ids, 4, 32))
        runs[impl] = (trainer.train().train_loss, [p.detach().clone() for p in trainer.model.parameters()])
    for impl in ("foreach", "fused"):
        assert runs[impl][0] == pytest.approx(runs["plain"][0], abs=1e-5)
        for a, b in zip(runs[impl][1], runs["plain"][1]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _compile_works() -> bool:
    try:
        f = torch.compile(lambda x: x * 2 + 1)
        return bool(torch.equal(f(torch.ones(2)), torch.full((2,), 3.0)))
    except Exception:  # no C++ compiler, an unsupported Python...: the option cannot run here
        return False


@pytest.mark.skipif(not _compile_works(), reason="torch.compile does not run on this machine")
def test_compiled_training_matches_eager(tiny_config, token_ids):
    config = tiny_config.replace(n_layers=1, attn_impl="sdpa")
    runs = []
    for compiled in (False, True):
        trainer = Trainer(build_model(config, seed=0), TrainConfig(**{**TRAIN, "steps": 2}, compile=compiled),
                          LMBatches(token_ids, 4, 32))
        runs.append(trainer.train().train_loss)
        if compiled:
            assert trainer.wrapped is not trainer.model  # the compiled module; the plain one is saved
    assert runs[1] == pytest.approx(runs[0], abs=1e-4)


@pytest.mark.parametrize("field,value", [("activation_checkpointing", 1), ("compile", "yes"), ("adamw_impl", "sgd")])
def test_bad_efficiency_fields_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_resuming_with_other_efficiency_options_is_allowed(tiny_config, token_ids, tmp_path):
    first = Trainer(build_model(tiny_config, seed=0), TrainConfig(**TRAIN), LMBatches(token_ids, 4, 32))
    first.train(until=1)
    path = first.save(tmp_path / "run.safetensors")
    again = Trainer(build_model(tiny_config, seed=1), TrainConfig(**TRAIN, activation_checkpointing=True),
                    LMBatches(token_ids, 4, 32))
    again.load(path)  # no CheckpointError: checkpointing recomputes the same numbers
    assert again.step == 1


def test_the_command_reads_the_new_fields(tmp_path, text, capsys):
    import json

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    model = {"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 32}
    config = {"model": model, "train": {**TRAIN, "activation_checkpointing": True, "adamw_impl": "fused"},
              "data": {"corpus": str(corpus)}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "out")]) == 0
    config["train"]["activation_checkpointing"] = "yes"
    (tmp_path / "bad.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "out2")])
    assert "train.activation_checkpointing='yes' has the wrong type" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("extra", [{}, {"autocast_dtype": "bfloat16", "adamw_impl": "fused"},
                                   {"activation_checkpointing": True}])
def test_training_on_cuda_follows_the_cpu_run(tiny_config, token_ids, tmp_path, extra):
    runs = []
    for device in ("cpu", "cuda"):
        cfg = TrainConfig(**TRAIN, device=device, **extra) if device == "cuda" else TrainConfig(**TRAIN)
        trainer = Trainer(build_model(tiny_config, seed=0), cfg, LMBatches(token_ids, 4, 32), LMBatches(token_ids, 4, 32))
        runs.append(trainer.train())
        assert next(trainer.model.parameters()).device.type == device
    tol = 5e-2 if extra.get("autocast_dtype") else 1e-3
    assert runs[1].train_loss == pytest.approx(runs[0].train_loss, abs=tol)
    path = trainer.save(tmp_path / "cuda.safetensors")  # saved from the GPU, loaded on the CPU
    cpu = Trainer(build_model(tiny_config, seed=1), TrainConfig(**TRAIN, **extra), LMBatches(token_ids, 4, 32))
    cpu.load(path)
    for a, b in zip(cpu.model.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(a, b.cpu())
