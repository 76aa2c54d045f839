import json

import pytest
import torch
from safetensors.torch import save_file

from llmcourse import build_model
from llmcourse.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from llmcourse.models import load_model


def _ids(config):
    return torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", [dict(), dict(norm="rmsnorm", ffn="swiglu", position="rope", bias=False, n_kv_heads=2)])
def test_round_trip_reproduces_logits_exactly(tiny_config, tmp_path, variant):
    config = tiny_config.replace(**variant)
    model = build_model(config, seed=1)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    again = load_model(path)
    model.eval(), again.eval()
    assert again.config == config
    assert torch.equal(model(_ids(config)), again(_ids(config)))


def test_truncated_checkpoint_is_a_clear_error(tiny_config, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(tiny_config, seed=0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="m.safetensors.*truncated or corrupt"):
        load_checkpoint(path)


def test_flipped_bytes_fail_the_checksum(tiny_config, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(tiny_config, seed=0))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_mismatched_checkpoint_names_the_tensor_and_the_config_field(tiny_config, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(tiny_config, seed=0))
    other = build_model(tiny_config.replace(d_model=64), seed=0)
    with pytest.raises(CheckpointError) as err:
        load_weights(other, load_checkpoint(path))
    message = str(err.value)
    assert "weight: checkpoint shape (" in message and "d_model: checkpoint 32, model 64" in message


def test_foreign_safetensors_and_missing_file(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an llmcourse checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_crash_mid_write_keeps_the_previous_checkpoint(tiny_config, tmp_path, monkeypatch):
    model = build_model(tiny_config, seed=0)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    before = path.read_bytes()

    import llmcourse.checkpoint as ck

    def crash(state, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(ck, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, build_model(tiny_config, seed=5))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left behind
    load_checkpoint(path)


def test_no_pickle_in_the_file(tiny_config, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(tiny_config, seed=0))
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == "llmcourse-checkpoint-1"
    assert json.loads(header["__metadata__"]["config"])["d_model"] == 32


def test_non_finite_weights_are_refused_unless_asked(tiny_config, tmp_path):
    model = build_model(tiny_config, seed=0)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    before = path.read_bytes()
    with torch.no_grad():
        model.tok_emb.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"nan or inf \(model\.tok_emb\.weight\).*allow_nonfinite=True"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before  # the good checkpoint is not overwritten
    with pytest.raises(CheckpointError, match="optim.0.exp_avg"):
        save_checkpoint(tmp_path / "b.safetensors", build_model(tiny_config, seed=0),
                        tensors={"optim.0.exp_avg": torch.tensor([1.0, float("inf")])})
    assert not (tmp_path / "b.safetensors").exists()
    save_checkpoint(path, model, allow_nonfinite=True)
    assert torch.isnan(load_checkpoint(path).model_state["tok_emb.weight"][0, 0])


def _rewrite_metadata(path, **changes):
    """Rewrite a checkpoint's header metadata, keeping its tensors and its recorded sha256 (what an editor would do)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata.update(changes)
    save_file(load_file(str(path)), str(path), metadata=metadata)


def test_edited_config_metadata_fails_the_checksum(tiny_config, tmp_path):
    """Issue 18 item 2: the digest covered tensors only, so an edited config built another model silently."""
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(tiny_config, seed=0))
    config = json.loads(load_checkpoint(path).config.to_json())
    _rewrite_metadata(path, config=json.dumps({**config, "ffn": "relu"}, sort_keys=True))
    with pytest.raises(CheckpointError, match="tensors are intact but its config or trainer metadata differ"):
        load_checkpoint(path)
    path2 = save_checkpoint(tmp_path / "t.safetensors", build_model(tiny_config, seed=0), trainer={"step": 3})
    _rewrite_metadata(path2, trainer=json.dumps({"step": 30}))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path2)


@pytest.mark.parametrize(
    "change",
    [dict(position="rope"), dict(position="alibi"), dict(ffn="relu"), dict(norm_eps=1e-6), dict(attn_scale=1.0),
     dict(logit_scale=0.5)],
)
def test_load_weights_refuses_another_architecture_with_the_same_tensors(tiny_config, tmp_path, change):
    base = tiny_config.replace(position="none")
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(base, seed=0))
    other = build_model(base.replace(**change), seed=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    field = next(iter(change))
    with pytest.raises(CheckpointError, match=rf"another architecture: {field}: checkpoint .*config_mismatch='allow'"):
        load_weights(other, load_checkpoint(path))
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())  # nothing was touched
    load_weights(other, load_checkpoint(path), config_mismatch="allow")  # the explicit way to load anyway
    assert torch.equal(other.state_dict()["tok_emb.weight"], load_checkpoint(path).model_state["tok_emb.weight"])


def test_load_weights_accepts_non_architecture_differences(tiny_config, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(tiny_config, seed=0))
    same_function = tiny_config.replace(dropout=0.1, init_std=0.05, attn_impl="sdpa", fused_kernels=False, extra={"a": 1})
    load_weights(build_model(same_function, seed=0), load_checkpoint(path))
    with pytest.raises(ValueError, match="config_mismatch='sometimes'"):
        load_weights(build_model(tiny_config, seed=0), load_checkpoint(path), config_mismatch="sometimes")


def test_load_weights_refuses_another_rope_pairing(tiny_config, tmp_path):
    rope = tiny_config.replace(position="rope")
    path = save_checkpoint(tmp_path / "m.safetensors", build_model(rope, seed=0))
    with pytest.raises(CheckpointError, match="rope_pairing: checkpoint 'half', model 'interleaved'"):
        load_weights(build_model(rope.replace(rope_pairing="interleaved"), seed=0), load_checkpoint(path))


def test_load_checkpoint_refuses_pipes_devices_folders_and_pickles(tmp_path):
    """Issue 18 item 6 (a FIFO blocked forever) and the rest of the list (a folder or a pickle was 'truncated or corrupt')."""
    import os
    import pickle

    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint("/dev/zero")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
    pkl = tmp_path / "model.pt"
    pkl.write_bytes(pickle.dumps({"w": [1, 2]}))
    with pytest.raises(CheckpointError, match="pickle or torch.save file.*never unpickled"):
        load_checkpoint(pkl)
    zipped = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, zipped)
    with pytest.raises(CheckpointError, match="pickle or torch.save file"):
        load_checkpoint(zipped)


def test_a_checkpoint_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """safetensors begins with the header length; a length whose low byte is 0x80 once looked like pickle's PROTO."""
    import struct

    from llmcourse.config import ModelConfig
    from llmcourse.models import build_model

    model = build_model(ModelConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=1, max_seq_len=4), seed=0)
    for pad in range(300):  # vary the header's length until its first byte is 0x80
        path = save_checkpoint(tmp_path / "c.safetensors", model, trainer={"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        raise AssertionError("no header length with a first byte of 0x80 in 300 tries")
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    load_checkpoint(path)  # a valid checkpoint, whatever its header length
