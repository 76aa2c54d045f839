"""``SwitchTransformersForConditionalGeneration`` <-> :class:`~llmcourse.models.EncoderDecoderLM` with top-1 experts.

Shape legend: ``D`` d_model, ``H`` heads, ``Dh`` head_dim (``d_kv``), ``F`` d_ff, ``E`` experts, ``V`` vocab.

The Switch Transformer (Fedus et al. 2021) is T5 v1.0 (pre-norm RMSNorm without bias, relative
position buckets, no ``1/sqrt(Dh)`` scaling, head tied to the shared embedding and scaled by
``D^-0.5``) whose
feed-forward block is, on every ``sparse_step``-th layer, a top-1 mixture of ``E`` experts.
What ``transformers`` 5 (``SwitchTransformersTop1Router`` and ``SwitchTransformersSparseMLP``)
does, read from its source, and how the course matches it:

- **Router**: ``softmax(x W_r (+ b))`` in float32 (``router_dtype``), argmax expert, gate =
  the top probability: the course's top-1 router (``router_bias`` carried over).
- **Capacity**: a fixed ``expert_capacity`` per expert, counted *per sequence*: HF routes the
  unflattened ``(B, T, D)`` states and ranks tokens with a cumulative sum along ``T``, so each
  row has its own capacity and the first tokens of a row fill an expert. The course's rule is
  the same within a row; the converted layers get ``capacity_scope="sequence"`` (the course
  default, ``"batch"``, lets all ``B T`` tokens of a call compete).
- **Dropped tokens**: HF 5 starts from zeros and adds only the routed tokens' weighted expert
  outputs, so a dropped token leaves the MoE layer as zero and the residual carries it; the
  course does the same. (Older ``transformers`` releases passed a dropped token through the
  layer multiplied by its router probability instead; that behaviour is not reproduced.)
- **Sparse layers**: layer ``i`` of a stack is sparse when ``i % sparse_step == 1`` (or
  ``sparse_step == 1``): layers 1, 3, 5... for ``sparse_step=2``, i.e. ``moe_every=2,
  moe_offset=1``. The converter applies HF's rule to ``encoder_sparse_step`` and
  ``decoder_sparse_step`` and finds the ``(moe_every, moe_offset)`` that reproduces both stacks;
  the course has one pattern for both, so stacks with different patterns raise ``ValueError``.
- **Embeddings**: ``tie_word_embeddings=True`` (every released checkpoint) ties the encoder's,
  the decoder's and the output matrix to ``shared``; with False, ``transformers`` 5 unties all
  three and leaves ``shared`` unused, which this converter rejects (``ValueError``).
- **Jitter** (training only): HF multiplies its router input in place, and for float32 states
  ``.to(float32)`` returns the same tensor, so the experts see the noisy states too; the course
  jitters the router's input only (Switch, sec. 2.4). Eval logits are unaffected.
- **Auxiliary losses**: HF computes them once over all layers' logits, per sequence group,
  with ``f_i`` from the argmax; the course adds one balance and one z-loss per layer, over all
  tokens of the call. Both coefficients are carried over.
"""

from __future__ import annotations


from torch import nn

from ..config import ModelConfig
from ..models import EncoderDecoderLM
from .base import Converter, Needs, Rule, convert_from_hf, plain, require

# HF dense_act_fn -> course ffn (Switch experts and dense layers are plain two-matrix FFNs)
_FFNS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "silu": "swish"}
_HF_FFNS = {ours: theirs for theirs, ours in _FFNS.items()}
_PROJ = (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj"))


def _stack_rules(stack: str, cross: bool) -> tuple[Rule, ...]:
    """One stack: sublayer 0 self-attention, 1 cross-attention (decoder), then the FFN, dense or sparse."""
    L, B = f"{stack}.block.{{i}}.layer.", f"{stack}.blocks.{{i}}."
    ffn = L + ("2" if cross else "1") + "."
    rules = [
        Rule(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", f"{stack}.positions.relative_attention_bias.weight"),
        *(Rule(L + f"0.SelfAttention.{theirs}.weight", B + f"attn.{ours}.weight") for theirs, ours in _PROJ),
        Rule(L + "0.layer_norm.weight", B + "attn_norm.weight"),
        Rule(ffn + "layer_norm.weight", B + "ffn_norm.weight"),
        Rule(ffn + "mlp.wi.weight", B + "ffn.up_proj.weight"),  # dense layers
        Rule(ffn + "mlp.wo.weight", B + "ffn.down_proj.weight"),
        Rule(ffn + "mlp.router.classifier.{p}", B + "ffn.router.gate.{p}"),  # sparse layers
        Rule(ffn + "mlp.experts.expert_{e:[0-9]+}.wi.weight", B + "ffn.experts.{e}.up_proj.weight"),
        Rule(ffn + "mlp.experts.expert_{e:[0-9]+}.wo.weight", B + "ffn.experts.{e}.down_proj.weight"),
        Rule(f"{stack}.final_layer_norm.weight", f"{stack}.final_norm.weight"),
    ]
    if cross:
        rules += [Rule(L + f"1.EncDecAttention.{theirs}.weight", B + f"cross_attn.{ours}.weight") for theirs, ours in _PROJ]
        rules.append(Rule(L + "1.layer_norm.weight", B + "cross_norm.weight"))
    return tuple(rules)


RULES = (Rule("shared.weight", "tok_emb.weight"), *_stack_rules("encoder", cross=False), *_stack_rules("decoder", cross=True))


def sparse_layers(n_layers: int, sparse_step: int) -> list[bool]:
    """HF's rule (``SwitchTransformersStack``): layer ``i`` is sparse when ``i % step == 1`` or ``step == 1``."""
    return [(i % sparse_step == 1 or sparse_step == 1) if sparse_step > 0 else False for i in range(n_layers)]


def moe_pattern(encoder: list[bool], decoder: list[bool]) -> tuple[int, int] | None:
    """The ``(moe_every, moe_offset)`` that makes exactly the given layers sparse in both stacks (None: none is)."""
    if not any(encoder) and not any(decoder):
        return None
    n = max(len(encoder), len(decoder))
    for every in range(1, n + 1):
        for offset in range(n):
            def rule(i: int) -> bool:
                return i >= offset and (i - offset) % every == 0

            if all(rule(i) == s for i, s in enumerate(encoder)) and all(rule(i) == s for i, s in enumerate(decoder)):
                return every, offset
    raise ValueError(
        f"the encoder's sparse layers {[i for i, s in enumerate(encoder) if s]} and the decoder's "
        f"{[i for i, s in enumerate(decoder) if s]} (encoder_sparse_step, decoder_sparse_step) follow no single "
        "moe_every/moe_offset pattern; the course's ModelConfig has one pattern for both stacks."
    )


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``SwitchTransformersConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    if c.dense_act_fn not in _FFNS:
        raise ValueError(f"dense_act_fn={c.dense_act_fn!r} has no course FFN; Switch converts with one of {', '.join(_FFNS)}.")
    if c.router_dtype != "float32":
        raise ValueError(
            f"router_dtype={c.router_dtype!r}: the course's router always computes in float32 (Switch's selective "
            "precision); convert a model whose router_dtype is 'float32'."
        )
    if not c.tie_word_embeddings:
        raise ValueError(
            "tie_word_embeddings=False: transformers 5 then gives the encoder, the decoder and the head their own "
            "matrices and leaves `shared` unused; the converter reads tied Switch models (every released checkpoint)."
        )
    n_dec = c.num_decoder_layers if c.num_decoder_layers is not None else c.num_layers
    pattern = moe_pattern(sparse_layers(c.num_layers, c.encoder_sparse_step), sparse_layers(n_dec, c.decoder_sparse_step))
    moe = {}
    if pattern is not None:
        moe = dict(
            n_experts=c.num_experts, top_k=1, capacity_factor=None, expert_capacity=c.expert_capacity,
            router_jitter=float(c.router_jitter_noise), router_bias=bool(c.router_bias),
            balance_loss_coef=float(c.router_aux_loss_coef), router_z_loss_coef=float(c.router_z_loss_coef),
            moe_every=pattern[0], moe_offset=pattern[1],
            moe_capacity_scope="sequence",  # HF ranks tokens per row
        )
    start = getattr(c, "decoder_start_token_id", None)
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=c.vocab_size,
        d_model=c.d_model,
        n_heads=c.num_heads,
        head_dim=c.d_kv,
        d_ff=c.d_ff,
        n_encoder_layers=c.num_layers,
        n_layers=n_dec,
        max_seq_len=int(getattr(c, "n_positions", None) or 512),  # relative positions: a soft limit only
        norm="rmsnorm",
        norm_eps=c.layer_norm_epsilon,
        norm_placement="pre",
        ffn=_FFNS[c.dense_act_fn],
        position="t5",
        rel_num_buckets=c.relative_attention_num_buckets,
        rel_max_distance=c.relative_attention_max_distance,
        attn_scale=1.0,
        bias=False,
        share_embeddings=True,
        tie_embeddings=True,
        logit_scale=c.d_model**-0.5,  # HF rescales before the tied head
        pad_token_id=c.pad_token_id,
        decoder_start_token_id=int(start if start is not None else c.pad_token_id or 0),
        **moe,
    )


def _num_sparse(n_layers: int, step: int, field: str) -> int:
    """The ``num_sparse_*_layers`` whose derived ``sparse_step = n_layers // num_sparse`` is ``step``."""
    n = n_layers // step
    if n < 1 or n_layers // n != step:
        raise ValueError(
            f"SwitchTransformersConfig derives sparse_step = layers // {field}, and no {field} gives a step of {step} "
            f"for {n_layers} layers; choose moe_every dividing the layer count."
        )
    return n


def hf_config(config: ModelConfig) -> dict:
    """The ``SwitchTransformersConfig`` keyword arguments of ``config``; ``ValueError`` names a field Switch cannot express."""
    d_scale = config.d_model**-0.5
    require(
        config, "SwitchTransformersForConditionalGeneration", arch="encoder_decoder",
        **{**plain(config), "attn_scale": 1.0, "logit_scale": d_scale,
           "n_experts": Needs(lambda v: v > 0, "a positive number of experts")},
        norm="rmsnorm", norm_placement="pre", final_norm=True, embed_norm=False, parallel_residual=False,
        position="t5", bias=False, share_embeddings=True, tie_embeddings=True, n_kv_heads=config.n_heads,
        ffn=tuple(_HF_FFNS), top_k=1, capacity_factor=None,
        expert_capacity=Needs(lambda v: v is not None, "an absolute capacity (HF has no capacity factor)"),
        n_shared_experts=0, expert_d_ff=(None, config.resolved_d_ff), moe_capacity_scope="sequence",
        moe_every=Needs(lambda v: v == 1 and config.moe_offset == 0 or v >= 2 and config.moe_offset == 1,
                        "1 with moe_offset=0, or >= 2 with moe_offset=1 (HF's sparse_step)"),
    )
    step, n_enc = config.moe_every, config.resolved_n_encoder_layers
    return dict(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        num_heads=config.n_heads,
        d_kv=config.resolved_head_dim,
        d_ff=config.resolved_d_ff,
        num_layers=n_enc,
        num_decoder_layers=config.n_layers,
        num_sparse_encoder_layers=_num_sparse(n_enc, step, "num_sparse_encoder_layers"),
        num_sparse_decoder_layers=_num_sparse(config.n_layers, step, "num_sparse_decoder_layers"),
        num_experts=config.n_experts,
        expert_capacity=config.expert_capacity,
        router_bias=config.router_bias,
        router_jitter_noise=config.router_jitter,
        router_z_loss_coef=config.router_z_loss_coef,
        router_aux_loss_coef=config.balance_loss_coef,
        layer_norm_epsilon=config.norm_eps,
        dense_act_fn=_HF_FFNS[config.ffn],
        relative_attention_num_buckets=config.rel_num_buckets,
        relative_attention_max_distance=config.rel_max_distance,
        tie_word_embeddings=True,
        dropout_rate=0.0,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=None,
        eos_token_id=None,
    )


CONVERTER = Converter(
    model_type="switch_transformers", hf_class="SwitchTransformersForConditionalGeneration",
    hf_config_class="SwitchTransformersConfig", model_config=model_config, hf_config=hf_config, rules=RULES,
    embedding="shared.weight", aliases=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"),
)


def convert(hf_model: nn.Module) -> EncoderDecoderLM:
    """An :class:`EncoderDecoderLM` with the weights of ``hf_model`` (a ``SwitchTransformersForConditionalGeneration``).

    Same logits, dropped tokens included: every MoE layer counts capacity per sequence as HF does.
    """
    return convert_from_hf(CONVERTER, hf_model)
