"""The two bugs the wave-2 review found: parallel residual without cross-attention, norms narrowing float64."""

import itertools

import pytest
import torch

from llmcourse.config import NORM_PLACEMENTS, ModelConfig
from llmcourse.models import build_model
from llmcourse.norms import LayerNorm, RMSNorm


def _accepted_combinations():
    for placement, parallel in itertools.product(NORM_PLACEMENTS, (False, True)):
        try:
            cfg = ModelConfig(
                vocab_size=31, d_model=16, n_heads=2, n_layers=2, max_seq_len=12, arch="encoder_decoder",
                norm_placement=placement, parallel_residual=parallel,
            )
        except ValueError:
            continue
        yield placement, parallel, cfg


def test_some_parallel_encoder_decoder_is_accepted():
    assert any(parallel for _, parallel, _ in _accepted_combinations())


@pytest.mark.parametrize("placement,parallel,cfg", list(_accepted_combinations()), ids=lambda v: str(v)[:12])
def test_encoder_decoder_logits_depend_on_the_source(placement, parallel, cfg):
    model = build_model(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    src_a = torch.randint(0, 31, (2, 9), generator=g)
    src_b = torch.randint(0, 31, (2, 9), generator=g)
    tgt = torch.randint(0, 31, (2, 5), generator=g)
    with torch.no_grad():
        diff = (model(src_a, tgt) - model(src_b, tgt)).abs().max()
    assert diff > 1e-4, f"{placement}, parallel={parallel}: the decoder ignores the source"


def test_parallel_cross_attention_is_a_third_branch():
    cfg = ModelConfig(vocab_size=31, d_model=16, n_heads=2, n_layers=1, max_seq_len=12, arch="encoder_decoder",
                      parallel_residual=True)
    block = build_model(cfg, seed=0).decoder.blocks[0].eval()
    x, ctx = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    expected = (x + block.attn(block.attn_norm(x), causal=True) + block.ffn(block.ffn_norm(x))
                + block.cross_attn(block.cross_norm(x), context=ctx))
    torch.testing.assert_close(block(x, causal=True, context=ctx), expected)


@pytest.mark.parametrize("fused", [False, True])
def test_rmsnorm_float64_equals_torch_to_1e12(fused):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32, dtype=torch.float64, requires_grad=True)
    ours = RMSNorm(32, eps=1e-6, fused=fused).double()
    ref = torch.nn.RMSNorm(32, eps=1e-6).double()
    with torch.no_grad():
        ours.weight.copy_(torch.randn(32))
        ref.weight.copy_(ours.weight)
    y, y_ref = ours(x), ref(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    (dx_ref,) = torch.autograd.grad(y_ref, x, g)
    torch.testing.assert_close(dx, dx_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("fused", [False, True])
def test_layernorm_float64_equals_torch_to_1e12(fused):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32, dtype=torch.float64, requires_grad=True)
    ours = LayerNorm(32, eps=1e-5, fused=fused).double()
    ref = torch.nn.LayerNorm(32, eps=1e-5).double()
    with torch.no_grad():
        ours.weight.copy_(torch.randn(32))
        ours.bias.copy_(torch.randn(32))
        ref.weight.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    y, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(y_ref, x, g)[0], atol=1e-12, rtol=0)


def test_norms_still_compute_half_precision_in_float32():
    x = torch.randn(4, 16).to(torch.bfloat16)
    for norm in (RMSNorm(16), LayerNorm(16)):
        y = norm(x)
        assert y.dtype == torch.bfloat16
        expected = norm(x.float()).to(torch.bfloat16)
        torch.testing.assert_close(y, expected, atol=0, rtol=0)


def test_float64_model_gradcheck_through_norms():
    cfg = ModelConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=1, max_seq_len=6, norm="rmsnorm")
    model = build_model(cfg, seed=0).double()
    h = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model.decoder(t, causal=True), (h,), atol=1e-8)
