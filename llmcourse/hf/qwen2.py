"""``Qwen2ForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

Qwen2 (Yang et al. 2024) is a Llama (pre-norm RMSNorm, SwiGLU, rotary positions
paired "rotate half", grouped-query attention) with one difference in its
weights: the query, key and value projections have biases, the output
projection and the feed-forward have none. The course says so with
``bias=False, qkv_bias=True``. Its parameter names are Llama's, so the name map
is :data:`llmcourse.hf.llama.RULES`.

Qwen2 can also restrict attention to a sliding window on the layers from
``max_window_layers`` on (``use_sliding_window=True``); the course has one
``sliding_window`` for every layer, so only a window on all layers
(``max_window_layers=0``) or none converts.
"""

from __future__ import annotations

from ..config import ModelConfig
from .base import Converter, Needs
from .llama import RULES, llama_like_config, llama_like_hf_config, require_llama_like


def sliding_window(c) -> int | None:
    """The one window of every layer (``None``: full attention); ``ValueError`` when only some layers slide."""
    if not getattr(c, "use_sliding_window", False) or getattr(c, "sliding_window", None) is None:
        return None
    kinds = set(getattr(c, "layer_types", None) or ["sliding_attention"])
    if kinds != {"sliding_attention"}:
        raise ValueError(
            f"use_sliding_window=True with max_window_layers={getattr(c, 'max_window_layers', None)} slides the "
            f"window over some layers only (layer_types: {sorted(kinds)}); the course's sliding_window applies to "
            "every layer, so only max_window_layers=0 (or use_sliding_window=False) converts."
        )
    return int(c.sliding_window)


ANY_WINDOW = Needs(lambda v: True, "any window")  # the HF class slides one window over every layer


def window_kwargs(config: ModelConfig) -> dict:
    """The HF keyword arguments of ``config.sliding_window``: a window on every layer, or none."""
    if config.sliding_window is None:
        return dict(use_sliding_window=False)
    return dict(use_sliding_window=True, sliding_window=config.sliding_window, max_window_layers=0)


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``Qwen2Config``; raises ``ValueError`` for what the course cannot express."""
    return llama_like_config(hf_config, bias=False, qkv_bias=True, sliding_window=sliding_window(hf_config))


def hf_config(config: ModelConfig) -> dict:
    """The ``Qwen2Config`` keyword arguments of ``config``; raises ``ValueError`` naming a field Qwen2 cannot express."""
    require_llama_like(config, "Qwen2ForCausalLM", bias=False, qkv_bias=True, sliding_window=ANY_WINDOW)
    return llama_like_hf_config(config, **window_kwargs(config), attention_dropout=0.0)


CONVERTER = Converter(
    model_type="qwen2", hf_class="Qwen2ForCausalLM", hf_config_class="Qwen2Config",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="model.embed_tokens.weight",
)

