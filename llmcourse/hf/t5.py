"""``T5ForConditionalGeneration`` -> :class:`~llmcourse.models.EncoderDecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``Dh`` head_dim (T5's ``d_kv``), ``F`` d_ff, ``V`` vocab.

T5 (Raffel et al. 2020) is a pre-norm encoder-decoder whose details differ from
the original Transformer in ways that all change the numbers:

- attention has **no** ``1/sqrt(Dh)`` scaling (``attn_scale=1.0``; the
  initialisation absorbs it);
- positions are a learned scalar per (relative-distance bucket, head), added to
  the scores, held by the first layer of each stack and reused by the others
  (``position='t5'``, our :class:`~llmcourse.positions.T5RelativeBias`);
  encoder buckets are bidirectional, decoder buckets causal; cross-attention
  has no position bias;
- its "LayerNorm" is RMSNorm (no centring, no bias; ``eps = 1e-6``), and no
  layer has a bias;
- v1.0: ReLU feed-forward, output tied to the shared embedding and the hidden
  state scaled by ``D^-0.5`` before it; v1.1: gated GeLU (tanh form,
  ``feed_forward_proj='gated-gelu'``, our ``geglu_tanh``), output head not tied
  and not scaled. Both share one embedding between encoder and decoder.

T5 starts decoding from the pad token (id 0), which becomes ``decoder_start_token_id``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..models import EncoderDecoderLM, build_model

# HF feed_forward_proj -> course ffn. "gated-gelu" runs gelu_new (the tanh form) in transformers.
_FFNS = {"relu": "relu", "gated-gelu": "geglu_tanh", "gated-relu": "reglu", "gated-silu": "swiglu", "gelu": "gelu", "gelu_new": "gelu_tanh"}


def _tied(hf_model: nn.Module) -> bool:
    return hf_model.lm_head.weight.data_ptr() == hf_model.shared.weight.data_ptr()


def _scaled(hf_config) -> bool:
    # transformers >= 5 records the v1.0 output scaling as scale_decoder_outputs; older versions as tie_word_embeddings
    return bool(getattr(hf_config, "scale_decoder_outputs", getattr(hf_config, "tie_word_embeddings", True)))


def _decoder_start(hf_model: nn.Module) -> int:
    """T5 decodes from its pad token; newer transformers keep the id in the generation config."""
    for source in (hf_model.config, getattr(hf_model, "generation_config", None)):
        value = getattr(source, "decoder_start_token_id", None)
        if value is not None:
            return int(value)
    return int(hf_model.config.pad_token_id or 0)


def model_config(hf_model: nn.Module) -> ModelConfig:
    """The :class:`ModelConfig` of a T5 model; raises ``ValueError`` for what the course cannot express."""
    c = hf_model.config
    if c.feed_forward_proj not in _FFNS:
        raise ValueError(f"feed_forward_proj={c.feed_forward_proj!r} has no course FFN; T5 converts with one of {', '.join(_FFNS)}.")
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=c.vocab_size,
        d_model=c.d_model,
        n_heads=c.num_heads,
        head_dim=c.d_kv,
        d_ff=c.d_ff,
        n_encoder_layers=c.num_layers,
        n_layers=c.num_decoder_layers,
        max_seq_len=int(getattr(c, "n_positions", None) or 512),  # relative positions: a soft limit only
        norm="rmsnorm",
        norm_eps=c.layer_norm_epsilon,
        norm_placement="pre",
        ffn=_FFNS[c.feed_forward_proj],
        position="t5",
        rel_num_buckets=c.relative_attention_num_buckets,
        rel_max_distance=c.relative_attention_max_distance,
        attn_scale=1.0,
        bias=False,
        share_embeddings=True,
        tie_embeddings=_tied(hf_model),
        logit_scale=c.d_model**-0.5 if _scaled(c) else 1.0,
        pad_token_id=c.pad_token_id,
        decoder_start_token_id=_decoder_start(hf_model),
    )


def _stack(sd: dict[str, torch.Tensor], n_layers: int, src: str, dst: str, gated: bool, cross: bool) -> dict[str, torch.Tensor]:
    out = {
        f"{dst}.positions.relative_attention_bias.weight": sd[f"{src}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        f"{dst}.final_norm.weight": sd[f"{src}.final_layer_norm.weight"],
    }
    for i in range(n_layers):
        s, d = f"{src}.block.{i}.layer", f"{dst}.blocks.{i}"
        for ours, theirs in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o")):
            out[f"{d}.attn.{ours}.weight"] = sd[f"{s}.0.SelfAttention.{theirs}.weight"]
        out[f"{d}.attn_norm.weight"] = sd[f"{s}.0.layer_norm.weight"]
        ff = 1
        if cross:
            for ours, theirs in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o")):
                out[f"{d}.cross_attn.{ours}.weight"] = sd[f"{s}.1.EncDecAttention.{theirs}.weight"]
            out[f"{d}.cross_norm.weight"] = sd[f"{s}.1.layer_norm.weight"]
            ff = 2
        if gated:
            out[f"{d}.ffn.gate_proj.weight"] = sd[f"{s}.{ff}.DenseReluDense.wi_0.weight"]  # act(x wi_0) * (x wi_1)
            out[f"{d}.ffn.up_proj.weight"] = sd[f"{s}.{ff}.DenseReluDense.wi_1.weight"]
        else:
            out[f"{d}.ffn.up_proj.weight"] = sd[f"{s}.{ff}.DenseReluDense.wi.weight"]
        out[f"{d}.ffn.down_proj.weight"] = sd[f"{s}.{ff}.DenseReluDense.wo.weight"]
        out[f"{d}.ffn_norm.weight"] = sd[f"{s}.{ff}.layer_norm.weight"]
    return out


def state_dict(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF weights under the course's names."""
    c = hf_model.config
    sd = hf_model.state_dict()
    sd["shared.weight"] = hf_model.shared.weight.detach()  # tied tensors may be listed under one name only
    gated = c.feed_forward_proj.startswith("gated-")
    out = {"tok_emb.weight": sd["shared.weight"]}
    out.update(_stack(sd, c.num_layers, "encoder", "encoder", gated, cross=False))
    out.update(_stack(sd, c.num_decoder_layers, "decoder", "decoder", gated, cross=True))
    if not _tied(hf_model):
        out["lm_head.weight"] = hf_model.lm_head.weight.detach()
    return out


def convert(hf_model: nn.Module) -> EncoderDecoderLM:
    """An :class:`EncoderDecoderLM` with the weights of ``hf_model`` (a ``T5ForConditionalGeneration``); same logits."""
    if getattr(hf_model, "lm_head", None) is None or getattr(hf_model, "shared", None) is None:
        raise ValueError(f"from_hf converts T5ForConditionalGeneration (encoder, decoder and LM head), got {type(hf_model).__name__}.")
    model = build_model(model_config(hf_model))
    model.load_state_dict(state_dict(hf_model), strict=True)
    return model.eval()
