"""``GPT2LMHeadModel`` -> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``F`` d_ff, ``V`` vocab.

GPT-2 (Radford et al. 2019) is a pre-LN causal decoder with learned absolute
positions, LayerNorm with biases, biases in every linear layer, the tanh
approximation of GeLU (``gelu_new``, our ``gelu_tanh``) and an output
projection tied to the token embedding. Two storage habits need care:

- its linear layers are ``Conv1D`` modules whose weight is stored as
  ``(in, out)``, the transpose of ``nn.Linear``'s ``(out, in)``;
- queries, keys and values come from one fused projection ``c_attn`` of
  width ``3 D``, split in that order.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM, build_model

# HF activation_function -> course ffn
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu", "silu": "swish", "swish": "swish"}


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
        tie_embeddings=True,
    )


def state_dict(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF weights under the course's names: Conv1D weights transposed, ``c_attn`` split into q, k, v."""
    sd = hf_model.state_dict()
    D = hf_model.config.n_embd
    out = {
        "tok_emb.weight": sd["transformer.wte.weight"],
        "decoder.positions.weight": sd["transformer.wpe.weight"],
        "decoder.final_norm.weight": sd["transformer.ln_f.weight"],
        "decoder.final_norm.bias": sd["transformer.ln_f.bias"],
    }
    for i in range(hf_model.config.n_layer):
        src, dst = f"transformer.h.{i}.", f"decoder.blocks.{i}."
        for hf_norm, ours in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm")):
            out[f"{dst}{ours}.weight"] = sd[f"{src}{hf_norm}.weight"]
            out[f"{dst}{ours}.bias"] = sd[f"{src}{hf_norm}.bias"]
        qkv_w = sd[f"{src}attn.c_attn.weight"].t()  # Conv1D (D, 3D) -> Linear (3D, D)
        qkv_b = sd[f"{src}attn.c_attn.bias"]  # (3D,)
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), qkv_w.split(D, dim=0), qkv_b.split(D, dim=0)):
            out[f"{dst}attn.{name}.weight"] = w
            out[f"{dst}attn.{name}.bias"] = b
        for hf_name, ours in (("attn.c_proj", "attn.o_proj"), ("mlp.c_fc", "ffn.up_proj"), ("mlp.c_proj", "ffn.down_proj")):
            out[f"{dst}{ours}.weight"] = sd[f"{src}{hf_name}.weight"].t()  # Conv1D (in, out) -> Linear (out, in)
            out[f"{dst}{ours}.bias"] = sd[f"{src}{hf_name}.bias"]
    return {k: v.contiguous() for k, v in out.items()}


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``GPT2LMHeadModel``); same logits."""
    lm_head = getattr(hf_model, "lm_head", None)
    if lm_head is None:
        raise ValueError(f"from_hf converts GPT2LMHeadModel (with its LM head), got {type(hf_model).__name__}.")
    if lm_head.weight.data_ptr() != hf_model.transformer.wte.weight.data_ptr():
        raise ValueError("this GPT-2's lm_head is not tied to its token embedding; the course's GPT-2 ties them.")
    model = build_model(model_config(hf_model.config))
    model.load_state_dict(state_dict(hf_model), strict=True)
    return model.eval()
