"""The training command, ``python -m llmcourse.train``, in-process and under torchrun with 2 gloo processes."""

import json
import os
import subprocess
import sys

import pytest
import torch

from llmcourse.models import load_model
from llmcourse.train import checkpoint_name, main

MODEL = {"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 32, "bias": False}
TRAIN = {"steps": 4, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "eval_every": 2, "eval_batches": 2}


@pytest.fixture
def run_config(tmp_path, text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")

    def write(name="run.json", **sections):
        config = {"model": dict(MODEL), "train": dict(TRAIN), "data": {"corpus": str(corpus), "tokenizer": "char"}}
        for section, values in sections.items():
            if values is None:
                config.pop(section)
            else:
                config[section] = {**config.get(section, {}), **values}
        path = tmp_path / name
        path.write_text(json.dumps(config))
        return path

    return write


def _history(folder):
    return json.loads((folder / "history.json").read_text())


def test_the_command_trains_and_writes_history_and_checkpoints(run_config, tmp_path, capsys, tokenizer):
    out = tmp_path / "out"
    assert main(["--config", str(run_config()), "--out", str(out), "--save-every", "2"]) == 0
    h = _history(out)
    assert h["step"] == [1, 2, 3, 4] and h["eval_step"] == [2, 4] and len(h["val_loss"]) == 2
    assert sorted(p.name for p in out.glob("*.safetensors")) == [checkpoint_name(2), checkpoint_name(4)]
    model = load_model(out / checkpoint_name(4))
    assert model.config.vocab_size == tokenizer.vocab_size  # taken from the tokenizer
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    lines = capsys.readouterr().out.splitlines()  # not a terminal: plain lines, no bar
    assert any(line.startswith("step 4/4 loss") for line in lines) and lines[-1].startswith("done: step 4")
    assert "\r" not in "".join(lines)


def test_a_terminal_gets_a_progress_bar(run_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    main(["--config", str(run_config()), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "100%|" in out and "4/4, loss" in out and "step 4/4" not in out  # the bar, not the plain lines


def test_toml_config_gives_the_same_run(run_config, tmp_path):
    main(["--config", str(run_config()), "--out", str(tmp_path / "a")])
    toml = tmp_path / "run.toml"
    corpus = tmp_path / "corpus.txt"
    model = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in MODEL.items())
    train = "\n".join(f"{k} = {v}" for k, v in TRAIN.items())
    toml.write_text(f'[model]\n{model}\n[train]\n{train}\n[data]\ncorpus = "{corpus}"\n')
    main(["--config", str(toml), "--out", str(tmp_path / "b")])
    assert _history(tmp_path / "a")["train_loss"] == _history(tmp_path / "b")["train_loss"]


def test_resume_continues_to_the_same_final_loss(run_config, tmp_path):
    config = run_config(train={"steps": 6, "eval_every": 3})
    main(["--config", str(config), "--out", str(tmp_path / "whole"), "--save-every", "3"])
    main(["--config", str(config), "--out", str(tmp_path / "resumed"), "--resume", str(tmp_path / "whole" / checkpoint_name(3))])
    whole, resumed = _history(tmp_path / "whole"), _history(tmp_path / "resumed")
    assert resumed["step"] == whole["step"] == [1, 2, 3, 4, 5, 6]
    assert resumed["train_loss"] == whole["train_loss"] and resumed["val_loss"] == whole["val_loss"]


@pytest.mark.parametrize(
    "change, named",
    [
        ({"optimizer": {"lr": 1}}, "unknown section(s) optimizer"),
        ({"model": {"d_modle": 32}}, "model.d_modle"),
        ({"train": {"steps": "10"}}, "train.steps='10' has the wrong type: expected integer"),
        ({"train": {"lr": "fast"}}, "train.lr='fast' has the wrong type"),
        ({"model": {"bias": 1}}, "model.bias=1 has the wrong type: expected true/false"),
        ({"data": {"corpus": "no/such/file.txt"}}, "data.corpus='no/such/file.txt'"),
        ({"data": {"tokenizer": "no/such/tokenizer"}}, "data.tokenizer='no/such/tokenizer'"),
        ({"model": {"vocab_size": 1000}}, "model.vocab_size=1000 does not match the tokenizer's vocabulary"),
        ({"model": {"max_seq_len": 4096}}, "model.max_seq_len=4096"),
        ({"train": {"batch_size": 6, "grad_accum_steps": 4}}, "grad_accum_steps"),
        ({"model": {"n_heads": 5}}, "model: d_model=32 is not divisible by n_heads=5"),
        pytest.param({"train": {"device": "cuda"}}, "train.device='cuda'",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    ],
)
def test_a_bad_config_is_named_before_training(run_config, tmp_path, capsys, change, named):
    config = run_config(**change)
    with pytest.raises(SystemExit) as e:
        main(["--config", str(config), "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    captured = capsys.readouterr()
    assert named in captured.err and captured.out == ""
    assert not (tmp_path / "out").exists()  # nothing was written, nothing trained


def test_command_line_errors(run_config, tmp_path, capsys):
    out = tmp_path / "out"
    for argv, named in [
        (["--config", str(tmp_path / "missing.json"), "--out", str(out)], "missing.json"),
        (["--config", str(run_config()), "--out", str(out), "--resume", str(tmp_path / "x.safetensors")], "--resume"),
        (["--config", str(run_config()), "--out", str(out), "--strategy", "zero"], "invalid choice: 'zero'"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and named in capsys.readouterr().err
    main(["--config", str(run_config()), "--out", str(out)])
    with pytest.raises(SystemExit):  # a finished run is not overwritten by accident
        main(["--config", str(run_config()), "--out", str(out)])
    assert "already holds a run" in capsys.readouterr().err


def test_batch_size_must_divide_over_the_processes(run_config, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit):
        main(["--config", str(run_config()), "--out", str(tmp_path / "out")])
    assert "divisible by the number of processes times train.grad_accum_steps = 3 * 1" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_under_torchrun_follow_the_one_process_run(run_config, tmp_path, strategy):
    if not torch.distributed.is_available():
        pytest.skip("this PyTorch build has no torch.distributed")
    config = run_config(train={"grad_accum_steps": 2})
    main(["--config", str(config), "--out", str(tmp_path / "one"), "--save-every", "2"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "llmcourse.train", "--config", str(config), "--out", str(tmp_path / "two"), "--save-every", "2",
           "--strategy", strategy]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done: step 4") == 1  # only rank 0 prints
    one, two = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)
    # the 2-process checkpoint holds the plain model: it resumes on one process, and a 1-process one on two
    main(["--config", str(config), "--out", str(tmp_path / "resumed"), "--resume", str(tmp_path / "two" / checkpoint_name(2))])
    assert _history(tmp_path / "resumed")["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    cmd[cmd.index(str(tmp_path / "two"))] = str(tmp_path / "two_resumed")
    done = subprocess.run(cmd + ["--resume", str(tmp_path / "one" / checkpoint_name(2))], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _history(tmp_path / "two_resumed")["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
