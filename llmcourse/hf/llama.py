"""``LlamaForCausalLM`` -> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

Llama (Touvron et al. 2023) is a pre-norm causal decoder with RMSNorm, a SwiGLU
feed-forward, rotary positions paired "rotate half" (dimension ``i`` with
``i + Dh/2``), grouped-query attention (``K`` kv heads shared by ``H`` query
heads) and no biases. Its parameter names are the course's own
(``q_proj k_proj v_proj o_proj``, ``gate_proj up_proj down_proj``), so the
conversion is a renaming of the containers only.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM, build_model

_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "relu": "reglu"}


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``LlamaConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    rope = dict(getattr(c, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(
            f"this Llama uses rope_type={rope_type!r} (a rescaled RoPE for longer contexts); the course converts "
            "rope_type='default' only."
        )
    if c.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={c.hidden_act!r} has no gated FFN in the course; use one of {', '.join(_ACTIVATIONS)}.")
    if bool(c.attention_bias) != bool(getattr(c, "mlp_bias", False)):
        raise ValueError(
            f"attention_bias={c.attention_bias} and mlp_bias={c.mlp_bias} differ; the course's config.bias "
            "switches the biases of every linear layer together."
        )
    return ModelConfig(
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
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        rope_pairing="half",
        bias=bool(c.attention_bias),
        tie_embeddings=bool(c.tie_word_embeddings),
    )


def state_dict(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF weights under the course's names."""
    sd = hf_model.state_dict()
    out = {"tok_emb.weight": sd["model.embed_tokens.weight"], "decoder.final_norm.weight": sd["model.norm.weight"]}
    for i in range(hf_model.config.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"decoder.blocks.{i}."
        for name, tensor in sd.items():
            if not name.startswith(src):
                continue
            rest = name[len(src):]
            rest = (
                rest.replace("self_attn.", "attn.")
                .replace("mlp.", "ffn.")
                .replace("input_layernorm.", "attn_norm.")
                .replace("post_attention_layernorm.", "ffn_norm.")
            )
            out[dst + rest] = tensor
    if not hf_model.config.tie_word_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``LlamaForCausalLM``); same logits."""
    model = build_model(model_config(hf_model.config))
    model.load_state_dict(state_dict(hf_model), strict=True)
    return model.eval()
