"""``LlamaForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

Llama (Touvron et al. 2023) is a pre-norm causal decoder with RMSNorm, a SwiGLU
feed-forward, rotary positions paired "rotate half" (dimension ``i`` with
``i + Dh/2``), grouped-query attention (``K`` kv heads shared by ``H`` query
heads) and no biases. Its parameter names are the course's own
(``q_proj k_proj v_proj o_proj``, ``gate_proj up_proj down_proj``), so the
conversion renames the containers only: :data:`RULES`.
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM
from .base import Converter, Needs, Rule, convert_from_hf, plain, require, special_tokens

# HF hidden_act -> course ffn (the gated form of the activation)
_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "relu": "reglu", "gelu_pytorch_tanh": "geglu_tanh"}
_HF_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu", "geglu_tanh": "gelu_pytorch_tanh"}

L, B = "model.layers.{i}.", "decoder.blocks.{i}."
RULES = (
    Rule("model.embed_tokens.weight", "tok_emb.weight"),
    Rule(L + "self_attn.{proj:q_proj|k_proj|v_proj|o_proj}.{p}", B + "attn.{proj}.{p}"),
    Rule(L + "mlp.{proj:gate_proj|up_proj|down_proj}.{p}", B + "ffn.{proj}.{p}"),
    Rule(L + "input_layernorm.weight", B + "attn_norm.weight"),
    Rule(L + "post_attention_layernorm.weight", B + "ffn_norm.weight"),
    Rule("model.norm.weight", "decoder.final_norm.weight"),
)


def rope_theta(c, default: float = 10000.0) -> float:
    """``rope_theta`` of a HF config whose RoPE is the plain one; ``ValueError`` names a rescaled ``rope_type``."""
    rope = dict(getattr(c, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(
            f"this {c.model_type} uses rope_type={rope_type!r} (a rescaled RoPE for longer contexts); the course "
            "converts rope_type='default' only."
        )
    return float(rope.get("rope_theta", default))


def refuse_attention_bias(c) -> None:
    """``ValueError`` for ``attention_bias=True`` in a family whose MLP has no biases (Qwen3, Gemma)."""
    if getattr(c, "attention_bias", False):
        raise ValueError(
            "attention_bias=True biases the query, key, value and output projections but not the feed-forward; "
            "the course's bias and qkv_bias cannot say that. Only attention_bias=False converts."
        )


def llama_like_config(c, **fields) -> ModelConfig:
    """The :class:`ModelConfig` of a Llama-like HF config (Llama, Qwen2, Qwen3, Gemma), ``fields`` on top.

    Shared: pre-norm RMSNorm, a gated FFN named by ``hidden_act``, rotary positions paired
    "rotate half", grouped-query attention, ``head_dim`` when the config has one.
    """
    if c.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={c.hidden_act!r} has no gated FFN in the course; use one of {', '.join(_ACTIVATIONS)}.")
    base = dict(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_heads=c.num_attention_heads,
        n_kv_heads=c.num_key_value_heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        d_ff=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        max_seq_len=c.max_position_embeddings,
        norm="rmsnorm",
        norm_eps=c.rms_norm_eps,
        ffn=_ACTIVATIONS[c.hidden_act],
        position="rope",
        rope_theta=rope_theta(c),
        rope_pairing="half",
        tie_embeddings=bool(c.tie_word_embeddings),
    )
    return ModelConfig(**{**base, **fields})


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``LlamaConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    if bool(c.attention_bias) != bool(getattr(c, "mlp_bias", False)):
        raise ValueError(
            f"attention_bias={c.attention_bias} and mlp_bias={c.mlp_bias} differ; the course's config.bias "
            "switches the biases of every linear layer together."
        )
    return llama_like_config(c, bias=bool(c.attention_bias))


def require_llama_like(config: ModelConfig, hf_class: str, ffns=tuple(_HF_ACTIVATIONS), **overrides) -> None:
    """``ValueError`` naming the first field of ``config`` a Llama-like ``hf_class`` cannot express.

    ``overrides`` replace or add checks (a family's own options: QK-norm, Gemma's norm offset).
    """
    checks = dict(
        arch="decoder", **plain(config), norm="rmsnorm", norm_placement="pre", final_norm=True, embed_norm=False,
        parallel_residual=False, position="rope", rope_pairing="half",
        rotary_dim=Needs(lambda v: v == config.resolved_head_dim, f"head_dim ({config.resolved_head_dim})"),
        ffn=tuple(ffns),
    )
    require(config, hf_class, **{**checks, **overrides})


def llama_like_hf_config(config: ModelConfig, **extra) -> dict:
    """The keyword arguments Llama-like HF configs share, ``extra`` on top (check with :func:`require_llama_like` first)."""
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.resolved_n_kv_heads,
        head_dim=config.resolved_head_dim,
        intermediate_size=config.resolved_d_ff,
        num_hidden_layers=config.n_layers,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        hidden_act=_HF_ACTIVATIONS[config.ffn],
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        tie_word_embeddings=config.tie_embeddings,
        **special_tokens(config),
        **extra,
    )


def hf_config(config: ModelConfig) -> dict:
    """The ``LlamaConfig`` keyword arguments of ``config``; raises ``ValueError`` naming a field Llama cannot express."""
    require_llama_like(config, "LlamaForCausalLM")
    return llama_like_hf_config(config, attention_bias=config.bias, mlp_bias=config.bias)


CONVERTER = Converter(
    model_type="llama", hf_class="LlamaForCausalLM", hf_config_class="LlamaConfig",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="model.embed_tokens.weight",
)


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``LlamaForCausalLM``); same logits."""
    return convert_from_hf(CONVERTER, hf_model)
