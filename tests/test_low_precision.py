"""Issue 18 item 5: half-precision models run, and float16 attention neither overflows nor turns masks into NaN."""

import pytest
import torch

from llmcourse import ModelConfig, build_model
from llmcourse.attention import explicit_attention, sdpa_attention
from llmcourse.efficient_attention import flash_attention
from llmcourse.masks import MASKED, allowed_from_bias, allowed_to_bias, combine, masked_value, padding_bias


def test_masked_value_is_finite_in_every_float_dtype_and_unchanged_in_float32():
    assert masked_value(torch.float32) == MASKED == -1e9
    allowed = torch.tensor([[True, False, False]])
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        bias = allowed_to_bias(allowed, dtype)
        assert torch.isfinite(bias + bias).all(), dtype  # two masks add without overflow
        assert torch.equal(allowed_from_bias(bias), allowed)


def _qkv(scale_up=1.0, T=12, dtype=torch.float16):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, T, 64, generator=g) for _ in range(3))
    return (q * scale_up).to(dtype), (k * scale_up).to(dtype), v.to(dtype)


@pytest.mark.parametrize("kernel", ["explicit", "flash"])
def test_float16_scores_do_not_overflow_before_scaling(kernel):
    q, k, v = _qkv(scale_up=100.0)  # |q . k| reaches ~1e5 > 65504 before the 1/8 scale
    fn = explicit_attention if kernel == "explicit" else lambda *a, **kw: flash_attention(*a, block_size=4, **kw)
    out = fn(q, k, v, causal=True, scale=64**-0.5)
    ref = sdpa_attention(q.float(), k.float(), v.float(), causal=True, scale=64**-0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("kernel", ["explicit", "sdpa", "flash"])
def test_float16_masks_with_a_fully_masked_tile_stay_finite(kernel):
    q, k, v = _qkv(T=12)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, :8] = 0  # the first two flash tiles of row 0 are all padding
    bias16 = padding_bias(mask).to(torch.float16)  # -1e9 becomes -inf in float16
    fns = {"explicit": explicit_attention, "sdpa": sdpa_attention,
           "flash": lambda *a, **kw: flash_attention(*a, block_size=4, **kw)}
    out = fns[kernel](q, k, v, bias=combine(bias16), causal=True, scale=64**-0.5)
    ref = explicit_attention(q.float(), k.float(), v.float(), bias=padding_bias(mask), causal=True, scale=64**-0.5)
    real = torch.zeros(2, 1, 12, dtype=torch.bool)
    real[0, :, 8:], real[1] = True, True  # rows that see at least one real key
    assert torch.isfinite(out[real.expand(2, 2, 12)]).all()
    torch.testing.assert_close(out.float()[real.expand(2, 2, 12)], ref[real.expand(2, 2, 12)], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("impl", ["explicit", "sdpa", "flash"])
def test_a_half_precision_model_runs_forward_on_cpu(dtype, impl):
    cfg = ModelConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, max_seq_len=8, attn_impl=impl)
    model = build_model(cfg, seed=0).eval()
    ids = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    with torch.no_grad():
        ref = model(ids, attention_mask=mask)
        out = model.to(dtype)(ids, attention_mask=mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float()[mask.bool()], ref[mask.bool()], atol=0.1, rtol=0.1)
