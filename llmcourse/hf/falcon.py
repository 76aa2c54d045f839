"""``FalconForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

Falcon (Almazrouei et al. 2023) is a pre-LayerNorm causal decoder with rotary
positions ("rotate half" over the whole head), a plain (ungated) feed-forward,
LayerNorms with biases, linear layers with biases only when ``bias=True``, and
a tied output head. Three of its config switches change the block; the course
expresses each with config values:

- ``parallel_attn=True`` (Falcon-7B): ``x + attn(LN(x)) + mlp(LN(x))``, one norm
  (``input_layernorm``) for both branches: ``parallel_residual=True,
  parallel_shared_norm=True``;
- ``new_decoder_architecture=True`` (Falcon-40B/180B) with its default
  ``num_ln_in_parallel_attn=2``: ``x + attn(LN1(x)) + mlp(LN2(x))`` (``ln_attn``,
  ``ln_mlp``) and grouped-query attention with ``num_kv_heads``:
  ``parallel_residual=True``; with ``num_ln_in_parallel_attn=1`` one norm again
  (``parallel_shared_norm=True``);
- ``parallel_attn=False``: the sequential pre-LN block, the course's default.

Without the new architecture, ``multi_query=True`` (the default) is one shared
key and value head (``n_kv_heads=1``), ``False`` multi-head attention. The fused
``query_key_value`` is grouped per kv head as ``(K, H/K + 2, Dh)``: a group's
query heads, then its key, then its value (:data:`~llmcourse.hf.base.QKV_PER_KV_GROUP`);
multi-query is the case ``K = 1`` and multi-head ``K = H``, BLOOM's ``(H, 3, Dh)``.

What does not convert raises ``ValueError`` naming the field: ``alibi=True``
(Falcon adds its ALiBi bias before the ``1/sqrt(Dh)`` scaling, so its slopes
differ from the paper's and the course's), ``new_decoder_architecture=True``
with ``parallel_attn=False`` and ``parallel_attn=True`` with
``num_ln_in_parallel_attn=2`` in the old architecture (transformers builds
norms for these that its forward does not use: the models do not run), a
rescaled ``rope_type``, and activations without a course FFN.
"""

from __future__ import annotations

from ..config import ModelConfig
from .base import QKV_PER_KV_GROUP, Converter, Needs, Rule, plain, require, special_tokens
from .llama import rope_theta

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                "silu": "swish", "swish": "swish"}
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "swish": "silu"}


def _two_parallel_norms(c: ModelConfig) -> bool:
    return c.parallel_residual and not c.parallel_shared_norm


L, B = "transformer.h.{i}.", "decoder.blocks.{i}."
RULES = (
    Rule("transformer.word_embeddings.weight", "tok_emb.weight"),
    Rule(L + "self_attention.query_key_value.{p}", (B + "attn.q_proj.{p}", B + "attn.k_proj.{p}", B + "attn.v_proj.{p}"),
         QKV_PER_KV_GROUP),
    Rule(L + "self_attention.dense.{p}", B + "attn.o_proj.{p}"),
    Rule(L + "mlp.dense_h_to_4h.{p}", B + "ffn.up_proj.{p}"),
    Rule(L + "mlp.dense_4h_to_h.{p}", B + "ffn.down_proj.{p}"),
    # sequential, or parallel with one norm: input_layernorm (and post_attention_layernorm when sequential)
    Rule(L + "input_layernorm.{p}", B + "attn_norm.{p}", when=lambda c: not _two_parallel_norms(c)),
    Rule(L + "post_attention_layernorm.{p}", B + "ffn_norm.{p}", when=lambda c: not c.parallel_residual),
    # the new decoder architecture's two parallel norms
    Rule(L + "ln_attn.{p}", B + "attn_norm.{p}", when=_two_parallel_norms),
    Rule(L + "ln_mlp.{p}", B + "ffn_norm.{p}", when=_two_parallel_norms),
    Rule("transformer.ln_f.{p}", "decoder.final_norm.{p}"),
)


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``FalconConfig``; raises ``ValueError`` naming the HF field the course cannot express."""
    c = hf_config
    if c.alibi:
        raise ValueError(
            "alibi=True: Falcon adds its ALiBi bias to q k^T before scaling by 1/sqrt(head_dim), which shrinks the "
            "slopes away from the paper's (the course's position='alibi'); only alibi=False (rotary) converts."
        )
    if c.activation not in _ACTIVATIONS:
        raise ValueError(f"activation={c.activation!r} has no course FFN; Falcon converts with one of {', '.join(_ACTIVATIONS)}.")
    new, parallel = bool(c.new_decoder_architecture), bool(c.parallel_attn)
    n_ln = c.num_ln_in_parallel_attn or (2 if new else 1)  # FalconDecoderLayer's default
    if new and not parallel:
        raise ValueError(
            "new_decoder_architecture=True with parallel_attn=False: transformers builds input_layernorm and "
            "post_attention_layernorm for it but runs ln_attn/ln_mlp (the model does not run); set parallel_attn=True."
        )
    if n_ln not in (1, 2) or (parallel and not new and n_ln == 2):
        raise ValueError(
            f"num_ln_in_parallel_attn={c.num_ln_in_parallel_attn} with new_decoder_architecture={new}: transformers "
            "runs this block with norms it does not build; use 1, or 2 with new_decoder_architecture=True."
        )
    if new:
        kv = c.num_kv_heads
    else:
        kv = 1 if c.multi_query else c.num_attention_heads
    return ModelConfig(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_heads=c.num_attention_heads,
        n_kv_heads=kv,
        d_ff=c.ffn_hidden_size,
        n_layers=c.num_hidden_layers,
        max_seq_len=c.max_position_embeddings,
        norm="layernorm",
        norm_eps=c.layer_norm_epsilon,
        ffn=_ACTIVATIONS[c.activation],
        position="rope",
        rope_theta=rope_theta(c),
        rope_pairing="half",
        parallel_residual=parallel,
        parallel_shared_norm=parallel and n_ln == 1,
        bias=bool(c.bias),
        norm_bias=True,
        tie_embeddings=bool(c.tie_word_embeddings),
    )


def hf_config(config: ModelConfig) -> dict:
    """The ``FalconConfig`` keyword arguments of ``config``; raises ``ValueError`` naming a field Falcon cannot express."""
    H, K = config.n_heads, config.resolved_n_kv_heads
    shared = config.parallel_shared_norm
    require(
        config, "FalconForCausalLM", arch="decoder", **{**plain(config), "parallel_shared_norm": (True, False)},
        norm="layernorm", norm_placement="pre", final_norm=True, embed_norm=False, position="rope",
        rope_pairing="half", rotary_dim=Needs(lambda v: v == config.resolved_head_dim, "head_dim"), norm_bias=True,
        head_dim=config.d_model // H, ffn=tuple(_HF_ACTIVATIONS),
        n_kv_heads=Needs(lambda v: config.parallel_residual or v in (1, H),
                         f"1 or n_heads ({H}): Falcon's sequential block is multi-query or multi-head"),
    )
    new = config.parallel_residual and (not shared or K not in (1, H))
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_attention_heads=H,
        num_kv_heads=K,
        num_hidden_layers=config.n_layers,
        ffn_hidden_size=config.resolved_d_ff,
        max_position_embeddings=config.max_seq_len,
        layer_norm_epsilon=config.norm_eps,
        activation=_HF_ACTIVATIONS[config.ffn],
        bias=config.bias,
        alibi=False,
        new_decoder_architecture=new,
        multi_query=K == 1,
        parallel_attn=config.parallel_residual,
        num_ln_in_parallel_attn=(1 if shared else 2) if new else None,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        tie_word_embeddings=config.tie_embeddings,
        hidden_dropout=0.0, attention_dropout=0.0,
        **special_tokens(config),
    )


CONVERTER = Converter(
    model_type="falcon", hf_class="FalconForCausalLM", hf_config_class="FalconConfig",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="transformer.word_embeddings.weight",
)

