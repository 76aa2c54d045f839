"""Activations and feed-forward blocks (llmcourse/ffn.py): parity with PyTorch and Hugging Face, counting, sizing."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils.flop_counter import FlopCounterMode

from llmcourse import ModelConfig, build_model
from llmcourse.config import FFNS
from llmcourse.ffn import (
    ACTIVATIONS,
    FFN_KINDS,
    SHAZEER_KINDS,
    FeedForward,
    count_parameters,
    ffn_flops,
    ffn_param_count,
    ffn_variants,
    gelu,
    gelu_tanh,
    is_gated,
    matched_d_ff,
    relu,
    sigmoid,
    swish,
)

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _inputs(dtype=torch.float32) -> torch.Tensor:
    # a dense grid, exact zeros, and large magnitudes where tails and overflow matter
    grid = torch.linspace(-8, 8, 1601, dtype=dtype)
    extremes = torch.tensor([0.0, -0.0, 1e-7, -1e-7, 20.0, -20.0, 60.0, -60.0, 100.0, -100.0], dtype=dtype)
    return torch.cat([grid, extremes])


# --- activations vs torch.nn.functional -------------------------------------
REFERENCES = [
    ("relu", relu, F.relu),
    ("gelu", gelu, lambda x: F.gelu(x)),
    ("gelu_tanh", gelu_tanh, lambda x: F.gelu(x, approximate="tanh")),
    ("swish", swish, F.silu),
    ("sigmoid", sigmoid, torch.sigmoid),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,ours,ref", REFERENCES, ids=[r[0] for r in REFERENCES])
def test_activation_matches_torch_values_and_gradients(name, ours, ref, dtype):
    x = _inputs(dtype).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, y_ref = ours(x), ref(x_ref)
    # float64: the same function to rounding. float32: values within 1e-5/1e-6; gradients within
    # 1e-5 absolute, because near x = -5 the tanh form's gradient is a difference of terms of
    # size ~10 that cancel (tanh saturates), so float32 rounding leaves ~1e-6 there.
    value_tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else TOL
    grad_tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    assert_close(y, y_ref, **value_tol)
    upstream = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad(y, x, upstream)
    (grad_ref,) = torch.autograd.grad(y_ref, x_ref, upstream)
    assert torch.isfinite(grad).all()
    assert_close(grad, grad_ref, **grad_tol)


def test_registry_lists_every_activation_and_kind():
    assert set(ACTIVATIONS) == {"relu", "gelu", "gelu_tanh", "swish", "sigmoid", "identity"}
    assert set(FFN_KINDS) == set(FFNS), "every kind the config accepts has an implementation, and no other"
    assert SHAZEER_KINDS == ("relu", "gelu", "swish", "glu", "bilinear", "reglu", "geglu", "swiglu")


def test_relu_gradient_at_zero_is_zero_like_torch():
    x = torch.zeros(3, requires_grad=True)
    relu(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros(3))


def test_gelu_tanh_is_an_approximation_not_the_exact_function():
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    gap = (gelu(x) - gelu_tanh(x)).abs()
    assert 1e-5 < float(gap.max()) < 1e-3  # close, but far above float rounding
    assert float(gap[x.abs() > 5.5].max()) < 1e-6  # the two agree in the tails


def test_swish_properties():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert_close(swish(x, beta=0.0), x / 2)  # beta = 0: a linear function
    assert_close(swish(x, beta=100.0), relu(x), atol=1e-2, rtol=0)  # beta -> inf: ReLU
    assert float(swish(x).min()) == pytest.approx(-0.2785, abs=1e-4)  # non-monotonic, bounded below


# --- the FeedForward block ----------------------------------------------------
@pytest.mark.parametrize("kind", list(FFN_KINDS))
@pytest.mark.parametrize("bias", [False, True])
def test_feedforward_shapes_and_parameter_formula(kind, bias):
    ffn = FeedForward(24, 40, kind, bias=bias)
    x = torch.randn(2, 5, 24)
    assert ffn(x).shape == (2, 5, 24)
    assert count_parameters(ffn) == ffn_param_count(24, 40, kind, bias=bias)
    assert (ffn.gate_proj is not None) == is_gated(kind)


@pytest.mark.parametrize("kind", [k for k in FFN_KINDS if is_gated(k)])
def test_gated_feedforward_is_gate_times_value(kind):
    torch.manual_seed(0)
    ffn = FeedForward(8, 12, kind, bias=True)
    x = torch.randn(3, 8)
    act = ACTIVATIONS[FFN_KINDS[kind][0]]
    expected = ffn.down_proj(act(ffn.gate_proj(x)) * ffn.up_proj(x))
    assert_close(ffn(x), expected)


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="known feed-forward kind"):
        FeedForward(8, 16, "swishglu")
    with pytest.raises(ValueError, match="ffn='swishglu'"):
        ModelConfig(ffn="swishglu")


def test_every_model_selects_its_ffn_from_the_config(tiny_config):
    for kind in FFN_KINDS:
        model = build_model(tiny_config.replace(ffn=kind, d_ff=48, bias=False), seed=0)
        for block in model.decoder.blocks:
            assert block.ffn.kind == kind
            assert count_parameters(block.ffn) == ffn_param_count(32, 48, kind)
    ed = build_model(tiny_config.replace(arch="encoder_decoder", ffn="swiglu"), seed=0)
    assert all(b.ffn.kind == "swiglu" for b in [*ed.encoder.blocks, *ed.decoder.blocks])


# --- parity with Hugging Face -------------------------------------------------
def _copy_and_compare(ours: torch.nn.Module, ref: torch.nn.Module, mapping: dict[str, str]) -> None:
    """Load ref's weights into ours (strict), then compare outputs and every gradient."""
    ref_sd = ref.state_dict()
    ours.load_state_dict({mine: ref_sd[theirs] for mine, theirs in mapping.items()}, strict=True)
    x = torch.randn(2, 7, ours.up_proj.in_features, generator=torch.Generator().manual_seed(1))
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = ours(x1), ref(x2)
    assert_close(y1, y2, **TOL)
    upstream = torch.randn(y1.shape, generator=torch.Generator().manual_seed(2))
    y1.backward(upstream)
    y2.backward(upstream)
    assert_close(x1.grad, x2.grad, **TOL)
    ref_params = dict(ref.named_parameters())
    for mine, theirs in mapping.items():
        assert_close(dict(ours.named_parameters())[mine].grad, ref_params[theirs].grad, **TOL)


@pytest.mark.parametrize("mlp_bias", [False, True])
def test_swiglu_matches_llama_mlp(mlp_bias):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=88, hidden_act="silu", mlp_bias=mlp_bias)
    ref = LlamaMLP(cfg).eval()
    ours = FeedForward(32, 88, "swiglu", bias=mlp_bias)
    names = ["gate_proj", "up_proj", "down_proj"]
    mapping = {f"{n}.{p}": f"{n}.{p}" for n in names for p in (["weight", "bias"] if mlp_bias else ["weight"])}
    _copy_and_compare(ours, ref, mapping)


def _t5_mapping(gated: bool) -> dict[str, str]:
    if gated:
        return {"gate_proj.weight": "wi_0.weight", "up_proj.weight": "wi_1.weight", "down_proj.weight": "wo.weight"}
    return {"up_proj.weight": "wi.weight", "down_proj.weight": "wo.weight"}


def test_geglu_matches_t5_v1_1_gated_gelu():
    from transformers import T5Config
    from transformers.models.t5.modeling_t5 import T5DenseGatedActDense

    torch.manual_seed(0)
    cfg = T5Config(d_model=32, d_ff=64, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    assert cfg.dense_act_fn == "gelu_new"  # T5 v1.1's GeGLU uses the tanh form of GeLU
    ref = T5DenseGatedActDense(cfg).eval()
    _copy_and_compare(FeedForward(32, 64, "geglu_tanh", bias=False), ref, _t5_mapping(gated=True))


def test_exact_geglu_differs_measurably_from_t5_gated_gelu():
    """The test above can fail: with the exact GeLU the same weights give a visibly different output."""
    from transformers import T5Config
    from transformers.models.t5.modeling_t5 import T5DenseGatedActDense

    torch.manual_seed(0)
    ref = T5DenseGatedActDense(T5Config(d_model=32, d_ff=64, feed_forward_proj="gated-gelu", dropout_rate=0.0))
    ref.wi_0.weight.data.mul_(30)  # pre-activations of order 1, where the two GeLUs differ most
    ours = FeedForward(32, 64, "geglu", bias=False)
    ours.load_state_dict({k: ref.state_dict()[v] for k, v in _t5_mapping(gated=True).items()})
    x = torch.randn(4, 32)
    with pytest.raises(AssertionError):
        assert_close(ours(x), ref(x), **TOL)


def test_relu_ffn_matches_t5_v1_0_dense():
    from transformers import T5Config
    from transformers.models.t5.modeling_t5 import T5DenseActDense

    torch.manual_seed(0)
    ref = T5DenseActDense(T5Config(d_model=32, d_ff=64, feed_forward_proj="relu", dropout_rate=0.0)).eval()
    _copy_and_compare(FeedForward(32, 64, "relu", bias=False), ref, _t5_mapping(gated=False))


# --- counting, sizing, compute ------------------------------------------------
@pytest.mark.parametrize("kind", list(FFN_KINDS))
def test_flop_formula_matches_pytorch_flop_counter(kind):
    ffn = FeedForward(32, 80, kind, bias=False)
    x = torch.randn(3, 5, 32)
    with FlopCounterMode(display=False) as counter:
        ffn(x)
    assert counter.get_total_flops() == ffn_flops(32, 80, kind, tokens=15)


def test_equal_width_costs_fifty_percent_more():
    for plain, gated in [("gelu", "geglu"), ("swish", "swiglu"), ("relu", "reglu")]:
        p_plain = count_parameters(FeedForward(64, 256, plain, bias=False))
        p_gated = count_parameters(FeedForward(64, 256, gated, bias=False))
        assert p_gated / p_plain == 1.5
        assert ffn_flops(64, 256, gated) / ffn_flops(64, 256, plain) == 1.5


@pytest.mark.parametrize("d_model", [16, 64, 100, 768, 4096])
@pytest.mark.parametrize("multiple_of", [1, 8, 64, 256])
@pytest.mark.parametrize("bias", [False, True])
def test_matched_width_keeps_parameters_within_one_rounding_multiple(d_model, multiple_of, bias):
    plain_ff = 4 * d_model
    plain = ffn_param_count(d_model, plain_ff, "gelu", bias)
    for kind in [k for k in FFN_KINDS if is_gated(k)]:
        d_ff = matched_d_ff(d_model, kind, multiple_of=multiple_of)
        assert d_ff % multiple_of == 0
        gated = ffn_param_count(d_model, d_ff, kind, bias)
        # one multiple of width is worth 3 D (+2 biases); biases add plain_ff/3 more at most
        slack = (3 * d_model + 2 * bias) * multiple_of + (plain_ff // 3 + 1) * bias
        assert abs(gated - plain) <= slack, (kind, d_ff, gated, plain)
        if d_model <= 100:  # the formula is the module's own count (checked on small sizes only)
            assert count_parameters(FeedForward(d_model, d_ff, kind, bias=bias)) == gated


def test_matched_width_follows_llama():
    # LLaMA 7B / 13B / 65B intermediate sizes, from d_model and multiple_of = 256
    for d_model, expected in [(4096, 11008), (5120, 13824), (8192, 22016)]:
        assert matched_d_ff(d_model, "swiglu", multiple_of=256) == expected
    assert matched_d_ff(64, "gelu", multiple_of=256) == 256  # plain kinds keep 4 D
    assert matched_d_ff(64, "swiglu") == 170
    with pytest.raises(ValueError, match="multiple_of"):
        matched_d_ff(64, "swiglu", multiple_of=0)


def test_ffn_variants_matched_and_equal_width(tiny_config):
    base = tiny_config.replace(bias=False, d_ff=None)
    matched = ffn_variants(base, sizing="matched")
    assert list(matched) == list(SHAZEER_KINDS)
    counts = {k: count_parameters(build_model(c, seed=0)) for k, c in matched.items()}
    spread = max(counts.values()) - min(counts.values())
    assert spread <= 3 * base.d_model * base.n_layers  # within one unit of width per layer
    wide = ffn_variants(base, ["gelu", "swiglu"], sizing="equal_width")
    assert wide["gelu"].d_ff == wide["swiglu"].d_ff == 4 * base.d_model
    extra = count_parameters(build_model(wide["swiglu"])) - count_parameters(build_model(wide["gelu"]))
    assert extra == base.n_layers * base.d_model * 4 * base.d_model  # one more D x F matrix per layer
    with pytest.raises(ValueError, match="sizing"):
        ffn_variants(base, sizing="wide")
