"""``GPTNeoXForCausalLM`` -> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

GPT-NeoX (Black et al. 2022) is a pre-LayerNorm causal decoder with two twists
the course expresses as config options: rotary positions on only the first
``rotary_pct * Dh`` dimensions of each head (``rotary_dim``; "rotate half"
pairing within them), and the parallel residual ``x + attn(LN1(x)) + ffn(LN2(x))``
(``parallel_residual``). Its output head is untied from the input embedding.

The one layout detail: NeoX fuses the query, key and value projections into
``query_key_value`` with its output grouped *per head* as ``(H, 3, Dh)``, so
the split takes every head's three slices, not three contiguous thirds.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM, build_model

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``GPTNeoXConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    rope = dict(getattr(c, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type={rope['rope_type']!r} is not converted; the course converts rope_type='default'.")
    if c.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={c.hidden_act!r} is not converted; use one of {', '.join(_ACTIVATIONS)}.")
    if not getattr(c, "attention_bias", True):
        raise ValueError(
            "attention_bias=False leaves NeoX's feed-forward biases on; the course's config.bias switches the "
            "biases of every linear layer together, so only attention_bias=True converts."
        )
    head_dim = c.hidden_size // c.num_attention_heads
    rotary_dim = int(head_dim * rope.get("partial_rotary_factor", getattr(c, "rotary_pct", 1.0)))
    return ModelConfig(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_heads=c.num_attention_heads,
        d_ff=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        max_seq_len=c.max_position_embeddings,
        norm="layernorm",
        norm_eps=c.layer_norm_eps,
        ffn=_ACTIVATIONS[c.hidden_act],
        position="rope",
        rope_theta=float(rope.get("rope_theta", 10000.0)),
        rope_pairing="half",
        rotary_dim=rotary_dim,
        parallel_residual=bool(c.use_parallel_residual),
        bias=True,
        tie_embeddings=bool(c.tie_word_embeddings),
    )


def split_fused_qkv(tensor: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NeoX's fused ``(3 D, ...)`` weight or bias, grouped ``(H, 3, Dh)``, as three ``(D, ...)`` tensors."""
    rest = tensor.shape[1:]
    per_head = tensor.view(n_heads, 3, -1, *rest)  # (H, 3, Dh, ...)
    return tuple(per_head[:, j].reshape(-1, *rest).contiguous() for j in range(3))  # each (H * Dh, ...)


def state_dict(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF weights under the course's names."""
    c = hf_model.config
    sd = hf_model.state_dict()
    out = {
        "tok_emb.weight": sd["gpt_neox.embed_in.weight"],
        "decoder.final_norm.weight": sd["gpt_neox.final_layer_norm.weight"],
        "decoder.final_norm.bias": sd["gpt_neox.final_layer_norm.bias"],
    }
    for i in range(c.num_hidden_layers):
        src, dst = f"gpt_neox.layers.{i}.", f"decoder.blocks.{i}."
        for kind in ("weight", "bias"):
            q, k, v = split_fused_qkv(sd[f"{src}attention.query_key_value.{kind}"], c.num_attention_heads)
            out[f"{dst}attn.q_proj.{kind}"], out[f"{dst}attn.k_proj.{kind}"], out[f"{dst}attn.v_proj.{kind}"] = q, k, v
            out[f"{dst}attn.o_proj.{kind}"] = sd[f"{src}attention.dense.{kind}"]
            out[f"{dst}attn_norm.{kind}"] = sd[f"{src}input_layernorm.{kind}"]
            out[f"{dst}ffn_norm.{kind}"] = sd[f"{src}post_attention_layernorm.{kind}"]
            out[f"{dst}ffn.up_proj.{kind}"] = sd[f"{src}mlp.dense_h_to_4h.{kind}"]
            out[f"{dst}ffn.down_proj.{kind}"] = sd[f"{src}mlp.dense_4h_to_h.{kind}"]
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = sd["embed_out.weight" if "embed_out.weight" in sd else "lm_head.weight"]
    return out


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``GPTNeoXForCausalLM``); same logits."""
    model = build_model(model_config(hf_model.config))
    model.load_state_dict(state_dict(hf_model), strict=True)
    return model.eval()
