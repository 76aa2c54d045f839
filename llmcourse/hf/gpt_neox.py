"""``GPTNeoXForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

GPT-NeoX (Black et al. 2022) is a pre-LayerNorm causal decoder with two twists
the course expresses as config options: rotary positions on only the first
``rotary_pct * Dh`` dimensions of each head (``rotary_dim``; "rotate half"
pairing within them), and the parallel residual ``x + attn(LN1(x)) + ffn(LN2(x))``
(``parallel_residual``). Its output head is untied from the input embedding.

The one layout detail: NeoX fuses the query, key and value projections into
``query_key_value`` with its output grouped *per head* as ``(H, 3, Dh)``, so
the split takes every head's three slices, not three contiguous thirds
(:data:`~llmcourse.hf.base.QKV_PER_HEAD`).
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM
from .base import QKV_PER_HEAD, Converter, Rule, convert_from_hf, plain, require, special_tokens

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}

L, B = "gpt_neox.layers.{i}.", "decoder.blocks.{i}."
RULES = (
    Rule("gpt_neox.embed_in.weight", "tok_emb.weight"),
    Rule(L + "input_layernorm.{p}", B + "attn_norm.{p}"),
    Rule(L + "attention.query_key_value.{p}", (B + "attn.q_proj.{p}", B + "attn.k_proj.{p}", B + "attn.v_proj.{p}"), QKV_PER_HEAD),
    Rule(L + "attention.dense.{p}", B + "attn.o_proj.{p}"),
    Rule(L + "post_attention_layernorm.{p}", B + "ffn_norm.{p}"),
    Rule(L + "mlp.dense_h_to_4h.{p}", B + "ffn.up_proj.{p}"),
    Rule(L + "mlp.dense_4h_to_h.{p}", B + "ffn.down_proj.{p}"),
    Rule("gpt_neox.final_layer_norm.{p}", "decoder.final_norm.{p}"),
)


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


def _rotary_factor(rotary_dim: int, head_dim: int) -> float:
    """The ``partial_rotary_factor`` that NeoX's ``int(head_dim * factor)`` turns back into ``rotary_dim``."""
    factor = rotary_dim / head_dim
    return factor if int(head_dim * factor) == rotary_dim else (rotary_dim + 1e-6) / head_dim  # 10/24*24 = 9.999...


def hf_config(config: ModelConfig) -> dict:
    """The ``GPTNeoXConfig`` keyword arguments of ``config``; raises ``ValueError`` naming a field NeoX cannot express."""
    require(
        config, "GPTNeoXForCausalLM", arch="decoder", **plain(config), norm="layernorm", norm_placement="pre",
        final_norm=True, embed_norm=False, position="rope", rope_pairing="half", bias=True, norm_bias=True,
        n_kv_heads=config.n_heads, head_dim=config.d_model // config.n_heads, ffn=tuple(_HF_ACTIVATIONS),
    )
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_attention_heads=config.n_heads,
        intermediate_size=config.resolved_d_ff,
        num_hidden_layers=config.n_layers,
        max_position_embeddings=config.max_seq_len,
        layer_norm_eps=config.norm_eps,
        hidden_act=_HF_ACTIVATIONS[config.ffn],
        rope_parameters={
            "rope_type": "default", "rope_theta": float(config.rope_theta),
            "partial_rotary_factor": _rotary_factor(config.resolved_rotary_dim, config.resolved_head_dim),
        },
        use_parallel_residual=config.parallel_residual,
        attention_bias=True,
        tie_word_embeddings=config.tie_embeddings,
        hidden_dropout=0.0, attention_dropout=0.0,
        **special_tokens(config),
    )


CONVERTER = Converter(
    model_type="gpt_neox", hf_class="GPTNeoXForCausalLM", hf_config_class="GPTNeoXConfig",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="gpt_neox.embed_in.weight",
)


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``GPTNeoXForCausalLM``); same logits."""
    return convert_from_hf(CONVERTER, hf_model)
