"""Positions as an input: position_ids through both models, relative encodings invariant to a shift, 2D ids."""

import pytest
import torch

from llmcourse.config import ModelConfig
from llmcourse.masks import relative_positions
from llmcourse.models import build_model
from llmcourse.positions import ALiBi, RotaryPositions, T5RelativeBias

V, T = 29, 10


def _cfg(position, arch="decoder", **kw):
    return ModelConfig(vocab_size=V, d_model=16, n_heads=2, n_layers=2, max_seq_len=64, position=position, arch=arch,
                       **kw)


def _ids(B=2, L=T, seed=0):
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "t5", "alibi", "rope", "none"])
def test_default_position_ids_are_arange(position):
    model = build_model(_cfg(position), seed=0).eval()
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), model(ids, position_ids=torch.arange(T)[None]))
        torch.testing.assert_close(model(ids), model(ids, position_ids=torch.arange(T).expand(2, T)))


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
@pytest.mark.parametrize("position,invariant", [
    ("rope", True), ("alibi", True), ("t5", True), ("none", True), ("learned", False), ("sinusoidal", False),
])
def test_a_constant_shift_changes_only_absolute_encodings(arch, position, invariant):
    model = build_model(_cfg(position, arch), seed=0).eval()
    ids, shift = _ids(), 7
    pos = torch.arange(T)[None]
    with torch.no_grad():
        if arch == "decoder":
            a, b = model(ids), model(ids, position_ids=pos + shift)
        else:
            tgt = _ids(L=6, seed=1)
            a = model(ids, tgt)
            b = model(ids, tgt, position_ids=pos + shift, decoder_position_ids=torch.arange(6)[None] + shift)
    if invariant:
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    else:
        assert (a - b).abs().max() > 1e-3


def test_per_example_position_ids():
    model = build_model(_cfg("learned"), seed=0).eval()
    ids = _ids()
    pos = torch.stack([torch.arange(T), torch.arange(T) + 3])
    with torch.no_grad():
        both = model(ids, position_ids=pos)
        first = model(ids[:1], position_ids=pos[:1])
        second = model(ids[1:], position_ids=pos[1:])
    torch.testing.assert_close(both, torch.cat([first, second]))


def test_relative_positions_is_key_minus_query():
    q, k = torch.tensor([[2, 3]]), torch.tensor([[0, 1, 2, 3]])
    assert relative_positions(q, k).tolist() == [[[-2, -1, 0, 1], [-3, -2, -1, 0]]]


def test_relative_encodings_from_positions_equal_the_offset_form():
    for pos in (ALiBi(4), T5RelativeBias(4, bidirectional=False)):
        torch.manual_seed(0)
        by_offset = pos.attn_bias(3, 8, 5)
        by_positions = pos.relative_bias(torch.arange(5, 8)[None] + 100, torch.arange(8)[None] + 100)
        torch.testing.assert_close(by_offset, by_positions)


def test_position_ids_of_wrong_shape_are_refused():
    model = build_model(_cfg("rope"), seed=0)
    with pytest.raises(ValueError, match="position_ids has shape"):
        model(_ids(), position_ids=torch.arange(T + 1)[None])


def test_rope_pairing_has_one_owner():
    rope = RotaryPositions(8, pairing="interleaved")
    assert rope.rotation(torch.arange(4)).pairing == "interleaved"
    model = build_model(_cfg("rope", rope_pairing="interleaved"), seed=0)
    assert not hasattr(model.decoder.blocks[0].attn, "rope_pairing")
    assert model.decoder.positions.pairing == "interleaved"


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope"])
def test_two_dimensional_positions(position):
    model = build_model(_cfg(position, position_dims=2), seed=0).eval()
    ids = _ids()
    zeros = torch.zeros(1, T, dtype=torch.long)
    pos = torch.stack([torch.arange(T)[None], zeros], dim=-1)  # (1, T, 2)
    with torch.no_grad():
        default = model(ids)
        torch.testing.assert_close(default, model(ids, position_ids=pos))
        block = pos.clone()
        block[..., 5:, 1] = torch.arange(1, T - 4)  # tokens 5.. sit inside a blank
        changed = model(ids, position_ids=block)
    assert (changed[:, 5:] - default[:, 5:]).abs().max() > 1e-6  # (RoPE moves tiny init scores only a little)
    if position != "rope":  # absolute tables: the earlier tokens do not see the second id of later ones
        torch.testing.assert_close(changed[:, :5], default[:, :5])


def test_two_dimensional_positions_are_refused_where_they_mean_nothing():
    with pytest.raises(ValueError, match="position_dims=2"):
        _cfg("alibi", position_dims=2)
    model = build_model(_cfg("learned"), seed=0)
    with pytest.raises(ValueError, match="position_dims=2"):
        model(_ids(), position_ids=torch.zeros(1, T, 2, dtype=torch.long))


def test_learned_positions_refuse_negative_ids():
    model = build_model(_cfg("learned"), seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        model(_ids(), position_ids=torch.arange(T)[None] - 1)
