"""``MixtralForCausalLM`` -> :class:`~llmcourse.models.DecoderLM` with a mixture of experts in every layer.

Shape legend: ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff of one expert,
``E`` experts, ``V`` vocab.

Mixtral (Jiang et al. 2024) is a Mistral/Llama decoder (pre-norm RMSNorm, rotary positions
paired "rotate half", grouped-query attention, no biases, optional sliding window) whose
feed-forward block is a sparse mixture of ``E`` SwiGLU experts in every layer. Its router, as
``transformers`` 5 computes it (``MixtralTopKRouter``), is the course's top-k router exactly:
``softmax(x W_r)`` in float32, the ``k`` largest probabilities, renormalised to sum to 1; no
capacity limit, so no token is ever dropped (``capacity_factor=None``). One difference: HF
renormalises for every ``k``, so with ``num_experts_per_tok=1`` its gate is exactly 1, where the
course's top-1 rule (Switch) keeps the top probability; the converted routers get
``renormalize=True`` (the same function for ``k > 1``, HF's for ``k = 1``).

What the conversion maps (HF -> course):

- ``mlp.gate.weight (E, D)``                  -> ``ffn.router.gate.weight``
- ``mlp.experts.gate_up_proj (E, 2F, D)``     -> ``ffn.experts.{e}.gate_proj.weight`` (rows ``:F``)
  and ``ffn.experts.{e}.up_proj.weight`` (rows ``F:``): HF runs ``x W^T`` and splits the result
  in two halves, gate first
- ``mlp.experts.down_proj (E, D, F)``         -> ``ffn.experts.{e}.down_proj.weight``
- attention and norms as in Llama.

Differences that do not change the logits in eval mode, written down so nobody is surprised:

- **Jitter.** HF multiplies the whole hidden state by the noise (router *and* experts see it)
  while training; the course follows Switch and jitters the router's input only. The noise
  level is carried over (``router_jitter``).
- **Balance loss.** HF's ``load_balancing_loss_func`` counts ``f_i`` per *token* (the ``f_i``
  sum to ``k``) and pools the counts of all layers before multiplying; the course counts per
  *assignment* (they sum to 1) and adds one loss per layer. ``router_aux_loss_coef`` is carried
  over as ``balance_loss_coef``, so the course's loss is about ``L / k`` times HF's. Mixtral has
  no z-loss (``router_z_loss_coef=0``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..models import DecoderLM, build_model
from ..moe import moe_layers

_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "relu": "reglu"}


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
    )


def state_dict(hf_model: nn.Module) -> dict[str, torch.Tensor]:
    """The HF weights under the course's names (the stacked expert tensors split per expert)."""
    c = hf_model.config
    sd = hf_model.state_dict()
    F = c.intermediate_size
    out = {"tok_emb.weight": sd["model.embed_tokens.weight"], "decoder.final_norm.weight": sd["model.norm.weight"]}
    for i in range(c.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"decoder.blocks.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[f"{dst}attn.{proj}.weight"] = sd[f"{src}self_attn.{proj}.weight"]
        out[f"{dst}attn_norm.weight"] = sd[f"{src}input_layernorm.weight"]
        out[f"{dst}ffn_norm.weight"] = sd[f"{src}post_attention_layernorm.weight"]
        out[f"{dst}ffn.router.gate.weight"] = sd[f"{src}mlp.gate.weight"]  # (E, D)
        gate_up = sd[f"{src}mlp.experts.gate_up_proj"]  # (E, 2F, D)
        down = sd[f"{src}mlp.experts.down_proj"]  # (E, D, F)
        for e in range(c.num_local_experts):
            out[f"{dst}ffn.experts.{e}.gate_proj.weight"] = gate_up[e, :F]  # (F, D)
            out[f"{dst}ffn.experts.{e}.up_proj.weight"] = gate_up[e, F:]  # (F, D)
            out[f"{dst}ffn.experts.{e}.down_proj.weight"] = down[e]  # (D, F)
    if not c.tie_word_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def convert(hf_model: nn.Module) -> DecoderLM:
    """A :class:`DecoderLM` with the weights of ``hf_model`` (a ``MixtralForCausalLM``); same logits."""
    if getattr(hf_model, "lm_head", None) is None:
        raise ValueError(f"from_hf converts MixtralForCausalLM (model and LM head), got {type(hf_model).__name__}.")
    model = build_model(model_config(hf_model.config))
    model.load_state_dict(state_dict(hf_model), strict=True)
    for layer in moe_layers(model):
        layer.router.renormalize = True  # HF renormalises the top-k gates for every k, k = 1 included
    return model.eval()
