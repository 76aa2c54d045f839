"""Blocks: weight init by the roles components declare, and one placement table."""

import math

import pytest
import torch
from torch import nn

from llmcourse.blocks import init_weights
from llmcourse.config import PLACEMENTS, ModelConfig
from llmcourse.models import build_model


def _name_matching_init(module, config, n_layers, beta=None):
    """The init of the first wave, which recognised parameters by name (kept here to prove the roles equal it)."""
    std = config.init_std
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 2)
        pname, parent = leaf[-1], (leaf[-2] if len(leaf) > 1 else "")
        if p.dim() == 1:
            nn.init.ones_(p) if ("norm" in parent and pname == "weight") else nn.init.zeros_(p)
            continue
        if beta is not None and parent in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            nn.init.xavier_normal_(p, gain=1.0 if parent in ("q_proj", "k_proj") else beta)
        elif config.scaled_residual_init and parent in ("o_proj", "down_proj"):
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layers))
        else:
            nn.init.normal_(p, 0.0, std)


@pytest.mark.parametrize("kw", [
    dict(), dict(norm_placement="deepnorm"), dict(norm_placement="sandwich", ffn="swiglu", norm="rmsnorm"),
    dict(arch="encoder_decoder", position="t5"), dict(norm_placement="post", scaled_residual_init=False),
    dict(qk_norm=True, position="rope", bias=False),
])
def test_role_init_equals_the_name_matching_init(kw):
    cfg = ModelConfig(vocab_size=17, d_model=16, n_heads=2, n_layers=3, max_seq_len=8, **kw)
    model = build_model(cfg, seed=0)
    stacks = [("decoder", model.decoder)] + ([("encoder", model.encoder)] if cfg.arch == "encoder_decoder" else [])
    for stack_name, stack in stacks:
        beta = cfg.deepnorm_constants(stack_name)[1] if cfg.placement.deepnorm else None
        n = len(stack.blocks)
        torch.manual_seed(5)
        init_weights(stack, cfg, n, beta)
        ours = {k: v.clone() for k, v in stack.state_dict().items()}
        torch.manual_seed(5)
        _name_matching_init(stack, cfg, n, beta)
        for name, value in stack.state_dict().items():
            torch.testing.assert_close(ours[name], value, atol=0, rtol=0, msg=name)


def test_a_new_component_gets_the_init_of_its_declared_role():
    cfg = ModelConfig(vocab_size=17, d_model=64, n_heads=2, n_layers=8, max_seq_len=8)
    holder = nn.Module()
    holder.writer = nn.Linear(64, 64)  # a name the old init would not have recognised
    holder.writer.init_role = "residual_out"
    holder.router = nn.Linear(64, 8, bias=False)
    holder.router.init_role = "router"
    torch.manual_seed(0)
    init_weights(holder, cfg, n_layers=8)
    assert holder.writer.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.1)
    assert holder.router.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert holder.writer.bias.abs().sum() == 0
    with torch.no_grad():
        init_weights(holder, cfg, n_layers=8, beta=0.5)  # DeepNorm scales a residual writer by beta
    expected = 0.5 * math.sqrt(2 / (64 + 64))
    assert holder.writer.weight.std().item() == pytest.approx(expected, rel=0.1)


def test_the_placement_table_decides_final_norm_and_post_norms():
    for name, placement in PLACEMENTS.items():
        cfg = ModelConfig(vocab_size=17, d_model=16, n_heads=2, n_layers=1, max_seq_len=8, norm_placement=name)
        model = build_model(cfg, seed=0)
        assert (model.decoder.final_norm is not None) == placement.final_norm
        assert (model.decoder.blocks[0].attn_post_norm is not None) == placement.post_norms
        assert (model.decoder.blocks[0].alpha != 1.0) == placement.deepnorm
