import math

import pytest

from llmcourse import ModelConfig


@pytest.mark.parametrize(
    "kwargs, field, hint",
    [
        (dict(d_model=100, n_heads=3), "d_model=100", "n_heads among the divisors"),
        (dict(n_heads=4, n_kv_heads=3), "n_kv_heads=3", "must divide n_heads=4"),
        (dict(norm="batchnorm"), "norm='batchnorm'", "layernorm, rmsnorm"),
        (dict(position="xpos"), "position='xpos'", "rope"),
        (dict(ffn="mish"), "ffn='mish'", "swiglu"),
        (dict(norm_placement="middle"), "norm_placement='middle'", "deepnorm"),
        (dict(attn_impl="magic"), "attn_impl='magic'", "flash"),
        (dict(dropout=1.5), "dropout=1.5", "[0, 1)"),
        (dict(d_model=0), "d_model=0", "positive integer"),
        (dict(rotary_dim=7), "rotary_dim=7", "even"),
        (dict(arch="encoder_decoder", mask="prefix"), "mask='prefix'", "decoder-only"),
        (dict(parallel_residual=True, norm_placement="post"), "parallel_residual=True", "norm_placement='pre'"),
        (dict(n_experts=4, top_k=5), "top_k=5", "n_experts=4"),
    ],
)
def test_invalid_config_names_field_and_fix(kwargs, field, hint):
    with pytest.raises(ValueError) as err:
        ModelConfig(**kwargs)
    assert field in str(err.value)
    assert hint in str(err.value)


def test_replace_validates_again():
    cfg = ModelConfig(d_model=64, n_heads=4)
    with pytest.raises(ValueError, match="not divisible"):
        cfg.replace(n_heads=5)


def test_derived_defaults():
    cfg = ModelConfig(d_model=64, n_heads=4)
    assert cfg.resolved_head_dim == 16
    assert cfg.resolved_n_kv_heads == 4
    assert cfg.resolved_d_ff == 256
    assert cfg.resolved_final_norm is True
    assert cfg.replace(norm_placement="post").resolved_final_norm is False
    assert math.isclose(cfg.resolved_attn_scale, 0.25)


def test_json_round_trip_and_unknown_fields():
    cfg = ModelConfig(d_model=64, n_heads=8, position="rope", ffn="swiglu")
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({**cfg.to_dict(), "d_modle": 3})
