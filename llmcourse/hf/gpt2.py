"""``GPT2LMHeadModel`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``F`` d_ff, ``V`` vocab.

GPT-2 (Radford et al. 2019) is a pre-LN causal decoder with learned absolute
positions, LayerNorm with biases, biases in every linear layer, the tanh
approximation of GeLU (``gelu_new``, our ``gelu_tanh``) and an output
projection tied to the token embedding. Two storage habits need care, and
:data:`RULES` names both as transforms:

- its linear layers are ``Conv1D`` modules whose weight is stored as
  ``(in, out)``, the transpose of ``nn.Linear``'s ``(out, in)``
  (:data:`~llmcourse.hf.base.CONV1D`);
- queries, keys and values come from one fused projection ``c_attn`` of
  width ``3 D``, split in that order (:data:`~llmcourse.hf.base.QKV_THIRDS_CONV1D`).
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM
from .base import CONV1D, QKV_THIRDS_CONV1D, Converter, Rule, convert_from_hf, plain, require, special_tokens

# HF activation_function -> course ffn
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "swish", "swish": "swish"}
_HF_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "swish": "silu"}

L, B = "transformer.h.{i}.", "decoder.blocks.{i}."
RULES = (
    Rule("transformer.wte.weight", "tok_emb.weight"),
    Rule("transformer.wpe.weight", "decoder.positions.weight"),
    Rule(L + "ln_1.{p}", B + "attn_norm.{p}"),
    Rule(L + "attn.c_attn.{p}", (B + "attn.q_proj.{p}", B + "attn.k_proj.{p}", B + "attn.v_proj.{p}"), QKV_THIRDS_CONV1D),
    Rule(L + "attn.c_proj.{p}", B + "attn.o_proj.{p}", CONV1D),
    Rule(L + "ln_2.{p}", B + "ffn_norm.{p}"),
    Rule(L + "mlp.c_fc.{p}", B + "ffn.up_proj.{p}", CONV1D),
    Rule(L + "mlp.c_proj.{p}", B + "ffn.down_proj.{p}", CONV1D),
    Rule("transformer.ln_f.{p}", "decoder.final_norm.{p}"),
)


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``GPT2Config``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    if c.activation_function not in _ACTIVATIONS:
        raise ValueError(
            f"activation_function={c.activation_function!r} has no course FFN; GPT-2 converts with one of "
            f"{', '.join(_ACTIVATIONS)}."
        )
    if getattr(c, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("scale_attn_by_inverse_layer_idx=True (a per-layer attention scale) is not expressible in ModelConfig.")
    if getattr(c, "add_cross_attention", False):
        raise ValueError("add_cross_attention=True makes GPT-2 a decoder with cross-attention; the course converts the plain LM.")
    return ModelConfig(
        vocab_size=c.vocab_size,
        d_model=c.n_embd,
        n_heads=c.n_head,
        d_ff=c.n_inner if c.n_inner is not None else 4 * c.n_embd,
        n_layers=c.n_layer,
        max_seq_len=c.n_positions,
        norm="layernorm",
        norm_eps=c.layer_norm_epsilon,
        norm_placement="pre",
        ffn=_ACTIVATIONS[c.activation_function],
        position="learned",
        attn_scale=None if getattr(c, "scale_attn_weights", True) else 1.0,
        bias=True,
        tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)),
    )


def hf_config(config: ModelConfig) -> dict:
    """The ``GPT2Config`` keyword arguments of ``config``; raises ``ValueError`` naming a field GPT-2 cannot express."""
    scaled = plain(config)["attn_scale"]
    require(
        config, "GPT2LMHeadModel", arch="decoder", **{**plain(config), "attn_scale": (scaled, 1.0)}, norm="layernorm",
        norm_placement="pre", final_norm=True, embed_norm=False, parallel_residual=False, position="learned",
        bias=True, norm_bias=True, n_kv_heads=config.n_heads, head_dim=config.d_model // config.n_heads,
        ffn=tuple(_HF_ACTIVATIONS),
    )
    return dict(
        vocab_size=config.vocab_size,
        n_embd=config.d_model,
        n_head=config.n_heads,
        n_inner=config.resolved_d_ff,
        n_layer=config.n_layers,
        n_positions=config.max_seq_len,
        layer_norm_epsilon=config.norm_eps,
        activation_function=_HF_ACTIVATIONS[config.ffn],
        scale_attn_weights=config.attn_scale != 1.0,
        tie_word_embeddings=config.tie_embeddings,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        **special_tokens(config),
    )


CONVERTER = Converter(
    model_type="gpt2", hf_class="GPT2LMHeadModel", hf_config_class="GPT2Config",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="transformer.wte.weight",
)


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``GPT2LMHeadModel``); same logits."""
    return convert_from_hf(CONVERTER, hf_model)
