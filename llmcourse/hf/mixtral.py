"""``MixtralForCausalLM`` <-> :class:`~llmcourse.models.DecoderLM` with a mixture of experts in every layer.

Shape legend: ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff of one expert,
``E`` experts, ``V`` vocab.

Mixtral (Jiang et al. 2024) is a Mistral/Llama decoder (pre-norm RMSNorm, rotary positions
paired "rotate half", grouped-query attention, no biases, optional sliding window) whose
feed-forward block is a sparse mixture of ``E`` SwiGLU experts in every layer. Its router, as
``transformers`` 5 computes it (``MixtralTopKRouter``), is the course's top-k router:
``softmax(x W_r)`` in float32, the ``k`` largest probabilities, renormalised to sum to 1; no
capacity limit, so no token is ever dropped (``capacity_factor=None``). One difference: HF
renormalises for every ``k``, so with ``num_experts_per_tok=1`` its gate is exactly 1, where the
course's top-1 rule (Switch) keeps the top probability. The converted routers get
``router_renormalize=True`` (the same function for ``k > 1``, HF's for ``k = 1``).

The name map (:data:`RULES`, plus :func:`expert_rules` for the ``E`` experts):

- ``mlp.gate.weight (E, D)``                  <-> ``ffn.router.gate.weight``
- ``mlp.experts.gate_up_proj (E, 2F, D)``     <-> ``ffn.experts.{e}.gate_proj.weight`` (rows ``:F``)
  and ``ffn.experts.{e}.up_proj.weight`` (rows ``F:``): HF computes ``x W^T`` and splits the
  result in two halves, gate first
- ``mlp.experts.down_proj (E, D, F)``         <-> ``ffn.experts.{e}.down_proj.weight``
- attention and norms as in Llama.

Differences that do not change the logits in eval mode:

- **Jitter.** HF multiplies the whole hidden state by the noise (router *and* experts see it)
  while training; the course follows Switch and jitters the router's input only. The noise
  level is carried over (``router_jitter``).
- **Balance loss.** HF's ``load_balancing_loss_func`` counts ``f_i`` per *token* (the ``f_i``
  sum to ``k``) and pools the counts of all layers; the course counts per *assignment* (they
  sum to 1) and adds one loss per layer. ``router_aux_loss_coef`` is carried over as
  ``balance_loss_coef``, so the course's loss is about ``L / k`` times HF's. Mixtral has no
  z-loss (``router_z_loss_coef=0``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM
from .base import Converter, Needs, Rule, Transform, convert_from_hf, plain, require, special_tokens

_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "relu": "reglu"}
_HF_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu", "reglu": "relu"}

L, B = "model.layers.{i}.", "decoder.blocks.{i}."
RULES = (
    Rule("model.embed_tokens.weight", "tok_emb.weight"),
    Rule(L + "self_attn.{proj:q_proj|k_proj|v_proj|o_proj}.weight", B + "attn.{proj}.weight"),
    Rule(L + "input_layernorm.weight", B + "attn_norm.weight"),
    Rule(L + "post_attention_layernorm.weight", B + "ffn_norm.weight"),
    Rule(L + "mlp.gate.weight", B + "ffn.router.gate.weight"),
    Rule("model.norm.weight", "decoder.final_norm.weight"),
)

GATE_UP = Transform(
    "stacked experts (E, 2F, D): gate rows then up rows",
    lambda t, cfg: tuple(half for e in t for half in e.chunk(2, dim=0)),  # E x ((F, D), (F, D))
    lambda ts, cfg: torch.stack([torch.cat(ts[j : j + 2], dim=0) for j in range(0, len(ts), 2)]),
)
DOWN = Transform(
    "stacked experts (E, D, F)",
    lambda t, cfg: tuple(t.unbind(0)),  # E x (D, F)
    lambda ts, cfg: torch.stack(ts),
)


@functools.lru_cache(maxsize=None)
def expert_rules(n_experts: int) -> tuple[Rule, ...]:
    """The rules of the stacked expert tensors: one HF tensor <-> ``2 E`` or ``E`` course tensors."""
    gate_up = tuple(B + f"ffn.experts.{e}.{proj}.weight" for e in range(n_experts) for proj in ("gate_proj", "up_proj"))
    down = tuple(B + f"ffn.experts.{e}.down_proj.weight" for e in range(n_experts))
    return (Rule(L + "mlp.experts.gate_up_proj", gate_up, GATE_UP), Rule(L + "mlp.experts.down_proj", down, DOWN))


@dataclass(frozen=True)
class ExpertsConverter(Converter):
    """A :class:`~llmcourse.hf.base.Converter` whose rules also depend on the number of experts."""

    experts: Callable[[int], tuple[Rule, ...]] = expert_rules

    def all_rules(self, config: ModelConfig) -> list[Rule]:
        return [*self.experts(config.n_experts), *super().all_rules(config)]


def model_config(hf_config) -> ModelConfig:
    """The :class:`ModelConfig` of a ``MixtralConfig``; raises ``ValueError`` for what the course cannot express."""
    c = hf_config
    rope = dict(getattr(c, "rope_parameters", None) or {})
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(
            f"this Mixtral uses rope_type={rope_type!r} (a rescaled RoPE); the course converts rope_type='default' only."
        )
    if c.hidden_act not in _ACTIVATIONS:
        raise ValueError(f"hidden_act={c.hidden_act!r} has no gated FFN in the course; use one of {', '.join(_ACTIVATIONS)}.")
    extra = {"router_renormalize": True}  # HF renormalises the gates for every k, k = 1 included
    return ModelConfig(
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_heads=c.num_attention_heads,
        n_kv_heads=c.num_key_value_heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
        d_ff=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        max_seq_len=c.max_position_embeddings,
        norm="rmsnorm",
        norm_eps=c.rms_norm_eps,
        ffn=_ACTIVATIONS[c.hidden_act],
        position="rope",
        rope_theta=float(rope.get("rope_theta", 1e6)),
        rope_pairing="half",
        sliding_window=getattr(c, "sliding_window", None),
        bias=False,
        tie_embeddings=bool(c.tie_word_embeddings),
        n_experts=c.num_local_experts,
        top_k=c.num_experts_per_tok,
        capacity_factor=None,
        router_jitter=float(getattr(c, "router_jitter_noise", 0.0) or 0.0),
        router_bias=False,
        balance_loss_coef=float(c.router_aux_loss_coef),
        router_z_loss_coef=0.0,
        pad_token_id=c.pad_token_id,
        **extra,
    )


def hf_config(config: ModelConfig) -> dict:
    """The ``MixtralConfig`` keyword arguments of ``config``; raises ``ValueError`` naming a field Mixtral cannot express."""
    hd = config.resolved_head_dim
    require(
        config, "MixtralForCausalLM", arch="decoder",
        **{**plain(config), "n_experts": Needs(lambda v: v > 0, "a positive number of experts"),
           "sliding_window": Needs(lambda v: True, "any")},
        norm="rmsnorm", norm_placement="pre", final_norm=True, embed_norm=False, parallel_residual=False,
        position="rope", rope_pairing="half", rotary_dim=Needs(lambda v: v == hd, f"head_dim ({hd})"),
        ffn=tuple(_HF_ACTIVATIONS), bias=False, router_bias=False, capacity_factor=None, expert_capacity=None,
        n_shared_experts=0, moe_every=1, moe_offset=0,
        expert_d_ff=(None, config.resolved_d_ff),
    )
    if config.top_k == 1 and config.router_renormalize is not True:
        raise ValueError(
            "MixtralForCausalLM cannot express top_k=1 with the course's top-1 gate (the router probability): "
            "HF renormalises the single gate to 1; use top_k >= 2, or router_renormalize=True."
        )
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.resolved_n_kv_heads,
        head_dim=hd,
        intermediate_size=config.resolved_d_ff,
        num_hidden_layers=config.n_layers,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        hidden_act=_HF_ACTIVATIONS[config.ffn],
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        sliding_window=config.sliding_window,
        num_local_experts=config.n_experts,
        num_experts_per_tok=config.top_k,
        router_jitter_noise=config.router_jitter,
        router_aux_loss_coef=config.balance_loss_coef,
        tie_word_embeddings=config.tie_embeddings,
        **special_tokens(config),
    )


CONVERTER = ExpertsConverter(
    model_type="mixtral", hf_class="MixtralForCausalLM", hf_config_class="MixtralConfig",
    model_config=model_config, hf_config=hf_config, rules=RULES, embedding="model.embed_tokens.weight",
)


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``MixtralForCausalLM``); same logits, any ``k``."""
    return convert_from_hf(CONVERTER, hf_model)

