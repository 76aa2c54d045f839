"""The fused paths (ModelConfig.fused_kernels) compute the same functions as the formulas."""

import pytest
import torch

from llmcourse import build_model
from llmcourse.ffn import FFN_KINDS, FeedForward
from llmcourse.norms import LayerNorm, RMSNorm


@pytest.mark.parametrize("make", [lambda f: LayerNorm(48, fused=f), lambda f: LayerNorm(48, bias=False, fused=f),
                                  lambda f: RMSNorm(48, fused=f)])
def test_fused_norms_equal_formulas_with_gradients(make):
    torch.manual_seed(0)
    formula, fused = make(False), make(True)
    with torch.no_grad():
        formula.weight.uniform_(0.5, 1.5)
    fused.load_state_dict(formula.state_dict())
    x = torch.randn(3, 7, 48, requires_grad=True)
    y1, y2 = formula(x), fused(x)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(y1.square().sum(), [x, formula.weight])
    g2 = torch.autograd.grad(y2.square().sum(), [x, fused.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", sorted(FFN_KINDS))
def test_fused_feed_forward_equals_formula(kind):
    torch.manual_seed(0)
    formula, fused = FeedForward(16, 40, kind, fused=False), FeedForward(16, 40, kind, fused=True)
    fused.load_state_dict(formula.state_dict())
    x = torch.randn(4, 16, requires_grad=True)
    y1, y2 = formula(x), fused(x)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.autograd.grad(y1.sum(), x)[0], torch.autograd.grad(y2.sum(), x)[0], atol=1e-5, rtol=1e-5)


def test_whole_model_is_the_same_function_either_way(tiny_config):
    fast = build_model(tiny_config.replace(norm="rmsnorm", ffn="swiglu"), seed=0)
    slow = build_model(tiny_config.replace(norm="rmsnorm", ffn="swiglu", fused_kernels=False), seed=0)
    slow.load_state_dict(fast.state_dict())
    ids = torch.randint(0, tiny_config.vocab_size, (2, 16))
    torch.testing.assert_close(fast(ids), slow(ids), atol=1e-5, rtol=1e-5)
