"""The one attention path: explicit vs fused kernels, heads (MHA, GQA, MQA), the KV cache, biases on or off."""

import pytest
import torch

from llmcourse import ModelConfig, build_model, generate
from llmcourse.attention import KVCache, MultiHeadAttention, explicit_attention, get_kernel, repeat_kv, sdpa_attention
from llmcourse.efficient_attention import KERNELS
from llmcourse.masks import padding_bias


def qkv(B=2, H=4, T=12, S=12, Dh=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, n, Dh, generator=g) for n in (T, S, S))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("S", [12, 20])  # S > T: the queries are the last T positions (a KV cache)
@pytest.mark.parametrize("with_bias", [False, True])
def test_explicit_and_sdpa_agree(causal, S, with_bias):
    q, k, v = qkv(T=12, S=S)
    bias = torch.randn(1, 4, 12, S) if with_bias else None
    ref = explicit_attention(q, k, v, bias=bias, causal=causal, scale=0.3)
    fused = sdpa_attention(q, k, v, bias=bias, causal=causal, scale=0.3)
    torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)


def test_explicit_matches_the_formula():
    q, k, v = qkv(B=1, H=1, T=5, S=5, Dh=4)
    weights = torch.softmax((q @ k.transpose(-2, -1)) * 0.5 + torch.full((5, 5), float("-inf")).triu(1), -1)
    torch.testing.assert_close(explicit_attention(q, k, v, causal=True, scale=0.5), weights @ v)


def test_every_kernel_is_registered():
    assert set(KERNELS) == {"flash", "performer"}
    for impl in ("explicit", "sdpa", "flash", "performer"):
        assert callable(get_kernel(impl))
    with pytest.raises(ValueError, match="not a known kernel"):
        get_kernel("nope")


def test_repeat_kv_shares_each_kv_head_with_its_group():
    x = torch.randn(2, 2, 5, 3)
    y = repeat_kv(x, 3)
    assert y.shape == (2, 6, 5, 3)
    for h in range(6):
        assert torch.equal(y[:, h], x[:, h // 3])


def test_gqa_with_as_many_kv_heads_as_heads_is_mha():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4)
    gqa = MultiHeadAttention(32, 4, n_kv_heads=4)
    gqa.load_state_dict(mha.state_dict(), strict=True)
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(gqa(x, causal=True), mha(x, causal=True), rtol=0, atol=0)


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_gqa_equals_mha_with_kv_weights_repeated_per_group(n_kv_heads):
    torch.manual_seed(0)
    H, Dh, D = 4, 8, 32
    gqa = MultiHeadAttention(D, H, n_kv_heads=n_kv_heads)
    mha = MultiHeadAttention(D, H)
    group = H // n_kv_heads
    state = gqa.state_dict()
    for name in ("k_proj", "v_proj"):
        w = state[f"{name}.weight"].view(n_kv_heads, Dh, D)
        state[f"{name}.weight"] = w.repeat_interleave(group, 0).reshape(H * Dh, D)
        b = state[f"{name}.bias"].view(n_kv_heads, Dh)
        state[f"{name}.bias"] = b.repeat_interleave(group, 0).reshape(H * Dh)
    mha.load_state_dict(state, strict=True)
    x = torch.randn(2, 9, D)
    torch.testing.assert_close(gqa(x, causal=True), mha(x, causal=True), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("n_kv_heads,kind", [(4, "multi-head"), (2, "grouped-query"), (1, "multi-query")])
def test_mqa_gqa_shapes_and_cache_size(n_kv_heads, kind):
    B, T, D, H = 3, 6, 32, 4
    attn = MultiHeadAttention(D, H, n_kv_heads=n_kv_heads)
    Dh = D // H
    assert attn.q_proj.weight.shape == (H * Dh, D)
    assert attn.k_proj.weight.shape == attn.v_proj.weight.shape == (n_kv_heads * Dh, D)
    cache = KVCache()
    out = attn(torch.randn(B, T, D), causal=True, cache=cache)
    assert out.shape == (B, T, D)
    assert cache.k.shape == cache.v.shape == (B, n_kv_heads, T, Dh)
    assert cache.nbytes() == 2 * B * n_kv_heads * T * Dh * 4  # float32: keys and values
    attn(torch.randn(B, 1, D), causal=True, cache=cache)
    assert cache.length == T + 1


@pytest.mark.parametrize("impl", ["explicit", "sdpa", "flash", "performer"])
@pytest.mark.parametrize("n_kv_heads", [None, 2, 1])
def test_kv_cache_decoding_gives_the_same_tokens_as_recomputation(impl, n_kv_heads):
    cfg = ModelConfig(vocab_size=23, d_model=32, n_heads=4, n_kv_heads=n_kv_heads, n_layers=2, max_seq_len=40, attn_impl=impl)
    model = build_model(cfg, seed=0)
    prompt = torch.randint(0, 23, (2, 5), generator=torch.Generator().manual_seed(1))
    cached = generate(model, prompt, 30, greedy=True, use_cache=True)
    recomputed = generate(model, prompt, 30, greedy=True, use_cache=False)
    assert torch.equal(cached, recomputed)
    # and the logits of the last step agree, not only the argmax
    cache = model.new_cache()
    with torch.no_grad():
        model(cached[:, :-1], cache=cache)
        step = model(cached[:, -1:], cache=cache)[:, -1]
        full = model(cached)[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_cache_with_rope_and_padding_matches_recomputation():
    cfg = ModelConfig(vocab_size=23, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, max_seq_len=40, position="rope")
    model = build_model(cfg, seed=0).eval()
    ids = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :3] = 0  # left padding in the second row
    with torch.no_grad():
        full = model(ids, attention_mask=mask)
        cache = model.new_cache()
        first = model(ids[:, :8], attention_mask=mask[:, :8], cache=cache)
        rest = model(ids[:, 8:], attention_mask=mask, cache=cache)
    real = mask.bool()  # a padding query sees no real key; its output is arbitrary and unused
    torch.testing.assert_close(torch.cat([first, rest], 1)[real], full[real], atol=1e-5, rtol=1e-5)
    assert padding_bias(mask).shape == (2, 1, 1, 12)


def _bias_params(model):
    return [name for name, _ in model.named_parameters() if name.endswith(".bias")]


def test_no_bias_parameters_anywhere_when_bias_is_false():
    model = build_model(ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=2, bias=False), seed=0)
    assert _bias_params(model) == []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            assert module.bias is None


def test_bias_parameters_in_every_linear_layer_and_norm_when_bias_is_true():
    model = build_model(ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=2, bias=True), seed=0)
    names = _bias_params(model)
    for part in ("q_proj", "k_proj", "v_proj", "o_proj", "attn_norm", "ffn_norm", "final_norm"):
        assert any(part in n for n in names), part
    without = build_model(ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=2, bias=False), seed=0)
    extra = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in without.parameters()) == extra


def test_norm_bias_can_differ_from_linear_bias():
    cfg = ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=1, bias=False, norm_bias=True)
    names = _bias_params(build_model(cfg, seed=0))
    assert names and all("norm" in n for n in names)


@pytest.mark.parametrize("impl", ["explicit", "sdpa", "flash", "performer"])
def test_every_kernel_is_causal_inside_the_model(impl):
    cfg = ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=2, max_seq_len=24, attn_impl=impl)
    model = build_model(cfg, seed=0).eval()
    a = torch.randint(0, 20, (1, 24), generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[:, 15:] = (b[:, 15:] + 1) % 20
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :15], lb[:, :15], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(la[:, 15:], lb[:, 15:])


@pytest.mark.parametrize("impl", ["sdpa", "flash"])
def test_exact_kernels_give_the_explicit_models_logits(impl):
    base = ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=2, max_seq_len=24, position="alibi")
    ids = torch.randint(0, 20, (2, 24), generator=torch.Generator().manual_seed(0))
    ref = build_model(base, seed=0)(ids)
    other = build_model(base.replace(attn_impl=impl), seed=0)(ids)
    torch.testing.assert_close(other, ref, atol=1e-5, rtol=1e-5)
