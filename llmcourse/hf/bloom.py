"""``BloomForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``Dh`` head_dim, ``V`` vocab.

BLOOM (Scao et al. 2022) is a pre-LayerNorm causal decoder with ALiBi instead of
position embeddings, a LayerNorm right after the token embedding
(``embed_norm``), GeLU in its tanh form, biases everywhere and a tied output
head. Two details matter for equal logits:

- BLOOM adds ``+m_h * j`` (the key position only) where the paper subtracts
  ``m_h * (i - j)``; the two differ by ``m_h * i``, the same for every key of a
  query, which the softmax ignores. Its slopes follow the paper's rule for head
  counts that are not powers of two, as :func:`llmcourse.positions.alibi_slopes` does.
- Its fused ``query_key_value`` is grouped per head as ``(H, 3, Dh)``, like GPT-NeoX
  (:data:`~llmcourse.hf.base.QKV_PER_HEAD`).
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM
from .base import QKV_PER_HEAD, Converter, Rule, convert_from_hf, plain, require, special_tokens

DEFAULT_CONTEXT = 2048  # BLOOM's training length; ALiBi itself has no table that limits it

L, B = "transformer.h.{i}.", "decoder.blocks.{i}."
RULES = (
    Rule("transformer.word_embeddings.weight", "tok_emb.weight"),
    Rule("transformer.word_embeddings_layernorm.{p}", "decoder.embed_norm.{p}"),
    Rule(L + "input_layernorm.{p}", B + "attn_norm.{p}"),
    Rule(L + "self_attention.query_key_value.{p}", (B + "attn.q_proj.{p}", B + "attn.k_proj.{p}", B + "attn.v_proj.{p}"), QKV_PER_HEAD),
    Rule(L + "self_attention.dense.{p}", B + "attn.o_proj.{p}"),
    Rule(L + "post_attention_layernorm.{p}", B + "ffn_norm.{p}"),
    Rule(L + "mlp.dense_h_to_4h.{p}", B + "ffn.up_proj.{p}"),
    Rule(L + "mlp.dense_4h_to_h.{p}", B + "ffn.down_proj.{p}"),
    Rule("transformer.ln_f.{p}", "decoder.final_norm.{p}"),
)


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


def hf_config(config: ModelConfig) -> dict:
    """The ``BloomConfig`` keyword arguments of ``config``; raises ``ValueError`` naming a field BLOOM cannot express."""
    require(
        config, "BloomForCausalLM", arch="decoder", **plain(config), norm="layernorm", norm_placement="pre",
        final_norm=True, embed_norm=True, parallel_residual=False, position="alibi", bias=True, norm_bias=True,
        n_kv_heads=config.n_heads, head_dim=config.d_model // config.n_heads, ffn="gelu_tanh", d_ff=4 * config.d_model,
    )
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        n_head=config.n_heads,
        n_layer=config.n_layers,
        seq_length=config.max_seq_len,
        layer_norm_epsilon=config.norm_eps,
        apply_residual_connection_post_layernorm=False,
        tie_word_embeddings=config.tie_embeddings,
        hidden_dropout=0.0, attention_dropout=0.0,
        **special_tokens(config),
    )


CONVERTER = Converter(
    model_type="bloom", hf_class="BloomForCausalLM", hf_config_class="BloomConfig",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="transformer.word_embeddings.weight",
)


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``BloomForCausalLM``); same logits."""
    return convert_from_hf(CONVERTER, hf_model)
