"""``BloomForCausalLM`` -> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``Dh`` head_dim, ``V`` vocab.

BLOOM (Scao et al. 2022) is a pre-LayerNorm causal decoder with ALiBi instead of
position embeddings, a LayerNorm right after the token embedding
(``embed_norm``), GeLU in its tanh form, biases everywhere and a tied output
head. Two details matter for equal logits:

- BLOOM adds ``+m_h * j`` (the key position only) where the paper subtracts
  ``m_h * (i - j)``; the two differ by ``m_h * i``, the same for every key of a
  query, which the softmax ignores. Its slopes follow the paper's rule for head
  counts that are not powers of two, as :func:`llmcourse.positions.alibi_slopes` does.
- Its fused ``query_key_value`` is grouped per head as ``(H, 3, Dh)``, like GPT-NeoX.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM, build_model
from .gpt_neox import split_fused_qkv

DEFAULT_CONTEXT = 2048  # BLOOM's training length; ALiBi itself has no table that limits it


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``BloomConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    if c.apply_residual_connection_post_layernorm:
        raise ValueError(
            "apply_residual_connection_post_layernorm=True adds the normalised input to the residual stream; "
            "the course's pre-LN block adds the raw input. Only the default (False) converts."
        )
    if c.pretraining_tp > 1 and c.slow_but_exact:
        raise ValueError("slow_but_exact=True splits the output projections into slices; convert with slow_but_exact=False.")
    return ModelConfig(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_heads=c.n_head,
        d_ff=4 * c.hidden_size,
        n_layers=c.n_layer,
        max_seq_len=int(getattr(c, "seq_length", None) or DEFAULT_CONTEXT),
        norm="layernorm",
        norm_eps=c.layer_norm_epsilon,
        embed_norm=True,
        ffn="gelu_tanh",
        position="alibi",
        bias=True,
        tie_embeddings=bool(c.tie_word_embeddings),
    )


def state_dict(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF weights under the course's names."""
    c = hf_model.config
    sd = hf_model.state_dict()
    out = {"tok_emb.weight": sd["transformer.word_embeddings.weight"]}
    for kind in ("weight", "bias"):
        out[f"decoder.embed_norm.{kind}"] = sd[f"transformer.word_embeddings_layernorm.{kind}"]
        out[f"decoder.final_norm.{kind}"] = sd[f"transformer.ln_f.{kind}"]
    for i in range(c.n_layer):
        src, dst = f"transformer.h.{i}.", f"decoder.blocks.{i}."
        for kind in ("weight", "bias"):
            q, k, v = split_fused_qkv(sd[f"{src}self_attention.query_key_value.{kind}"], c.n_head)
            out[f"{dst}attn.q_proj.{kind}"], out[f"{dst}attn.k_proj.{kind}"], out[f"{dst}attn.v_proj.{kind}"] = q, k, v
            out[f"{dst}attn.o_proj.{kind}"] = sd[f"{src}self_attention.dense.{kind}"]
            out[f"{dst}attn_norm.{kind}"] = sd[f"{src}input_layernorm.{kind}"]
            out[f"{dst}ffn_norm.{kind}"] = sd[f"{src}post_attention_layernorm.{kind}"]
            out[f"{dst}ffn.up_proj.{kind}"] = sd[f"{src}mlp.dense_h_to_4h.{kind}"]
            out[f"{dst}ffn.down_proj.{kind}"] = sd[f"{src}mlp.dense_4h_to_h.{kind}"]
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``BloomForCausalLM``); same logits."""
    model = build_model(model_config(hf_model.config))
    model.load_state_dict(state_dict(hf_model), strict=True)
    return model.eval()
