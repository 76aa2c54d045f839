"""``OPTForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM`.

Shape legend: ``D`` d_model, ``F`` d_ff, ``V`` vocab.

OPT (Zhang et al. 2022) is GPT-3's recipe made public: a causal decoder with
learned absolute positions, LayerNorm, ReLU, biases in every linear layer and an
output head tied to the token embedding. Pre-LN for every size but one: the
350m model normalises after each residual sum (``do_layer_norm_before=False``,
our ``norm_placement='post'``, with no final norm).

Two details of its checkpoints:

- the position table has **two extra rows** in front: OPT computes position
  ids as ``cumsum(attention_mask) - 1`` and adds an offset of 2 (a habit of
  fairseq, where rows 0 and 1 belonged to padding), so position ``t`` reads row
  ``t + 2``; the course's table is the HF table without its first two rows
  (:func:`~llmcourse.hf.base.offset_rows`);
- ``enable_bias=False`` removes the biases of the linear layers but keeps those
  of the LayerNorms, which is ``bias=False, norm_bias=True`` here.

The 350m model also projects its 512-wide embeddings to the 1024-wide stack and
back (``word_embed_proj_dim``, ``project_in``/``project_out``), which the course
has no layer for: converting it raises ``ValueError``.
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM
from .base import Converter, Rule, convert_from_hf, offset_rows, plain, require, special_tokens

POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding.offset
NORM_EPS = 1e-5  # OPT builds nn.LayerNorm with its default eps; the config has no field for it

_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "silu": "swish", "swish": "swish"}
_HF_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "swish": "silu"}

L, B = "model.decoder.layers.{i}.", "decoder.blocks.{i}."
RULES = (
    Rule("model.decoder.embed_tokens.weight", "tok_emb.weight"),
    Rule("model.decoder.embed_positions.weight", "decoder.positions.weight", offset_rows(POSITION_OFFSET)),
    Rule(L + "self_attn_layer_norm.{p}", B + "attn_norm.{p}"),
    Rule(L + "self_attn.{proj:q_proj|k_proj|v_proj}.{p}", B + "attn.{proj}.{p}"),
    Rule(L + "self_attn.out_proj.{p}", B + "attn.o_proj.{p}"),
    Rule(L + "final_layer_norm.{p}", B + "ffn_norm.{p}"),  # the norm of the FFN sublayer, despite its name
    Rule(L + "fc1.{p}", B + "ffn.up_proj.{p}"),
    Rule(L + "fc2.{p}", B + "ffn.down_proj.{p}"),
    Rule("model.decoder.final_layer_norm.{p}", "decoder.final_norm.{p}"),
)


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of an ``OPTConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    if c.word_embed_proj_dim != c.hidden_size:
        raise ValueError(
            f"word_embed_proj_dim={c.word_embed_proj_dim} differs from hidden_size={c.hidden_size}: this OPT "
            "(like opt-350m) projects its embeddings in and out of the stack (project_in/project_out), which the "
            "course's DecoderLM has no layer for. Only word_embed_proj_dim == hidden_size converts."
        )
    if not getattr(c, "layer_norm_elementwise_affine", True):
        raise ValueError(
            "layer_norm_elementwise_affine=False: LayerNorms without gain or bias are not a course option "
            "(every course norm has a gain); only layer_norm_elementwise_affine=True converts."
        )
    if c.activation_function not in _ACTIVATIONS:
        raise ValueError(
            f"activation_function={c.activation_function!r} has no course FFN; OPT converts with one of {', '.join(_ACTIVATIONS)}."
        )
    pre = bool(c.do_layer_norm_before)
    return ModelConfig(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_heads=c.num_attention_heads,
        d_ff=c.ffn_dim,
        n_layers=c.num_hidden_layers,
        max_seq_len=c.max_position_embeddings,
        norm="layernorm",
        norm_eps=NORM_EPS,
        norm_placement="pre" if pre else "post",
        final_norm=pre and not getattr(c, "_remove_final_layer_norm", False),  # OPT has no final norm after post-LN
        ffn=_ACTIVATIONS[c.activation_function],
        position="learned",
        bias=bool(getattr(c, "enable_bias", True)),
        norm_bias=True,
        tie_embeddings=bool(c.tie_word_embeddings),
        pad_token_id=c.pad_token_id if c.pad_token_id is not None and c.pad_token_id < c.vocab_size else None,
    )


def hf_config(config: ModelConfig) -> dict:
    """The ``OPTConfig`` keyword arguments of ``config``; raises ``ValueError`` naming a field OPT cannot express."""
    pre = config.norm_placement == "pre"
    require(
        config, "OPTForCausalLM", arch="decoder", **plain(config), norm="layernorm", norm_placement=("pre", "post"),
        final_norm=(True, False) if pre else False, embed_norm=False, parallel_residual=False, position="learned",
        norm_bias=True, norm_eps=NORM_EPS, n_kv_heads=config.n_heads, head_dim=config.d_model // config.n_heads,
        ffn=tuple(_HF_ACTIVATIONS),
    )
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        word_embed_proj_dim=config.d_model,
        num_attention_heads=config.n_heads,
        ffn_dim=config.resolved_d_ff,
        num_hidden_layers=config.n_layers,
        max_position_embeddings=config.max_seq_len,
        do_layer_norm_before=pre,
        _remove_final_layer_norm=pre and not config.resolved_final_norm,
        activation_function=_HF_ACTIVATIONS[config.ffn],
        enable_bias=config.bias,
        layer_norm_elementwise_affine=True,
        tie_word_embeddings=config.tie_embeddings,
        dropout=0.0, attention_dropout=0.0, layerdrop=0.0,
        **special_tokens(config),
    )


CONVERTER = Converter(
    model_type="opt", hf_class="OPTForCausalLM", hf_config_class="OPTConfig",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="model.decoder.embed_tokens.weight",
)


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (an ``OPTForCausalLM``); same logits."""
    return convert_from_hf(CONVERTER, hf_model)
