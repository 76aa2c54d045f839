"""``Qwen3ForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

Qwen3 (Yang et al. 2025) drops Qwen2's query-key-value biases and adds QK-norm:
an RMSNorm over each head's query and key vectors (over ``Dh``, one gain of
``Dh`` values shared by all heads; eps ``rms_norm_eps``), applied after the
projections and before RoPE. That is the course's ``qk_norm=True``
(:class:`~llmcourse.attention.MultiHeadAttention` normalises ``(B, H, T, Dh)``
over its last dimension, then rotates). ``head_dim`` is a field of its own,
not ``D / H``. The rest, names included, is Llama's.

``attention_bias=True`` puts biases on the output projection as well but not
on the feed-forward, which ``bias``/``qkv_bias`` cannot say: it raises
``ValueError`` (released Qwen3 checkpoints have ``attention_bias=False``).
"""

from __future__ import annotations

from ..config import ModelConfig
from .base import Converter, Rule
from .llama import RULES as LLAMA_RULES
from .llama import llama_like_config, llama_like_hf_config, refuse_attention_bias, require_llama_like
from .qwen2 import ANY_WINDOW, sliding_window, window_kwargs

RULES = (
    *LLAMA_RULES,
    Rule("model.layers.{i}.self_attn.{norm:q_norm|k_norm}.weight", "decoder.blocks.{i}.attn.{norm}.weight"),
)


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``Qwen3Config``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    refuse_attention_bias(c)
    return llama_like_config(c, bias=False, qk_norm=True, sliding_window=sliding_window(c))


def hf_config(config: ModelConfig) -> dict:
    """The ``Qwen3Config`` keyword arguments of ``config``; raises ``ValueError`` naming a field Qwen3 cannot express."""
    require_llama_like(config, "Qwen3ForCausalLM", qk_norm=True, bias=False, sliding_window=ANY_WINDOW)
    return llama_like_hf_config(config, attention_bias=False, **window_kwargs(config), attention_dropout=0.0)


CONVERTER = Converter(
    model_type="qwen3", hf_class="Qwen3ForCausalLM", hf_config_class="Qwen3Config",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="model.embed_tokens.weight",
)

