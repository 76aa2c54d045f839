"""``T5ForConditionalGeneration`` <-> :class:`~llmcourse.models.EncoderDecoderLM`.

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
In ``transformers`` >= 5 a ``T5Config`` always says ``tie_word_embeddings=True`` and
keeps the v1.0 output scaling in ``scale_decoder_outputs``; whether the head is
tied is read from the weights (:func:`llmcourse.hf.base.is_tied`).
"""

from __future__ import annotations

import math

from torch import nn

from ..config import ModelConfig
from ..ffn import is_gated
from ..models import EncoderDecoderLM
from .base import Converter, Needs, Rule, convert_from_hf, plain, require

# HF feed_forward_proj -> course ffn. "gated-gelu" runs gelu_new (the tanh form) in transformers.
_FFNS = {"relu": "relu", "gated-gelu": "geglu_tanh", "gated-relu": "reglu", "gated-silu": "swiglu", "gelu": "gelu", "gelu_new": "gelu_tanh"}
_HF_FFNS = {ours: theirs for theirs, ours in _FFNS.items()}
_PROJ = (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj"))


def _gated(config: ModelConfig) -> bool:
    return is_gated(config.ffn)


def _stack_rules(stack: str, cross: bool) -> tuple[Rule, ...]:
    """The rules of one T5 stack: sublayer 0 self-attention, 1 cross-attention (decoder), then the FFN."""
    L, B = f"{stack}.block.{{i}}.layer.", f"{stack}.blocks.{{i}}."
    ffn = L + ("2" if cross else "1") + "."
    rules = [
        Rule(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", f"{stack}.positions.relative_attention_bias.weight"),
        *(Rule(L + f"0.SelfAttention.{theirs}.weight", B + f"attn.{ours}.weight") for theirs, ours in _PROJ),
        Rule(L + "0.layer_norm.weight", B + "attn_norm.weight"),
        Rule(ffn + "DenseReluDense.wi.weight", B + "ffn.up_proj.weight", when=lambda c: not _gated(c)),
        Rule(ffn + "DenseReluDense.wi_0.weight", B + "ffn.gate_proj.weight", when=_gated),  # act(x wi_0) * (x wi_1)
        Rule(ffn + "DenseReluDense.wi_1.weight", B + "ffn.up_proj.weight", when=_gated),
        Rule(ffn + "DenseReluDense.wo.weight", B + "ffn.down_proj.weight"),
        Rule(ffn + "layer_norm.weight", B + "ffn_norm.weight"),
        Rule(f"{stack}.final_layer_norm.weight", f"{stack}.final_norm.weight"),
    ]
    if cross:
        rules += [Rule(L + f"1.EncDecAttention.{theirs}.weight", B + f"cross_attn.{ours}.weight") for theirs, ours in _PROJ]
        rules.append(Rule(L + "1.layer_norm.weight", B + "cross_norm.weight"))
    return tuple(rules)


RULES = (Rule("shared.weight", "tok_emb.weight"), *_stack_rules("encoder", cross=False), *_stack_rules("decoder", cross=True))


def _scaled(hf_config) -> bool:
    # transformers >= 5 records the v1.0 output scaling as scale_decoder_outputs; older versions as tie_word_embeddings
    return bool(getattr(hf_config, "scale_decoder_outputs", getattr(hf_config, "tie_word_embeddings", True)))


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``T5Config``; raises ``ValueError`` for what the course cannot express.

    Also accepts a T5 model (its ``.config`` is read), as earlier versions of this function did.
    """
    c = getattr(hf_config, "config", hf_config)
    if c.feed_forward_proj not in _FFNS:
        raise ValueError(f"feed_forward_proj={c.feed_forward_proj!r} has no course FFN; T5 converts with one of {', '.join(_FFNS)}.")
    start = getattr(c, "decoder_start_token_id", None)
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
        tie_embeddings=True,  # the weights decide (is_tied): transformers >= 5 always says True
        logit_scale=c.d_model**-0.5 if _scaled(c) else 1.0,
        pad_token_id=c.pad_token_id,
        decoder_start_token_id=int(start if start is not None else c.pad_token_id or 0),
    )


def hf_config(config: ModelConfig) -> dict:
    """The ``T5Config`` keyword arguments of ``config``; raises ``ValueError`` naming a field T5 cannot express."""
    d_scale = config.d_model**-0.5
    require(
        config, "T5ForConditionalGeneration", arch="encoder_decoder",
        **{**plain(config), "attn_scale": 1.0, "logit_scale": Needs(
            lambda v: math.isclose(v, 1.0) or math.isclose(v, d_scale), f"1.0 or d_model**-0.5 ({d_scale:.6g})")},
        norm="rmsnorm", norm_placement="pre", final_norm=True, embed_norm=False, parallel_residual=False,
        position="t5", bias=False, share_embeddings=True, n_kv_heads=config.n_heads, ffn=tuple(_HF_FFNS),
    )
    return dict(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        num_heads=config.n_heads,
        d_kv=config.resolved_head_dim,
        d_ff=config.resolved_d_ff,
        num_layers=config.resolved_n_encoder_layers,
        num_decoder_layers=config.n_layers,
        n_positions=config.max_seq_len,
        layer_norm_epsilon=config.norm_eps,
        feed_forward_proj=_HF_FFNS[config.ffn],
        relative_attention_num_buckets=config.rel_num_buckets,
        relative_attention_max_distance=config.rel_max_distance,
        tie_word_embeddings=not math.isclose(config.logit_scale, 1.0),  # read by T5Config as scale_decoder_outputs
        dropout_rate=0.0,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=None,
        eos_token_id=None,
    )


CONVERTER = Converter(
    model_type="t5", hf_class="T5ForConditionalGeneration", hf_config_class="T5Config",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="shared.weight",
    aliases=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"),
)


def convert(hf_model: nn.Module) -> EncoderDecoderLM:
    """An :class:`EncoderDecoderLM` with the weights of ``hf_model`` (a ``T5ForConditionalGeneration``); same logits."""
    return convert_from_hf(CONVERTER, hf_model)
