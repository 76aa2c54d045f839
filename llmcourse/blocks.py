"""A Transformer block: norm placement, attention (self and optionally cross), feed-forward, residuals.

Shape legend: ``B`` batch, ``T`` query length, ``S`` key length, ``D`` d_model.

Each sublayer ``G`` (self-attention, cross-attention, feed-forward) is wrapped
according to ``ModelConfig.norm_placement``:

- ``post``     (Vaswani et al. 2017):  ``x <- LN(x + G(x))``
- ``pre``      (Xiong et al. 2020):    ``x <- x + G(LN(x))``
- ``sandwich`` (Ding et al. 2021):     ``x <- x + LN'(G(LN(x)))``
- ``deepnorm`` (Wang et al. 2022):     ``x <- LN(alpha * x + G(x))``, with G's value, output
  and feed-forward weights initialised scaled by ``beta`` (see :func:`init_weights`)

and ``parallel_residual`` computes ``x + attn(LN1(x)) + ffn(LN2(x))`` (GPT-NeoX), or with
``parallel_shared_norm`` one norm for both, ``x + attn(LN(x)) + ffn(LN(x))`` (GPT-J, PaLM, Falcon).
In a decoder with cross-attention the parallel form gets a third branch,
``x + attn(LN1(x)) + cross(LN3(x)) + ffn(LN2(x))``: every branch reads the same
block input, which is the point of the parallel form (PaLM fuses the branches'
input projections into one matmul), and the next layer still sees what the
cross-attention brought in. Placing cross-attention after the parallel pair
would bring back a sequential sublayer and lose that property.

What a placement implies besides the wiring (a final norm, post-norms, DeepNet's
constants, whether the parallel form is defined) is one table,
:data:`llmcourse.config.PLACEMENTS`; :meth:`Block._sublayer` is the one place
that applies a placement.

The feed-forward slot holds a dense :class:`~llmcourse.ffn.FeedForward` or, on
the layers ``ModelConfig.is_moe_layer`` names, a mixture of experts
(:mod:`llmcourse.moe`) with the same signature; what a component has to say
besides its output (auxiliary losses, statistics) goes through
:mod:`llmcourse.auxiliary`, never through these return values.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from . import auxiliary
from .attention import KVCache, MultiHeadAttention
from .config import ModelConfig
from .ffn import FeedForward
from .kernels import kernel_spec
from .masks import Pattern
from .norms import make_norm
from .positions import Rotation


def kernel_options(config: ModelConfig) -> dict:
    """Extra keyword arguments the configured attention kernel needs (declared in its registry entry)."""
    return kernel_spec(config.attn_impl).options_from(config)


def build_norm(config: ModelConfig) -> nn.Module:
    """A ``d_model``-wide norm as ``config`` describes it (kind, eps, bias, fused kernel, gain offset)."""
    return make_norm(
        config.norm, config.d_model, config.norm_eps, config.resolved_norm_bias, fused=config.fused_kernels,
        gain_offset=config.norm_gain_offset,
    )


def _attention(config: ModelConfig) -> MultiHeadAttention:
    return MultiHeadAttention(
        config.d_model,
        config.n_heads,
        config.resolved_n_kv_heads,
        config.resolved_head_dim,
        bias=config.bias,
        qkv_bias=config.resolved_qkv_bias,
        dropout=config.dropout,
        impl=config.attn_impl,
        scale=config.resolved_attn_scale,
        kernel_options=kernel_options(config),
        qk_norm=config.qk_norm,
        norm_eps=config.norm_eps,
        norm_gain_offset=config.norm_gain_offset,
    )


def feed_forward(config: ModelConfig, layer: int = 0) -> nn.Module:
    """The module in a block's feed-forward slot: dense, or a mixture of experts on MoE layers."""
    if config.is_moe_layer(layer):
        from .moe import MoEFeedForward  # floor 3; imported only when a config asks for experts

        return MoEFeedForward.from_config(config)
    return FeedForward(
        config.d_model, config.resolved_d_ff, config.ffn, bias=config.bias, dropout=config.dropout,
        fused=config.fused_kernels,
    )


class LayerCache:
    """The KV caches of one block: self-attention, and cross-attention in an encoder-decoder."""

    def __init__(self, window: int | None = None) -> None:
        self.self_attn = KVCache(window)
        self.cross_attn = KVCache()


class Block(nn.Module):
    """One layer. Shapes: ``x (B, T, D)``, ``context (B, S, D)`` -> ``(B, T, D)``."""

    def __init__(self, config: ModelConfig, cross_attention: bool = False, alpha: float = 1.0, layer: int = 0) -> None:
        super().__init__()
        def norm() -> nn.Module:
            return build_norm(config)

        self.placement = config.norm_placement
        self.parallel_residual = config.parallel_residual
        self.alpha = alpha  # DeepNorm's residual scale; 1 for the other placements
        self.attn_norm = norm()
        self.attn = _attention(config)
        self.cross_attn = _attention(config) if cross_attention else None
        self.cross_norm = norm() if cross_attention else None
        self.ffn_norm = None if config.parallel_shared_norm else norm()  # shared: attn_norm feeds the FFN too
        self.ffn = feed_forward(config, layer)
        post = config.placement.post_norms
        self.attn_post_norm = norm() if post else None
        self.cross_post_norm = norm() if post and cross_attention else None
        self.ffn_post_norm = norm() if post else None
        self.dropout = nn.Dropout(config.dropout)
        # Set by Trainer(TrainConfig(activation_checkpointing=True)); not a model field (the weights are the same):
        # keep only the block's input for backward and run its forward again there (see :meth:`forward`).
        self.activation_checkpointing = False

    def _sublayer(
        self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], norm: nn.Module, post_norm: nn.Module | None
    ) -> torch.Tensor:
        if self.placement == "pre":
            return x + self.dropout(fn(norm(x)))
        if self.placement == "sandwich":
            return x + self.dropout(post_norm(fn(norm(x))))
        if self.placement == "post":
            return norm(x + self.dropout(fn(x)))
        return norm(self.alpha * x + self.dropout(fn(x)))  # deepnorm: alpha scales the residual, not G(x)

    def forward(
        self,
        x: torch.Tensor,
        *,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        rope: Rotation | None = None,
        context: torch.Tensor | None = None,
        context_bias: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        pattern: Pattern | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = dict(bias=bias, causal=causal, rope=rope, context=context, context_bias=context_bias, cache=cache,
                      pattern=pattern, positions=positions)
        if self.activation_checkpointing and cache is None and torch.is_grad_enabled():
            return _checkpointed(self._forward, x, kwargs)
        return self._forward(x, **kwargs)

    def _forward(
        self,
        x: torch.Tensor,
        *,
        bias: torch.Tensor | None,
        causal: bool,
        rope: Rotation | None,
        context: torch.Tensor | None,
        context_bias: torch.Tensor | None,
        cache: LayerCache | None,
        pattern: Pattern | None,
        positions: torch.Tensor | None,
    ) -> torch.Tensor:
        self_cache = cache.self_attn if cache is not None else None

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            return self.attn(h, bias=bias, causal=causal, rope=rope, cache=self_cache, pattern=pattern, positions=positions)

        cross_attention = None
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("this block has cross-attention: pass the encoder output as context=(B, S, D).")
            cross_cache = cache.cross_attn if cache is not None else None

            def cross_attention(h: torch.Tensor) -> torch.Tensor:
                return self.cross_attn(h, context=context, bias=context_bias, cache=cross_cache)

        if self.parallel_residual:  # every branch reads the same block input (see the module docstring)
            h = self.attn_norm(x)
            ffn_in = h if self.ffn_norm is None else self.ffn_norm(x)
            out = x + self.dropout(self_attention(h)) + self.dropout(self.ffn(ffn_in))
            if cross_attention is not None:
                out = out + self.dropout(cross_attention(self.cross_norm(x)))
            return out
        x = self._sublayer(x, self_attention, self.attn_norm, self.attn_post_norm)
        if cross_attention is not None:
            x = self._sublayer(x, cross_attention, self.cross_norm, self.cross_post_norm)
        return self._sublayer(x, self.ffn, self.ffn_norm, self.ffn_post_norm)


def _checkpointed(forward: Callable[..., torch.Tensor], x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """``forward(x, **kwargs)`` under activation checkpointing (Chen et al. 2016): its intermediate tensors are freed
    and recomputed during backward, from the saved input, with the same dropout masks (the RNG state is replayed).

    The recomputation runs outside the trainer's :func:`~llmcourse.auxiliary.collect` block, so what a component
    reports there (an MoE balance loss) is caught and dropped: it was reported once, by the real forward pass.
    """
    from torch.utils.checkpoint import checkpoint

    calls = [0]

    def run(h: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 1:
            return forward(h, **kwargs)
        with auxiliary.collect():  # the recomputation in backward: reports go nowhere
            return forward(h, **kwargs)

    return checkpoint(run, x, use_reentrant=False)


INIT_ROLES = ("attn_qk", "attn_v", "residual_out", "ffn_in", "norm")
DEEPNORM_GAIN_ONE = ("attn_qk",)  # DeepNet scales value, output and FFN weights by beta, not queries and keys
DEEPNORM_SCALED = ("attn_v", "residual_out", "ffn_in")


def init_weights(module: nn.Module, config: ModelConfig, n_layers: int, beta: float | None = None) -> None:
    """Initialise one stack's parameters by the *role* each submodule declares (``module.init_role``).

    Linear and embedding weights ~ N(0, init_std), biases 0, norms (role
    ``"norm"``) gain 1 (weight ``1 - gain_offset``) and bias 0. With ``scaled_residual_init`` the
    projections that write into the residual stream (role ``"residual_out"``:
    ``o_proj``, ``down_proj``) get ``init_std / sqrt(2 * n_layers)`` (GPT-2).
    With DeepNorm, ``beta`` is given: every attention and FFN matrix is
    Xavier-normal, with gain ``beta`` for the value, output and FFN projections
    (roles ``attn_v``, ``residual_out``, ``ffn_in``) and 1 for queries and keys
    (DeepNet, sec. 3). A new component (a router, a latent projection) sets its
    own ``init_role`` instead of being recognised by its parameter names;
    without a role it gets the plain normal init.
    """
    std = config.init_std
    seen: set[int] = set()
    for sub in module.modules():  # the same order as module.named_parameters()
        role = getattr(sub, "init_role", None)  # one of INIT_ROLES, a component's own, or None
        for pname, p in sub.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if role == "norm":  # gain 1: weight 1 - gain_offset (Gemma stores gamma - 1)
                nn.init.constant_(p, 1.0 - getattr(sub, "gain_offset", 0.0)) if pname == "weight" else nn.init.zeros_(p)
            elif p.dim() == 1:
                nn.init.zeros_(p)
            elif beta is not None and role in DEEPNORM_GAIN_ONE + DEEPNORM_SCALED:
                nn.init.xavier_normal_(p, gain=1.0 if role in DEEPNORM_GAIN_ONE else beta)
            elif config.scaled_residual_init and role == "residual_out":
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layers))
            else:
                nn.init.normal_(p, 0.0, std)
