"""Properties of the position encodings in llmcourse.positions, alone and inside models."""

import math

import pytest
import torch

from llmcourse import ModelConfig, build_model
from llmcourse.config import POSITIONS
from llmcourse.positions import (
    ALiBi,
    LearnedPositions,
    T5RelativeBias,
    alibi_slopes,
    apply_rotary,
    relative_position_bucket,
    rope_angles,
    rope_pairing_permutation,
    sinusoidal_table,
)


# --- absolute ---------------------------------------------------------------------
def test_sinusoidal_table_is_the_papers_interleaved_layout():
    D = 16
    table = sinusoidal_table(torch.arange(50), D)
    assert table.shape == (50, D)
    p, i = 7, 3
    torch.testing.assert_close(table[p, 2 * i], torch.tensor(math.sin(p / 10000 ** (2 * i / D))))
    torch.testing.assert_close(table[p, 2 * i + 1], torch.tensor(math.cos(p / 10000 ** (2 * i / D))))
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0] * (D // 2)))  # sin 0, cos 0


def test_sinusoidal_shift_is_one_linear_map_for_every_position():
    """PE(p + k) = M_k PE(p) with M_k independent of p (the paper's reason for choosing sinusoids)."""
    D, k = 8, 5
    pe = sinusoidal_table(torch.arange(40), D).double()  # computed in float32
    M = torch.linalg.lstsq(pe[:20], pe[k : 20 + k]).solution  # fit on positions 0..19
    torch.testing.assert_close(pe[20:35] @ M, pe[20 + k : 35 + k], atol=1e-4, rtol=0)  # holds at 20..34


def test_sinusoid_amplitude_matches_the_token_embeddings_by_default():
    """The paper's ratio of token to position size: unit sinusoids on unit-size embeddings, here init_std-size ones."""
    config = ModelConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, max_seq_len=8, position="sinusoidal")
    h = torch.zeros(1, 8, 16)
    for scale, expected in [(None, config.init_std), (1.0, 1.0), (0.5, 0.5)]:
        pos = build_model(config.replace(sinusoidal_scale=scale)).decoder.positions
        torch.testing.assert_close(pos.embed(h, torch.arange(8))[0], expected * sinusoidal_table(torch.arange(8), 16))
    with pytest.raises(ValueError, match="sinusoidal_scale"):
        config.replace(sinusoidal_scale=0.0)


def test_learned_table_errors_past_its_length():
    pos = LearnedPositions(max_seq_len=8, d_model=4)
    h = torch.zeros(1, 9, 4)
    with pytest.raises(ValueError, match="past the learned position table of length 8"):
        pos.embed(h, torch.arange(9))
    model = build_model(ModelConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, max_seq_len=8, position="learned"))
    ids = torch.zeros(1, 12, dtype=torch.long)
    with pytest.raises(ValueError, match="max_seq_len=8"):
        model(ids)  # the model's own length check comes first
    with pytest.raises(ValueError, match="learned positions cannot extrapolate"):
        model(ids, extrapolate=True)


def test_learned_table_gradient_is_the_same_every_run():
    # position ids repeated across rows (padding, GLM's second ids): the table's
    # gradient must not depend on the order in which threads add the rows up
    pos = LearnedPositions(max_seq_len=96, d_model=64, dims=2)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 96, (32, 72, 2), generator=g)
    ids[:, 40:] = 0  # padding: one id, many times
    upstream = torch.randn(32, 72, 64, generator=g)
    grads = []
    for _ in range(20):
        pos.zero_grad(set_to_none=True)
        pos.embed(torch.zeros(32, 72, 64), ids).backward(upstream)
        grads.append(torch.cat([pos.weight.grad, pos.block_weight.grad]))
    assert all(torch.equal(x, grads[0]) for x in grads)
    expected = torch.zeros(96, 64).index_add_(0, ids[..., 0].flatten(), upstream.reshape(-1, 64))
    torch.testing.assert_close(grads[0][:96], expected)


@pytest.mark.parametrize("position", [p for p in POSITIONS if p != "learned"])
def test_every_other_encoding_runs_past_the_training_length(position):
    model = build_model(ModelConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, max_seq_len=8, position=position))
    logits = model(torch.zeros(2, 24, dtype=torch.long), extrapolate=True)
    assert logits.shape == (2, 24, 11) and torch.isfinite(logits).all()


# --- relative: T5 buckets -----------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_are_monotone_in_distance(bidirectional):
    nb, md = 32, 128
    distance = torch.arange(0, 400)
    past = relative_position_bucket(-distance, bidirectional, nb, md)  # keys before the query
    assert (past.diff() >= 0).all()
    assert past[0] == 0 and past.max() == past[-1]
    half = nb // 2 if bidirectional else nb
    assert past.max() == half - 1  # every distance past max_distance shares the last bucket
    assert (past[: half // 2] == torch.arange(half // 2)).all()  # small distances are exact
    if bidirectional:
        future = relative_position_bucket(distance[1:], True, nb, md)
        assert (future.diff() >= 0).all()
        assert set(future.tolist()).isdisjoint(past.tolist())  # past and future never share a bucket
        assert future.min() == half + 1 and future.max() == nb - 1  # offset 0 counts as the past
    else:
        assert (relative_position_bucket(distance[1:], False, nb, md) == 0).all()  # the future is masked anyway


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_hugging_face(bidirectional):
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-300, 300)[None, :] + torch.arange(0, 5)[:, None]
    expected = t5.T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=32, max_distance=128)
    assert torch.equal(relative_position_bucket(rel, bidirectional, 32, 128), expected)


def test_t5_bias_is_computed_once_per_stack():
    config = ModelConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=3, max_seq_len=16, position="t5")
    model = build_model(config, seed=0)
    calls = []
    model.decoder.positions.relative_attention_bias.register_forward_hook(lambda *a: calls.append(1))
    model(torch.zeros(1, 10, dtype=torch.long))
    assert len(calls) == 1  # one lookup for three layers
    assert not hasattr(model.decoder.blocks[1], "positions")


def test_t5_bias_follows_the_query_offset():
    bias = T5RelativeBias(n_heads=2, bidirectional=False)
    full = bias.attn_bias(10, 10, 0)  # (1, H, 10, 10)
    last_rows = bias.attn_bias(3, 10, 7)  # the three newest queries of a cached step
    assert full.shape == (1, 2, 10, 10) and last_rows.shape == (1, 2, 3, 10)
    torch.testing.assert_close(last_rows, full[:, :, 7:])


# --- relative: ALiBi ----------------------------------------------------------------
def reference_slopes(n):
    """The paper's reference code (Press et al. 2022, github.com/ofirpress/attention_with_linear_biases)."""

    def get_slopes_power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return get_slopes_power_of_2(closest_power_of_2) + reference_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2]


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64])
def test_alibi_slopes_are_the_papers_geometric_sequence(n):
    slopes = alibi_slopes(n).double()
    ratio = 2.0 ** (-8 / n)
    expected = torch.tensor([ratio ** (h + 1) for h in range(n)], dtype=torch.float64)  # start = ratio = 2^(-8/n)
    torch.testing.assert_close(slopes, expected, rtol=1e-6, atol=0)
    if n == 8:
        torch.testing.assert_close(slopes, torch.tensor([1 / 2**k for k in range(1, 9)], dtype=torch.float64))


@pytest.mark.parametrize("n", list(range(1, 41)) + [96, 112])
def test_alibi_slopes_follow_the_reference_rule_for_any_head_count(n):
    slopes = alibi_slopes(n)
    assert slopes.shape == (n,) and (slopes > 0).all() and (slopes < 1).all()
    assert len(set(slopes.tolist())) == n  # every head sees distance at its own rate
    torch.testing.assert_close(slopes, torch.tensor(reference_slopes(n), dtype=torch.float32))


@pytest.mark.parametrize("n", [3, 6, 12, 112])
def test_alibi_slopes_match_bloom(n):
    bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    torch.testing.assert_close(alibi_slopes(n), bloom._get_alibi_slopes(n, torch.device("cpu")), rtol=1e-6, atol=0)


def test_alibi_bias_is_minus_slope_times_distance():
    alibi = ALiBi(n_heads=4)
    bias = alibi.attn_bias(3, 8, 5)  # queries at 5, 6, 7; keys at 0..7
    i = torch.arange(5, 8)[:, None]
    j = torch.arange(8)[None, :]
    expected = -alibi_slopes(4)[:, None, None] * (i - j).abs()
    torch.testing.assert_close(bias[0], expected.float())


# --- rotary -------------------------------------------------------------------------
PAIRINGS = ["half", "interleaved"]


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("rotary_dim", [16, 8])
def test_rope_preserves_norms(pairing, rotary_dim):
    x = torch.randn(2, 3, 20, 16, dtype=torch.float64)
    cos, sin = rope_angles(torch.arange(100, 120), rotary_dim)
    y = apply_rotary(x, cos.double(), sin.double(), pairing)  # angles in float32, so cos^2 + sin^2 = 1 to ~1e-7
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-6, rtol=1e-6)
    if pairing == "half":  # each rotated pair keeps its own length
        r = rotary_dim // 2
        pair_norm = lambda t: t[..., :r] ** 2 + t[..., r:rotary_dim] ** 2  # noqa: E731
        torch.testing.assert_close(pair_norm(y), pair_norm(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(y[..., rotary_dim:], x[..., rotary_dim:])  # the rest passes through


@pytest.mark.parametrize("pairing", PAIRINGS)
@pytest.mark.parametrize("rotary_dim", [16, 6])
def test_rope_scores_depend_only_on_the_offset(pairing, rotary_dim):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)

    def score(m, n):
        cos, sin = rope_angles(torch.tensor([m, n]), rotary_dim)
        cos, sin = cos.double(), sin.double()
        qm = apply_rotary(q.expand(2, 16), cos, sin, pairing)[0]  # query at position m
        kn = apply_rotary(k.expand(2, 16), cos, sin, pairing)[1]  # key at position n
        return float(qm @ kn)

    for m, n in [(5, 2), (9, 9), (3, 11)]:
        base = score(m, n)
        for shift in (1, 17, 250):
            assert score(m + shift, n + shift) == pytest.approx(base, abs=1e-4)  # float32 angles
    assert abs(score(5, 2) - score(6, 2)) > 1e-2  # but it does see the offset


@pytest.mark.parametrize("rotary_dim", [12, 8])
def test_rope_pairings_give_equal_scores_after_the_permutation(rotary_dim):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 2, 10, 12, generator=g)
    k = torch.randn(1, 2, 10, 12, generator=g)
    cos, sin = rope_angles(torch.arange(10), rotary_dim)
    perm = rope_pairing_permutation(12, rotary_dim)
    rq, rk = apply_rotary(q, cos, sin, "interleaved"), apply_rotary(k, cos, sin, "interleaved")
    hq, hk = apply_rotary(q[..., perm], cos, sin, "half"), apply_rotary(k[..., perm], cos, sin, "half")
    torch.testing.assert_close(hq, rq[..., perm])
    torch.testing.assert_close(hq @ hk.transpose(-2, -1), rq @ rk.transpose(-2, -1), atol=1e-5, rtol=1e-5)
    plain = apply_rotary(q, cos, sin, "half") @ apply_rotary(k, cos, sin, "half").transpose(-2, -1)
    assert not torch.allclose(plain, rq @ rk.transpose(-2, -1), atol=1e-3)  # without it, they differ


def test_rope_pairing_is_a_model_option():
    config = ModelConfig(vocab_size=11, d_model=32, n_heads=2, n_layers=1, max_seq_len=16, position="rope")
    half = build_model(config, seed=0)
    inter = build_model(config.replace(rope_pairing="interleaved"), seed=0)
    inter.load_state_dict(half.state_dict())
    # permuting the rows of W_q and W_k (per head) turns one layout into the other
    perm = rope_pairing_permutation(16)
    rows = torch.cat([h * 16 + perm for h in range(2)])
    with torch.no_grad():
        for name in ("q_proj", "k_proj"):
            lin = getattr(inter.decoder.blocks[0].attn, name)
            inverse = torch.argsort(rows)
            lin.weight.copy_(lin.weight[inverse])
            lin.bias.copy_(lin.bias[inverse])
    ids = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(inter(ids), half(ids), atol=1e-5, rtol=1e-5)


# --- in a model ---------------------------------------------------------------------
@pytest.mark.parametrize("position", POSITIONS)
def test_cached_generation_keeps_positions_right(position):
    """Prompt, then one token at a time through the KV cache == one full pass, for every encoding."""
    config = ModelConfig(vocab_size=13, d_model=32, n_heads=4, n_layers=2, max_seq_len=24, position=position, init_std=0.3)
    model = build_model(config, seed=0).eval()
    ids = torch.randint(0, 13, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        steps = [model(ids[:, :7], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    if position != "none":  # the test can fail: forget the offset (new tokens at position 0) and logits change
        stack_forward = model.decoder.forward
        model.decoder.forward = lambda h, offset=0, **kw: stack_forward(h, offset=0, **kw)
        with torch.no_grad():
            cache = model.new_cache()
            steps = [model(ids[:, :7], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(7, 20)]
        assert not torch.allclose(torch.cat(steps, dim=1)[:, 7:], full[:, 7:], atol=1e-3)


@pytest.mark.parametrize("position", [p for p in POSITIONS if p != "learned"])
def test_cached_generation_past_the_training_length(position):
    config = ModelConfig(vocab_size=13, d_model=32, n_heads=4, n_layers=1, max_seq_len=8, position=position, init_std=0.3)
    model = build_model(config, seed=0).eval()
    ids = torch.randint(0, 13, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids, extrapolate=True)
        cache = model.new_cache()
        steps = [model(ids[:, :4], cache=cache)] + [model(ids[:, t : t + 1], cache=cache, extrapolate=True) for t in range(4, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("position", POSITIONS)
def test_every_encoding_works_in_every_model(position):
    ids = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(0))
    for arch, mask in [("decoder", "causal"), ("decoder", "prefix"), ("encoder_decoder", "causal")]:
        config = ModelConfig(vocab_size=13, d_model=32, n_heads=4, n_layers=1, max_seq_len=16, position=position, arch=arch, mask=mask)
        model = build_model(config, seed=0)
        if arch == "encoder_decoder":
            out = model(ids, ids)
        else:
            out = model(ids, prefix_len=4) if mask == "prefix" else model(ids)
        assert out.shape == (2, 10, 13) and torch.isfinite(out).all()


def test_without_positions_attention_is_permutation_equivariant():
    """The reason position encodings exist: a bidirectional stack without them cannot tell orders apart."""
    config = ModelConfig(vocab_size=13, d_model=32, n_heads=4, n_layers=2, max_seq_len=16, arch="encoder_decoder")
    ids = torch.randint(0, 13, (1, 10), generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    for position, equivariant in [("none", True), ("sinusoidal", False), ("rope", False), ("alibi", False)]:
        model = build_model(config.replace(position=position), seed=0).eval()
        with torch.no_grad():
            same = torch.allclose(model.encode(ids[:, perm]), model.encode(ids)[:, perm], atol=1e-5)
        assert same == equivariant, position
