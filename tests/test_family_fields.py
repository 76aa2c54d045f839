"""The config fields that converted families brought, each usable by any model.

``qkv_bias`` (Qwen2's biased q/k/v only), ``norm_gain_offset`` (Gemma's ``1 + w``
norms), ``embed_scale`` (Gemma's ``sqrt(D)`` embeddings) and
``parallel_shared_norm`` (one norm for both parallel branches: GPT-J, Falcon):
validated with errors that name the field, computing what their formulas say,
and absent from old configs without changing them.
"""

import math

import pytest
import torch

from llmcourse import ModelConfig
from llmcourse.attention import MultiHeadAttention
from llmcourse.models import build_model
from llmcourse.norms import LayerNorm, RMSNorm

BASE = dict(vocab_size=61, d_model=32, n_heads=4, n_layers=2, max_seq_len=32)


def _ids(B: int = 2, T: int = 10) -> torch.Tensor:
    return torch.randint(0, 61, (B, T), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "kwargs, field, hint",
    [
        (dict(qkv_bias="yes"), "qkv_bias='yes'", "True or False (or None"),
        (dict(parallel_shared_norm=True), "parallel_shared_norm=True", "parallel_residual=True"),
        (dict(parallel_shared_norm=1, parallel_residual=True), "parallel_shared_norm=1", "True or False"),
        (dict(embed_scale=0.0), "embed_scale=0.0", "> 0"),
        (dict(embed_scale=float("nan")), "embed_scale=nan", "sqrt(d_model)"),
        (dict(norm_gain_offset=-1.0), "norm_gain_offset=-1.0", ">= 0"),
        (dict(norm_gain_offset=float("inf")), "norm_gain_offset=inf", "Gemma"),
    ],
)
def test_new_fields_are_validated(kwargs, field, hint):
    with pytest.raises(ValueError) as err:
        ModelConfig(**BASE, **kwargs)
    assert field in str(err.value) and hint in str(err.value)


def test_old_configs_load_unchanged():
    """A config saved before these fields existed reads with their defaults, which change nothing."""
    old = {k: v for k, v in ModelConfig(**BASE).to_dict().items()
           if k not in ("qkv_bias", "norm_gain_offset", "embed_scale", "parallel_shared_norm")}
    cfg = ModelConfig.from_dict(old)
    assert (cfg.qkv_bias, cfg.norm_gain_offset, cfg.embed_scale, cfg.parallel_shared_norm) == (None, 0.0, 1.0, False)
    assert cfg.resolved_qkv_bias is True and cfg.replace(bias=False).resolved_qkv_bias is False
    new = ModelConfig(**BASE, qkv_bias=True, bias=False, norm_gain_offset=1.0, embed_scale=2.5)
    assert ModelConfig.from_dict(new.to_dict()) == new


@pytest.mark.parametrize("bias, qkv_bias", [(False, True), (True, False)])
def test_qkv_bias_is_apart_from_bias(bias, qkv_bias):
    model = build_model(ModelConfig(**BASE, bias=bias, qkv_bias=qkv_bias, ffn="swiglu"))
    names = {n for n, _ in model.named_parameters() if n.endswith(".bias") and "norm" not in n}
    for i in range(2):
        for proj in ("q_proj", "k_proj", "v_proj"):
            assert (f"decoder.blocks.{i}.attn.{proj}.bias" in names) == qkv_bias
        for name in ("attn.o_proj", "ffn.gate_proj", "ffn.up_proj", "ffn.down_proj"):
            assert (f"decoder.blocks.{i}.{name}.bias" in names) == bias
    attn = MultiHeadAttention(32, 4, bias=False, qkv_bias=True)
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None


@pytest.mark.parametrize("fused", [False, True])
def test_norm_gain_offset_multiplies_by_offset_plus_weight(fused):
    x = torch.randn(3, 5, 16)
    w = torch.randn(16)
    for cls, kw in ((RMSNorm, {}), (LayerNorm, {"bias": False})):
        offset = cls(16, eps=1e-6, fused=fused, gain_offset=1.0, **kw)
        plain = cls(16, eps=1e-6, fused=fused, **kw)
        with torch.no_grad():
            offset.weight.copy_(w)
            plain.weight.copy_(1.0 + w)
        torch.testing.assert_close(offset(x), plain(x), atol=1e-6, rtol=0)
        assert "gain_offset=1.0" in repr(offset)


@pytest.mark.parametrize("extra", [dict(norm="rmsnorm", qk_norm=True), dict(norm="layernorm", embed_norm=True)])
def test_norm_gain_offset_starts_at_gain_one(extra):
    """Every norm's weights start at 1 - offset (0 for Gemma): the same initial model as without the offset."""
    cfg = ModelConfig(**BASE, position="rope", **extra)
    plain, shifted = build_model(cfg, seed=0).eval(), build_model(cfg.replace(norm_gain_offset=1.0), seed=0).eval()
    norms = [m for m in shifted.modules() if isinstance(m, (RMSNorm, LayerNorm))]
    assert len(norms) >= 2 * 2 + 1 and all(m.gain_offset == 1.0 and not m.weight.any() for m in norms)
    with torch.no_grad():
        torch.testing.assert_close(shifted(_ids()), plain(_ids()), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_embed_scale_multiplies_the_embeddings_not_the_head(arch):
    cfg = ModelConfig(**BASE, arch=arch, tie_embeddings=True, position="rope")
    plain = build_model(cfg, seed=0).eval()
    scaled = build_model(cfg.replace(embed_scale=2.0), seed=0).eval()
    src, tgt = _ids(), _ids(T=6)
    with torch.no_grad():
        # the scaled model reads a table twice the size into the blocks, and the head reads the table itself
        plain.tok_emb.weight.mul_(2.0)
        plain_logits = (plain(src) if arch == "decoder" else plain(src, tgt)) / 2.0
        got = scaled(src) if arch == "decoder" else scaled(src, tgt)
    torch.testing.assert_close(got, plain_logits, atol=1e-5, rtol=0)


def test_parallel_shared_norm_feeds_one_norm_to_both_branches():
    cfg = ModelConfig(**BASE, parallel_residual=True, parallel_shared_norm=True, position="rope")
    model = build_model(cfg, seed=0).eval()
    block = model.decoder.blocks[0]
    assert block.ffn_norm is None and "ffn_norm" not in "".join(n for n, _ in model.named_parameters())
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        h = block.attn_norm(x)
        rope = model.decoder.positions.rotation(torch.arange(7)[None])
        expected = x + block.attn(h, causal=True, rope=rope) + block.ffn(h)
        torch.testing.assert_close(block(x, causal=True, rope=rope), expected, atol=1e-6, rtol=0)
    # the same function as two norms holding equal weights
    two = build_model(cfg.replace(parallel_shared_norm=False), seed=0).eval()
    state = model.state_dict()
    for i in range(2):
        for p in ("weight", "bias"):
            state[f"decoder.blocks.{i}.ffn_norm.{p}"] = state[f"decoder.blocks.{i}.attn_norm.{p}"]
    two.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(two(_ids()), model(_ids()), atol=1e-6, rtol=0)
    assert math.isclose(sum(p.numel() for p in two.parameters()) - sum(p.numel() for p in model.parameters()), 2 * 2 * 32)
