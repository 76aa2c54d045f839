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


# --- issue 18 item 4: every field is type-checked, NaN refused, assignment re-validated -----------------

@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(bias="no"), "bias='no'"),
        (dict(tie_embeddings=1), "tie_embeddings=1"),
        (dict(qk_norm="false"), "qk_norm='false'"),
        (dict(norm_bias="yes"), "norm_bias='yes'"),
        (dict(final_norm=0), "final_norm=0"),
        (dict(router_renormalize=1), "router_renormalize=1"),
        (dict(norm_eps=float("nan")), "norm_eps=nan"),
        (dict(norm_eps="1e-5"), "norm_eps='1e-5'"),
        (dict(dropout=float("nan")), "dropout=nan"),
        (dict(rope_theta=float("inf")), "rope_theta=inf"),
        (dict(init_std=float("nan")), "init_std=nan"),
        (dict(init_std=-0.02), "init_std=-0.02"),
        (dict(logit_scale=float("nan")), "logit_scale=nan"),
        (dict(logit_scale=0.0), "logit_scale=0.0"),
        (dict(attn_scale=float("nan")), "attn_scale=nan"),
        (dict(attn_scale="1"), "attn_scale='1'"),
        (dict(sinusoidal_scale=float("nan")), "sinusoidal_scale=nan"),
        (dict(capacity_factor="1.25", n_experts=4), "capacity_factor='1.25'"),
        (dict(attn_global_blocks=-1), "attn_global_blocks=-1"),
        (dict(attn_random_blocks=1.5), "attn_random_blocks=1.5"),
        (dict(n_experts=2.0), "n_experts=2.0"),
        (dict(top_k=True), "top_k=True"),
        (dict(position="t5", rel_num_buckets=2), "rel_num_buckets=2"),
        (dict(position="t5", rel_num_buckets=32, rel_max_distance=8), "rel_max_distance=8"),
        (dict(extra={"f": float("nan")}), "extra must be JSON-able"),
        (dict(extra={"obj": object()}), "extra must be JSON-able"),
        (dict(extra=[1, 2]), "extra=[1, 2]"),
        (dict(attn_pattern="strided", attn_block=64, max_seq_len=64), "attn_block=64"),
        (dict(norm=["rmsnorm"]), "norm=['rmsnorm']"),
    ],
)
def test_bad_field_types_and_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError) as err:
        ModelConfig(**kwargs)
    assert field in str(err.value)


def test_valid_configs_still_build():
    ModelConfig(position="t5", rel_num_buckets=8, rel_max_distance=20, attn_scale=1.0, logit_scale=32**-0.5)
    ModelConfig(attn_pattern="bigbird", attn_block=8, attn_random_blocks=0, max_seq_len=64)
    ModelConfig(n_experts=4, top_k=2, capacity_factor=1, extra={"note": [1, 2.5, None, True]})
    assert ModelConfig(bias=False).bias is False


def test_assignment_after_validation_is_validated_and_undone_when_invalid():
    cfg = ModelConfig(d_model=64, n_heads=4)
    with pytest.raises(ValueError, match="not divisible by n_heads=3"):
        cfg.n_heads = 3
    assert cfg.n_heads == 4  # the invalid value did not stick
    with pytest.raises(ValueError, match="bias='no'"):
        cfg.bias = "no"
    assert cfg.bias is True
    cfg.n_heads = 8  # a valid assignment still works
    assert cfg.resolved_head_dim == 8
    assert cfg.replace(n_heads=2).n_heads == 2 and ModelConfig.from_dict(cfg.to_dict()) == cfg
    import copy
    import dataclasses
    import pickle

    assert dataclasses.replace(cfg, d_model=32).d_model == 32
    assert copy.deepcopy(cfg) == cfg and pickle.loads(pickle.dumps(cfg)) == cfg
    clone = copy.deepcopy(cfg)
    with pytest.raises(ValueError, match="n_heads"):
        clone.n_heads = 5
