"""Attention masks as additive biases: causal, prefix, bidirectional, padding, and their combinations."""

import pytest
import torch

from llmcourse.attention import explicit_attention
from llmcourse.masks import (
    MASKED,
    allowed_from_bias,
    allowed_to_bias,
    bidirectional_bias,
    causal_allowed,
    causal_bias,
    combine,
    padding_bias,
    prefix_bias,
)


def test_causal_is_lower_triangular():
    T = 6
    assert torch.equal(causal_allowed(T), torch.ones(T, T, dtype=torch.bool).tril())
    bias = causal_bias(T)
    assert bias.shape == (1, 1, T, T)
    assert torch.equal(allowed_from_bias(bias)[0, 0], causal_allowed(T))


def test_causal_with_cache_offset_sees_all_cached_keys():
    # two new queries at absolute positions 3 and 4 over 5 keys
    allowed = causal_allowed(2, 5)
    assert torch.equal(allowed, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    assert torch.equal(allowed, causal_allowed(5)[-2:])


def test_prefix_is_bidirectional_inside_causal_after():
    T, p = 7, 3
    allowed = allowed_from_bias(prefix_bias(p, T))[0, 0]  # (T, T)
    for i in range(T):
        for j in range(T):
            expected = j < p or j <= i  # the prefix is visible to everyone; the rest is causal
            assert bool(allowed[i, j]) == expected, (i, j)
    # inside the prefix: both directions
    assert allowed[0, p - 1] and allowed[p - 1, 0]
    # after the prefix: no future
    assert not allowed[p, p + 1]


def test_prefix_extremes_are_causal_and_bidirectional():
    T = 5
    assert torch.equal(prefix_bias(0, T), causal_bias(T))
    assert torch.equal(prefix_bias(1, T), causal_bias(T))  # a one-token prefix only sees itself anyway
    assert allowed_from_bias(prefix_bias(T, T)).all()


def test_prefix_per_example_lengths():
    T = 6
    lengths = torch.tensor([0, 2, 6])
    bias = prefix_bias(lengths, T, batch_size=3)
    assert bias.shape == (3, 1, T, T)
    for b, p in enumerate(lengths.tolist()):
        assert torch.equal(bias[b], prefix_bias(p, T)[0])


@pytest.mark.parametrize("bad", [8, -1])
def test_prefix_outside_the_sequence_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"prefix lengths must lie in \[0, 7\]"):
        prefix_bias(torch.tensor([2, bad]), 7)


def test_prefix_count_must_match_batch():
    with pytest.raises(ValueError, match="one per example"):
        prefix_bias(torch.tensor([1, 2, 3]), 5, batch_size=2)
    with pytest.raises(ValueError, match="1-D"):
        prefix_bias(torch.tensor([[1, 2]]), 5)


def test_bidirectional_sees_everything():
    bias = bidirectional_bias(5)
    assert bias.shape == (1, 1, 1, 5) and torch.all(bias == 0)


def test_padding_hides_keys_only():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    bias = padding_bias(mask)
    assert bias.shape == (2, 1, 1, 4)
    assert torch.equal(allowed_from_bias(bias)[:, 0, 0], mask.bool())
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        padding_bias(mask[0])


def test_combine_intersects_what_may_be_seen():
    T = 4
    mask = torch.tensor([[1, 1, 1, 0]])
    both = combine(causal_bias(T), None, padding_bias(mask))
    assert both.shape == (1, 1, T, T)
    expected = causal_allowed(T) & mask.bool()[0][None, :]
    assert torch.equal(allowed_from_bias(both)[0, 0], expected)
    assert combine(None, None) is None


def test_bias_round_trip():
    allowed = torch.rand(3, 5) > 0.5
    assert torch.equal(allowed_from_bias(allowed_to_bias(allowed)), allowed)
    assert allowed_to_bias(allowed).min() == MASKED or allowed.all()


def test_masked_weights_are_exactly_zero_and_rows_never_nan():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 1, 4, 8) for _ in range(3))
    # the second example is all padding: its rows must stay finite
    bias = combine(causal_bias(4), padding_bias(torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])))
    out = explicit_attention(q, k, v, bias=bias, scale=8**-0.5)
    assert torch.isfinite(out).all()
    # row 3 of example 0 sees keys 0 and 1 only: changing keys 2 and 3 changes nothing
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 2:], v2[0, :, 2:] = 5.0, 5.0
    out2 = explicit_attention(q, k2, v2, bias=bias, scale=8**-0.5)
    torch.testing.assert_close(out2[0], out[0], atol=0, rtol=0)


def test_padding_mask_accepts_bool_and_zero_one_and_refuses_additive_masks():
    """Issue 18 item 3: a Hugging Face additive mask (0 keep, very negative pad) was read with .bool() and inverted."""
    keep = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    expected = padding_bias(keep.bool())
    for mask in (keep, keep.float(), keep.to(torch.uint8)):
        assert torch.equal(padding_bias(mask), expected)
    additive = (1 - keep.float()) * -1e9
    for bad in (additive, (1 - keep.float()) * float("-inf"), keep * 2, keep.float() * float("nan")):
        with pytest.raises(ValueError, match=r"attention_mask.*only 1 \(real token\) and 0 \(padding\).*additive_mask == 0"):
            padding_bias(bad)
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        padding_bias([[1, 0]])


def test_models_refuse_additive_and_all_padding_masks():
    from llmcourse import ModelConfig, build_model

    ids = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    no_padding_additive = torch.zeros(2, 5)  # Hugging Face's additive mask without padding
    dec = build_model(ModelConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, max_seq_len=8), seed=0)
    with pytest.raises(ValueError, match=r"attention_mask has no real token in row\(s\) \[0, 1\]"):
        dec(ids, attention_mask=no_padding_additive)
    with pytest.raises(ValueError, match="additive_mask == 0"):
        dec(ids, attention_mask=torch.tensor([[0.0, 0, 0, 0, 0], [-1e9, 0, 0, 0, 0]]))
    ok = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    torch.testing.assert_close(dec(ids, attention_mask=ok.float()), dec(ids, attention_mask=ok.bool()), atol=0, rtol=0)
    s2s = build_model(ModelConfig(arch="encoder_decoder", vocab_size=11, d_model=16, n_heads=2, n_layers=1, max_seq_len=8), seed=0)
    with pytest.raises(ValueError, match="no real token"):
        s2s.encode(ids, attention_mask=no_padding_additive)
    memory = s2s.encode(ids)
    with pytest.raises(ValueError, match="no real token"):
        s2s.decode(ids[:, :3], memory, attention_mask=no_padding_additive)
    with pytest.raises(ValueError, match="additive_mask == 0"):
        s2s.decode(ids[:, :3], memory, attention_mask=torch.full((2, 5), -1e9))
