"""``SwitchTransformersForConditionalGeneration`` -> :class:`~llmcourse.models.EncoderDecoderLM` with top-1 experts.

Shape legend: ``D`` d_model, ``H`` heads, ``Dh`` head_dim (``d_kv``), ``F`` d_ff, ``E`` experts, ``V`` vocab.

The Switch Transformer (Fedus et al. 2021) is T5 v1.0 (pre-norm RMSNorm without bias, relative
position buckets, no ``1/sqrt(Dh)`` scaling, head tied to the embedding and scaled by ``D^-0.5``;
with ``tie_word_embeddings=False`` the encoder, the decoder and the head each have their own matrix) whose
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
  moe_offset=1``. The converter reads which blocks are sparse from the model and finds the
  ``(moe_every, moe_offset)`` that reproduces them in both stacks; the course has one pattern
  for both, so an encoder and a decoder with different patterns raise ``ValueError``.
- **Jitter** (training only): HF multiplies its router input in place, and for float32 states
  ``.to(float32)`` returns the same tensor, so the experts see the noisy states too; the course
  jitters the router's input only (Switch, sec. 2.4). Eval logits are unaffected.
- **Auxiliary losses**: HF computes them once over all layers' logits, per sequence group,
  with ``f_i`` from the argmax; the course adds one balance and one z-loss per layer, over all
  tokens of the call. Both coefficients are carried over.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..models import EncoderDecoderLM, build_model
from ..moe import moe_layers

# HF dense_act_fn -> course ffn (Switch experts and dense layers are plain two-matrix FFNs)
_FFNS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "silu": "swish"}


def _sparse_layers(stack: nn.Module) -> list[bool]:
    return [bool(block.is_sparse) for block in stack.block]


def _moe_pattern(encoder: list[bool], decoder: list[bool]) -> tuple[int, int] | None:
    """The ``(moe_every, moe_offset)`` that makes exactly the given layers sparse in both stacks (None: no sparse layer)."""
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


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr()


def _embeddings(hf_model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder's and decoder's token embeddings and the output head, as the stacks use them.

    With ``tie_word_embeddings=True`` all three are ``shared``; with False, ``transformers`` 5
    ties none of them: encoder and decoder read their own ``embed_tokens`` (``shared`` is unused).
    """
    return (hf_model.encoder.embed_tokens.weight.detach(), hf_model.decoder.embed_tokens.weight.detach(),
            hf_model.lm_head.weight.detach())


def _decoder_start(hf_model: nn.Module) -> int:
    for source in (hf_model.config, getattr(hf_model, "generation_config", None)):
        value = getattr(source, "decoder_start_token_id", None)
        if value is not None:
            return int(value)
    return int(hf_model.config.pad_token_id or 0)


def model_config(hf_model: nn.Module) -> ModelConfig:
    """The :class:`ModelConfig` of a Switch Transformers model; raises ``ValueError`` for what the course cannot express."""
    c = hf_model.config
    if c.dense_act_fn not in _FFNS:
        raise ValueError(f"dense_act_fn={c.dense_act_fn!r} has no course FFN; Switch converts with one of {', '.join(_FFNS)}.")
    if c.router_dtype != "float32":
        raise ValueError(
            f"router_dtype={c.router_dtype!r}: the course's router always computes in float32 (Switch's selective "
            "precision); convert a model whose router_dtype is 'float32'."
        )
    pattern = _moe_pattern(_sparse_layers(hf_model.encoder), _sparse_layers(hf_model.decoder))
    moe = {}
    if pattern is not None:
        moe = dict(
            n_experts=c.num_experts,
            top_k=1,
            capacity_factor=None,
            expert_capacity=c.expert_capacity,
            router_jitter=float(c.router_jitter_noise),
            router_bias=bool(c.router_bias),
            balance_loss_coef=float(c.router_aux_loss_coef),
            router_z_loss_coef=float(c.router_z_loss_coef),
            moe_every=pattern[0],
            moe_offset=pattern[1],
        )
    enc, dec, head = _embeddings(hf_model)
    return ModelConfig(
        arch="encoder_decoder",
        vocab_size=c.vocab_size,
        d_model=c.d_model,
        n_heads=c.num_heads,
        head_dim=c.d_kv,
        d_ff=c.d_ff,
        n_encoder_layers=len(hf_model.encoder.block),
        n_layers=len(hf_model.decoder.block),
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
        share_embeddings=_same(enc, dec),
        tie_embeddings=_same(head, dec),
        logit_scale=c.d_model**-0.5 if c.tie_word_embeddings else 1.0,  # HF rescales by the flag, tied or not
        pad_token_id=c.pad_token_id,
        decoder_start_token_id=_decoder_start(hf_model),
        **moe,
    )


def _stack(sd: dict[str, torch.Tensor], sparse: list[bool], n_experts: int, src: str, dst: str, cross: bool) -> dict:
    out = {
        f"{dst}.positions.relative_attention_bias.weight": sd[f"{src}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        f"{dst}.final_norm.weight": sd[f"{src}.final_layer_norm.weight"],
    }
    for i, is_sparse in enumerate(sparse):
        s, d = f"{src}.block.{i}.layer", f"{dst}.blocks.{i}"
        for ours, theirs in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o")):
            out[f"{d}.attn.{ours}.weight"] = sd[f"{s}.0.SelfAttention.{theirs}.weight"]
        out[f"{d}.attn_norm.weight"] = sd[f"{s}.0.layer_norm.weight"]
        ff = 1
        if cross:
            for ours, theirs in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"), ("o_proj", "o")):
                out[f"{d}.cross_attn.{ours}.weight"] = sd[f"{s}.1.EncDecAttention.{theirs}.weight"]
            out[f"{d}.cross_norm.weight"] = sd[f"{s}.1.layer_norm.weight"]
            ff = 2
        out[f"{d}.ffn_norm.weight"] = sd[f"{s}.{ff}.layer_norm.weight"]
        mlp = f"{s}.{ff}.mlp"
        if not is_sparse:
            out[f"{d}.ffn.up_proj.weight"] = sd[f"{mlp}.wi.weight"]
            out[f"{d}.ffn.down_proj.weight"] = sd[f"{mlp}.wo.weight"]
            continue
        out[f"{d}.ffn.router.gate.weight"] = sd[f"{mlp}.router.classifier.weight"]  # (E, D)
        if f"{mlp}.router.classifier.bias" in sd:
            out[f"{d}.ffn.router.gate.bias"] = sd[f"{mlp}.router.classifier.bias"]
        for e in range(n_experts):
            out[f"{d}.ffn.experts.{e}.up_proj.weight"] = sd[f"{mlp}.experts.expert_{e}.wi.weight"]
            out[f"{d}.ffn.experts.{e}.down_proj.weight"] = sd[f"{mlp}.experts.expert_{e}.wo.weight"]
    return out


def state_dict(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF weights under the course's names."""
    c = hf_model.config
    sd = dict(hf_model.state_dict())
    enc, dec, head = _embeddings(hf_model)  # tied tensors may be listed under one name only: read the modules
    out = {"tok_emb.weight": enc}
    if not _same(enc, dec):
        out["dec_emb.weight"] = dec
    if not _same(head, dec):
        out["lm_head.weight"] = head
    out.update(_stack(sd, _sparse_layers(hf_model.encoder), c.num_experts, "encoder", "encoder", cross=False))
    out.update(_stack(sd, _sparse_layers(hf_model.decoder), c.num_experts, "decoder", "decoder", cross=True))
    return out


def convert(hf_model: nn.Module) -> EncoderDecoderLM:
    """An :class:`EncoderDecoderLM` with the weights of ``hf_model`` (a ``SwitchTransformersForConditionalGeneration``).

    Same logits, dropped tokens included: every MoE layer counts capacity per sequence as HF does.
    """
    if getattr(hf_model, "lm_head", None) is None or getattr(hf_model, "shared", None) is None:
        raise ValueError(
            "from_hf converts SwitchTransformersForConditionalGeneration (encoder, decoder and LM head), "
            f"got {type(hf_model).__name__}."
        )
    model = build_model(model_config(hf_model))
    model.load_state_dict(state_dict(hf_model), strict=True)
    for layer in moe_layers(model):
        layer.capacity_scope = "sequence"  # HF ranks tokens per row (see the module docstring)
    return model.eval()
