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

from ..config import ModelConfig
from .base import Converter, Needs
from .llama import RULES, llama_like_config, llama_like_hf_config, refuse_attention_bias, require_llama_like

NORM_GAIN_OFFSET = 1.0  # GemmaRMSNorm: x_hat * (1 + w)
_FFNS = ("geglu_tanh", "swiglu", "reglu")  # GemmaConfig turns hidden_act="gelu" into the tanh form


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``GemmaConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    refuse_attention_bias(c)
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

