"""``GemmaForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

Gemma (Gemma Team 2024) is a Llama-shaped decoder (pre-norm RMSNorm, gated FFN,
rotary positions paired "rotate half", grouped- or multi-query attention, no
biases) with four details, each a course config value:

- GeGLU with the tanh GeLU (``hidden_act="gelu_pytorch_tanh"``): ``ffn="geglu_tanh"``;
- its RMSNorm multiplies by ``1 + w`` and stores ``w`` (zero at initialisation):
  ``norm_gain_offset=1.0``, so the weights load unchanged;
- the token embeddings are multiplied by ``sqrt(D)`` before the first layer
  (``embed_scale``; the scale is cast to the weights' dtype first, and the tied
  output head reads the unscaled table);
- ``head_dim`` is a field of its own (256 in Gemma 7B, whose ``H * Dh`` is not ``D``),
  and the output head is tied to the embedding.

Names are Llama's (:data:`llmcourse.hf.llama.RULES`). ``attention_bias=True``
(biases on q, k, v and the output, none on the FFN) and
``use_bidirectional_attention=True`` (no causal mask) raise ``ValueError``.
"""

from __future__ import annotations

import math

from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM
from .base import Converter, Needs, convert_from_hf
from .llama import RULES, llama_like_config, llama_like_hf_config, require_llama_like

NORM_GAIN_OFFSET = 1.0  # GemmaRMSNorm: x_hat * (1 + w)
_FFNS = ("geglu_tanh", "swiglu", "reglu")  # GemmaConfig turns hidden_act="gelu" into the tanh form


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``GemmaConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    if c.attention_bias:
        raise ValueError(
            "attention_bias=True biases the query, key, value and output projections but not the feed-forward; "
            "the course's bias and qkv_bias cannot say that. Only attention_bias=False converts."
        )
    if getattr(c, "use_bidirectional_attention", None):
        raise ValueError(
            "use_bidirectional_attention=True removes the causal mask (an encoder); the course's DecoderLM is causal "
            "or a prefix decoder. Only use_bidirectional_attention=False/None converts."
        )
    return llama_like_config(
        c, bias=False, norm_gain_offset=NORM_GAIN_OFFSET, embed_scale=math.sqrt(c.hidden_size),
    )


def hf_config(config: ModelConfig) -> dict:
    """The ``GemmaConfig`` keyword arguments of ``config``; raises ``ValueError`` naming a field Gemma cannot express."""
    scale = math.sqrt(config.d_model)
    require_llama_like(
        config, "GemmaForCausalLM", ffns=_FFNS, bias=False, norm_gain_offset=NORM_GAIN_OFFSET,
        embed_scale=Needs(lambda v: math.isclose(v, scale, rel_tol=1e-6), f"sqrt(d_model) = {scale!r}"),
    )
    return llama_like_hf_config(config, attention_bias=False, attention_dropout=0.0)


CONVERTER = Converter(
    model_type="gemma", hf_class="GemmaForCausalLM", hf_config_class="GemmaConfig",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="model.embed_tokens.weight",
)


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``GemmaForCausalLM``); same logits."""
    return convert_from_hf(CONVERTER, hf_model)
