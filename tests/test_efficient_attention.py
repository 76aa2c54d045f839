"""FlashAttention-style tiling (exact), Performer random features (approximate), sparse patterns and their kernels."""

import math
import os

import pytest
import torch

from llmcourse import ModelConfig, build_model
from llmcourse.attention import explicit_attention
from llmcourse.benchmarks.attention import PeakTensorMemory, growth_exponent
from llmcourse.efficient_attention import (
    flash_attention,
    performer_attention,
    positive_features,
    random_projection,
    sparse_attention,
)
from llmcourse.masks import (
    MASKED,
    bigbird_random_blocks,
    causal_allowed,
    sparse_allowed,
    sparse_bias,
)


def qkv(B=2, H=3, T=37, S=37, Dh=8, seed=0, dtype=torch.float32, std=1.0):
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(B, H, n, Dh, generator=g, dtype=dtype) * std).requires_grad_() for n in (T, S, S))


# --- FlashAttention -----------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("S", [37, 50])  # S > T: queries are the last T positions, as with a KV cache
@pytest.mark.parametrize("bias_shape", [None, (1, 3, 37, "S"), (2, 1, 1, "S")])
@pytest.mark.parametrize("block_size", [8, 64])
def test_flash_forward_and_gradients_equal_explicit(causal, S, bias_shape, block_size):
    q, k, v = qkv(S=S)
    bias = None
    if bias_shape is not None:
        shape = tuple(S if d == "S" else d for d in bias_shape)
        bias = torch.randn(shape, generator=torch.Generator().manual_seed(1)).requires_grad_()
    inputs = [q, k, v] + ([bias] if bias is not None else [])
    ref = explicit_attention(q, k, v, bias=bias, causal=causal, scale=0.35)
    out = flash_attention(q, k, v, bias=bias, causal=causal, scale=0.35, block_size=block_size)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    weights = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    grads_ref = torch.autograd.grad((ref * weights).sum(), inputs)
    grads = torch.autograd.grad((out * weights).sum(), inputs)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_gradcheck_float64(causal):
    q, k, v = qkv(B=1, H=2, T=6, S=9, Dh=4, dtype=torch.float64)
    bias = torch.randn(1, 2, 6, 9, dtype=torch.float64, requires_grad=True)

    def f(q, k, v, bias):
        return flash_attention(q, k, v, bias=bias, causal=causal, scale=0.5, block_size=4)

    assert torch.autograd.gradcheck(f, (q, k, v, bias))


def test_flash_dropout_is_reproducible_and_its_backward_is_consistent():
    q, k, v = qkv(B=1, H=2, T=6, S=6, Dh=4, dtype=torch.float64)

    def f(q, k, v):
        return flash_attention(q, k, v, causal=True, scale=0.5, block_size=4, dropout_p=0.3, training=True, dropout_seed=7)

    assert torch.equal(f(q, k, v), f(q, k, v))
    assert not torch.allclose(f(q, k, v), flash_attention(q, k, v, causal=True, scale=0.5, block_size=4))
    assert torch.autograd.gradcheck(f, (q, k, v))
    # no dropout outside training
    torch.testing.assert_close(
        flash_attention(q, k, v, causal=True, scale=0.5, dropout_p=0.3, training=False),
        explicit_attention(q, k, v, causal=True, scale=0.5),
    )


def test_flash_never_holds_a_t_by_t_matrix():
    T, block = 1024, 64
    q, k, v = qkv(B=1, H=2, T=T, S=T, Dh=16)
    with PeakTensorMemory() as mem:
        out = flash_attention(q, k, v, causal=True, scale=0.25, block_size=block)
        out.backward(torch.ones_like(out))
    t_by_t = 2 * T * T * 4  # one float32 T x T matrix per head
    tile = 2 * T * block * 4  # one (T, block) tile of scores per head
    assert mem.peak < 10 * tile < t_by_t
    with PeakTensorMemory() as mem_explicit:
        out = explicit_attention(q, k, v, causal=True, scale=0.25)
        out.backward(torch.ones_like(out))
    assert mem_explicit.peak > t_by_t


def test_flash_memory_grows_linearly_and_explicit_quadratically():
    def peak(kernel, T):
        q, k, v = qkv(B=1, H=1, T=T, S=T, Dh=16)
        with PeakTensorMemory() as mem:
            out = kernel(q, k, v)
            out.backward(torch.ones_like(out))
        return mem.peak

    lengths = [256, 512, 1024]
    flash = [peak(lambda q, k, v: flash_attention(q, k, v, causal=True, scale=0.25, block_size=64), T) for T in lengths]
    full = [peak(lambda q, k, v: explicit_attention(q, k, v, causal=True, scale=0.25), T) for T in lengths]
    assert abs(growth_exponent(lengths, flash) - 1.0) < 0.15
    assert abs(growth_exponent(lengths, full) - 2.0) < 0.15


def test_peak_memory_tracker_counts_a_known_allocation():
    with PeakTensorMemory() as mem:
        a = torch.ones(1000)  # 4000 bytes
        b = a.view(10, 100)  # a view: no new storage
        del a, b
        c = torch.zeros(250)  # 1000 bytes, after the first was freed
    assert mem.peak == 4000 and mem.live == 1000
    del c


# --- Performer / RFA ----------------------------------------------------------------
def test_orthogonal_features_are_orthogonal_within_a_block():
    w = random_projection(16, 8, seed=0)
    directions = w / w.norm(dim=1, keepdim=True)
    for block in (directions[:8], directions[8:]):
        torch.testing.assert_close(block @ block.T, torch.eye(8, dtype=torch.float64), atol=1e-10, rtol=0)
    assert torch.equal(random_projection(16, 8, seed=0), w)
    assert not torch.equal(random_projection(16, 8, seed=1), w)


def test_positive_features_estimate_the_softmax_kernel():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 1, 1, 4, generator=g, dtype=torch.float64) * 0.4, torch.randn(1, 1, 1, 4, generator=g, dtype=torch.float64) * 0.4
    w = random_projection(20000, 4, seed=3, orthogonal=False)
    fx = torch.exp(x @ w.T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(w.shape[0])
    fy = torch.exp(y @ w.T - (y * y).sum(-1, keepdim=True) / 2) / math.sqrt(w.shape[0])
    estimate = float((fx * fy).sum())
    assert abs(estimate / math.exp(float((x * y).sum())) - 1) < 0.02
    assert bool((positive_features(x, w, is_query=True) > 0).all())


@pytest.mark.parametrize("causal", [False, True])
def test_performer_error_falls_with_more_features(causal):
    q, k, v = qkv(B=1, H=4, T=128, S=128, Dh=16, std=0.5)
    exact = explicit_attention(q, k, v, causal=causal, scale=0.25)

    @torch.no_grad()
    def error(m):
        errs = []
        for seed in range(3):
            approx = performer_attention(q, k, v, causal=causal, scale=0.25, n_features=m, feature_seed=seed)
            errs.append(float((approx - exact).norm() / exact.norm()))
        return sum(errs) / len(errs)

    e = [error(m) for m in (8, 64, 512)]
    assert e[0] > e[1] > e[2]
    assert e[2] < 0.5 * e[0]


def test_performer_causal_is_causal_and_matches_non_causal_on_the_last_row():
    q, k, v = qkv(B=1, H=2, T=50, S=50, Dh=8)
    out = performer_attention(q, k, v, causal=True, scale=0.35, chunk_size=16)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[..., 30:, :] += 1.0
    v2[..., 30:, :] -= 1.0
    out2 = performer_attention(q, k2, v2, causal=True, scale=0.35, chunk_size=16)
    torch.testing.assert_close(out2[..., :30, :], out[..., :30, :], atol=1e-5, rtol=1e-5)
    full = performer_attention(q, k, v, causal=False, scale=0.35)
    torch.testing.assert_close(out[..., -1, :], full[..., -1, :], atol=1e-5, rtol=1e-5)
    # the queries may be the last T of S positions (cached decoding)
    tail = performer_attention(q[..., 40:, :], k, v, causal=True, scale=0.35, chunk_size=16)
    torch.testing.assert_close(tail, out[..., 40:, :], atol=1e-5, rtol=1e-5)


def test_performer_chunk_size_does_not_change_the_result():
    q, k, v = qkv(B=1, H=2, T=45, S=45, Dh=8)
    a = performer_attention(q, k, v, causal=True, scale=0.35, chunk_size=7)
    b = performer_attention(q, k, v, causal=True, scale=0.35, chunk_size=64)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rfa_gate_equals_the_sequential_recurrence():
    q, k, v = qkv(B=1, H=2, T=40, S=40, Dh=8, dtype=torch.float64)
    gate = torch.sigmoid(torch.randn(1, 2, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    out = performer_attention(q, k, v, causal=True, scale=0.35, n_features=16, gate=gate, chunk_size=8)
    w = random_projection(16, 8)
    qf = positive_features(q * math.sqrt(0.35), w, is_query=True)
    kf = positive_features(k * math.sqrt(0.35), w, is_query=False)
    state, norm, rows = torch.zeros(1, 2, 16, 8, dtype=torch.float64), torch.zeros(1, 2, 16, dtype=torch.float64), []
    for t in range(40):
        g = gate[..., t, None]
        state = g[..., None] * state + (1 - g)[..., None] * kf[..., t, :, None] * v[..., t, None, :]
        norm = g * norm + (1 - g) * kf[..., t, :]
        rows.append((qf[..., t, None, :] @ state)[..., 0, :] / (qf[..., t, :] * norm).sum(-1, keepdim=True))
    torch.testing.assert_close(out, torch.stack(rows, -2), atol=1e-10, rtol=1e-10)


def test_performer_key_only_bias_hides_padding_and_other_biases_are_refused():
    q, k, v = qkv(B=1, H=2, T=20, S=20, Dh=8)
    pad = torch.zeros(1, 1, 1, 20)
    pad[..., 15:] = MASKED
    hidden = performer_attention(q, k, v, bias=pad, scale=0.35)
    cropped = performer_attention(q, k[..., :15, :], v[..., :15, :], scale=0.35)
    torch.testing.assert_close(hidden, cropped, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="key-only"):
        performer_attention(q, k, v, bias=torch.zeros(1, 1, 20, 20), scale=0.35)
    with pytest.raises(ValueError, match="performer"):
        ModelConfig(attn_impl="performer", attn_pattern="window")


# --- sparse patterns --------------------------------------------------------------
def test_window_pattern_counts():
    a = sparse_allowed("window", 40, block=6)
    assert a.sum(1).tolist() == [min(i + 1, 6) for i in range(40)]
    b = sparse_allowed("window", 40, block=6, causal=False)
    assert torch.equal(b, b.T) and b.sum(1).tolist() == [min(i, 5) + min(39 - i, 5) + 1 for i in range(40)]


def test_strided_pattern_structure_and_counts():
    L, T = 8, 64
    a = sparse_allowed("strided", T, block=L)
    assert a.sum(1).tolist() == [min(i + 1, L) + i // L for i in range(T)]  # the previous L, then every L-th
    i, j = 37, 37 - 3 * L
    assert a[i, j] and not a[i, j - 1] and a[i, i - L + 1] and not a[i, i - L - 1]


def test_fixed_pattern_structure_and_counts():
    L, c, T = 8, 2, 64
    a = sparse_allowed("fixed", T, block=L, summary=c)
    assert a.sum(1).tolist() == [i % L + 1 + c * (i // L) for i in range(T)]
    summary_columns = [j for j in range(T) if j % L >= L - c]
    assert a[-1, summary_columns].all()


def test_bigbird_pattern_structure():
    L, T = 4, 48
    a = sparse_allowed("bigbird", T, block=L, global_blocks=1, random_blocks=1, causal=False)
    assert a[:L].all() and a[:, :L].all()  # global block: sees and is seen by everything
    blocks = a.view(T // L, L, T // L, L).any(-1).any(1)  # (query block, key block)
    for b in range(1, T // L):
        window = {x for x in (b - 1, b, b + 1) if 0 <= x < T // L}
        assert set(blocks[b].nonzero().flatten().tolist()) >= window | {0}
        assert blocks[b].sum() == len(window | {0}) + 1  # exactly one random block beyond window and global
    assert torch.equal(a, sparse_allowed("bigbird", T, block=L, causal=False))  # the seed fixes the draw
    assert not torch.equal(a, sparse_allowed("bigbird", T, block=L, causal=False, seed=1))


def test_bigbird_causal_random_blocks_do_not_depend_on_length():
    short, long = bigbird_random_blocks(8, 2, seed=0), bigbird_random_blocks(20, 2, seed=0)
    assert torch.equal(short, long[:8])
    assert all(x < b - 1 for b in range(20) for x in long[b].tolist() if x >= 0)


@pytest.mark.parametrize("pattern", ["strided", "fixed", "bigbird", "window"])
def test_causal_patterns_are_lower_triangular_with_the_diagonal(pattern):
    a = sparse_allowed(pattern, 64, block=8)
    assert not (a & ~causal_allowed(64)).any()
    assert a.diagonal().all()
    bias = sparse_bias(pattern, 64, block=8)
    assert bias.shape == (1, 1, 64, 64) and set(bias.unique().tolist()) == {MASKED, 0.0}


def test_patterns_for_cached_queries_are_the_last_rows():
    full = sparse_allowed("bigbird", 48, block=4)
    assert torch.equal(sparse_allowed("bigbird", 5, 48, block=4), full[-5:])


@pytest.mark.parametrize("pattern,causal", [("strided", True), ("fixed", True), ("bigbird", True), ("bigbird", False),
                                            ("window", True), ("window", False)])
def test_sparse_kernels_equal_explicit_with_the_pattern_bias(pattern, causal):
    q, k, v = qkv(B=2, H=2, T=64, S=64, Dh=8)
    bias = sparse_bias(pattern, 64, block=8, causal=causal)
    ref = explicit_attention(q, k, v, bias=bias, scale=0.35)
    out = sparse_attention(q, k, v, pattern=pattern, block=8, causal=causal, scale=0.35)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, explicit_attention(q, k, v, causal=causal, scale=0.35), atol=1e-3)
    g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    g = torch.autograd.grad(out.square().sum(), (q, k, v))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sparse_memory_follows_the_pattern():
    def peak(T):
        q, k, v = qkv(B=1, H=1, T=T, S=T, Dh=16)
        with PeakTensorMemory() as mem:
            sparse_attention(q, k, v, pattern="bigbird", block=32, scale=0.25).sum().backward()
        return mem.peak

    lengths = [256, 512, 1024]
    assert growth_exponent(lengths, [peak(T) for T in lengths]) < 1.15


def test_a_window_model_cannot_see_beyond_its_receptive_field():
    cfg = ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=2, max_seq_len=40, attn_pattern="window", attn_block=5)
    model = build_model(cfg, seed=0).eval()
    a = torch.randint(0, 20, (1, 40), generator=torch.Generator().manual_seed(0))
    far, near = a.clone(), a.clone()
    far[0, 39 - 2 * 4 - 1] = (far[0, 39 - 2 * 4 - 1] + 1) % 20  # 9 back: beyond 2 layers x (window 5 - 1)
    near[0, 39 - 2 * 4] = (near[0, 39 - 2 * 4] + 1) % 20  # 8 back: just inside
    with torch.no_grad():
        base, lf, ln = model(a)[0, -1], model(far)[0, -1], model(near)[0, -1]
    torch.testing.assert_close(lf, base, atol=0, rtol=0)
    assert not torch.allclose(ln, base)


@pytest.mark.parametrize("pattern", ["strided", "fixed", "bigbird", "window"])
def test_sparse_models_stay_causal_and_kernels_agree(pattern):
    base = ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=2, max_seq_len=32, attn_pattern=pattern, attn_block=8)
    ids = torch.randint(0, 20, (2, 32), generator=torch.Generator().manual_seed(0))
    ref = build_model(base, seed=0)(ids)
    flash = build_model(base.replace(attn_impl="flash"), seed=0)(ids)
    torch.testing.assert_close(flash, ref, atol=1e-5, rtol=1e-5)
    changed = ids.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 20
    torch.testing.assert_close(build_model(base, seed=0)(changed)[:, :20], ref[:, :20], atol=1e-6, rtol=1e-6)


def test_values_may_be_wider_or_narrower_than_keys():
    q, k, _ = qkv(B=1, H=2, T=32, S=32, Dh=8)
    v = torch.randn(1, 2, 32, 5)
    ref = explicit_attention(q, k, v, causal=True, scale=0.35)
    torch.testing.assert_close(flash_attention(q, k, v, causal=True, scale=0.35, block_size=8), ref, atol=1e-5, rtol=1e-5)
    assert performer_attention(q, k, v, causal=True, scale=0.35).shape == (1, 2, 32, 5)
    for pattern in ("strided", "fixed", "bigbird"):
        out = sparse_attention(q, k, v, pattern=pattern, block=8, scale=0.35)
        torch.testing.assert_close(out, explicit_attention(q, k, v, bias=sparse_bias(pattern, 32, block=8), scale=0.35), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="the resident-set cross-check reads Linux's /proc")
def test_resident_set_cross_check_sees_the_step_from_a_large_parent():
    # A child of a large process must still see its own step: getrusage's ru_maxrss would
    # start at the parent's peak (Linux carries it across fork + exec) and report no growth.
    from llmcourse.benchmarks.attention import Shape, rss_check

    ballast = torch.ones(300 * 2**20 // 4)  # 300 MiB resident in this (parent) process, above the child's step
    T, shape = 1024, Shape(1, 4, 32)
    q, k, v = (torch.randn(1, 4, T, 32).requires_grad_() for _ in range(3))
    with PeakTensorMemory() as mem:
        explicit_attention(q, k, v, causal=True, scale=32**-0.5).sum().backward()
    grown = rss_check(["explicit"], T, shape)["explicit"]
    assert float(ballast[-1]) == 1.0
    assert 0.8 * mem.peak < grown < 3 * mem.peak + 64 * 2**20


def test_attention_benchmark_quick_mode_runs_and_reports_linear_flash_memory(capsys):
    from llmcourse.benchmarks.__main__ import main

    assert main(["attention", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "time / explicit time (same run)" in out and "peak memory / explicit peak memory (same run)" in out
    exponents = out.split("growth exponents p")[1].splitlines()[2:]
    memory_p = {line.split()[0]: float(line.split()[1]) for line in exponents if line.strip()}
    assert set(memory_p) == {"explicit", "sdpa", "flash", "strided", "bigbird", "performer"}
    assert abs(memory_p["flash"] - 1.0) < 0.15 and abs(memory_p["explicit"] - 2.0) < 0.15
