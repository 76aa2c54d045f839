"""The attention-kernel registry: capability flags, sparse patterns without a dense bias, sliding window, QK-norm."""

import pytest
import torch

from llmcourse import masks
from llmcourse.attention import get_kernel
from llmcourse.config import ModelConfig
from llmcourse.generate import generate
from llmcourse.kernels import KERNELS, KernelSpec, kernel_spec, register_kernel
from llmcourse.models import build_model

V = 23


def _cfg(**kw):
    base = dict(vocab_size=V, d_model=32, n_heads=4, n_layers=2, max_seq_len=64)
    base.update(kw)
    return ModelConfig(**base)


def _ids(T=32, B=2):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))


def test_every_registered_kernel_resolves_and_is_accepted_by_the_config():
    for name, spec in KERNELS.items():
        assert callable(get_kernel(name))
        assert spec.bias in ("any", "keys", "none")
        extra = {"attn_pattern": "window"} if spec.needs_full_blocks else {}
        _cfg(attn_impl=name, **extra)


def test_capability_flags_drive_the_config_checks():
    with pytest.raises(ValueError, match="position='alibi'"):
        _cfg(attn_impl="performer", position="alibi")
    with pytest.raises(ValueError, match="mask='prefix'"):
        _cfg(attn_impl="performer", mask="prefix")
    with pytest.raises(ValueError, match="sparse pattern"):
        _cfg(attn_impl="sparse")
    with pytest.raises(ValueError, match="not a known kernel"):
        _cfg(attn_impl="nope")


def test_a_registered_kernel_is_usable_from_the_config():
    calls = []

    def counting(q, k, v, **kw):
        calls.append(q.shape)
        return get_kernel("explicit")(q, k, v, **kw)

    import llmcourse.kernels as kernels_module

    kernels_module.counting_kernel_for_test = counting
    register_kernel(KernelSpec("counting", "llmcourse.kernels:counting_kernel_for_test", "test kernel"))
    try:
        model = build_model(_cfg(attn_impl="counting"), seed=0).eval()
        ref = build_model(_cfg(), seed=0).eval()
        torch.testing.assert_close(model(_ids()), ref(_ids()))
        assert len(calls) == 2
    finally:
        KERNELS.pop("counting")


@pytest.mark.parametrize("pattern", ["strided", "fixed", "bigbird", "window"])
@pytest.mark.parametrize("impl", ["flash", "sparse"])
def test_sparse_patterns_reach_the_kernels_without_a_dense_bias(monkeypatch, pattern, impl):
    cfg = _cfg(attn_pattern=pattern, attn_block=8)
    ref = build_model(cfg, seed=0).eval()(_ids())
    model = build_model(cfg.replace(attn_impl=impl), seed=0).eval()

    def no_dense(*a, **k):
        raise AssertionError("a dense T x S pattern bias was built")

    monkeypatch.setattr(masks.Pattern, "bias", no_dense)
    monkeypatch.setattr(masks, "sparse_bias", no_dense)
    torch.testing.assert_close(model(_ids()), ref, atol=2e-5, rtol=1e-5)


def test_sparse_kernel_falls_back_for_cached_decoding():
    cfg = _cfg(attn_pattern="window", attn_block=8)
    ids = _ids(T=8)
    a = generate(build_model(cfg.replace(attn_impl="sparse"), seed=0), ids, 10, greedy=True)
    b = generate(build_model(cfg, seed=0), ids, 10, greedy=True, use_cache=False)
    assert a.tolist() == b.tolist()


@pytest.mark.parametrize("position", ["rope", "alibi", "t5"])
def test_sliding_window_cache_keeps_only_the_window(position):
    W = 6
    cfg = _cfg(sliding_window=W, position=position, max_seq_len=24)
    model = build_model(cfg, seed=1).eval()
    ids = _ids(T=5, B=1)
    cache = model.new_cache()
    with torch.no_grad():
        logits = [model(ids, cache=cache)[:, -1]]
        seq = ids
        for _ in range(15):
            nxt = logits[-1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
            logits.append(model(nxt, cache=cache)[:, -1])
            assert cache[0].self_attn.length <= W
        assert cache[0].self_attn.seen == seq.shape[1]
        full = model(seq, extrapolate=True)  # no cache: the window applied as a mask
    torch.testing.assert_close(torch.stack(logits[1:], 1), full[:, 5:], atol=2e-5, rtol=1e-5)


def test_sliding_window_equals_the_window_pattern():
    a = build_model(_cfg(sliding_window=5), seed=0).eval()
    b = build_model(_cfg(attn_pattern="window", attn_block=5), seed=0).eval()
    torch.testing.assert_close(a(_ids()), b(_ids()))


def test_sliding_window_excludes_other_patterns():
    with pytest.raises(ValueError, match="sliding_window"):
        _cfg(sliding_window=4, attn_pattern="strided")


def test_qk_norm_normalises_each_heads_queries_and_keys():
    model = build_model(_cfg(qk_norm=True, position="none", attn_scale=1.0), seed=0).eval()
    attn = model.decoder.blocks[0].attn
    assert attn.q_norm is not None and attn.k_norm is not None
    x = torch.randn(1, 5, 32)
    q = attn.q_proj(x).view(1, 5, 4, 8).transpose(1, 2)
    k = attn.k_proj(x).view(1, 5, 4, 8).transpose(1, 2)
    qn = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-5)
    kn = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + 1e-5)
    v = attn.v_proj(x).view(1, 5, 4, 8).transpose(1, 2)
    w = torch.softmax(qn @ kn.transpose(-2, -1), -1)
    expected = attn.o_proj((w @ v).transpose(1, 2).reshape(1, 5, 32))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
    plain = build_model(_cfg(position="none", attn_scale=1.0), seed=0).decoder.blocks[0].attn
    assert not torch.allclose(plain(x), expected, atol=1e-3)


def test_kernel_spec_options_come_from_the_config():
    assert kernel_spec("performer").options_from(_cfg(performer_features=16)) == {"n_features": 16}
