"""A Transformer block: norm placement, attention (self and optionally cross), feed-forward, residuals.

Shape legend: ``B`` batch, ``T`` query length, ``S`` key length, ``D`` d_model.

Each sublayer ``G`` (self-attention, cross-attention, feed-forward) is wrapped
according to ``ModelConfig.norm_placement``:

- ``post``     (Vaswani et al. 2017):  ``x <- LN(x + G(x))``
- ``pre``      (Xiong et al. 2020):    ``x <- x + G(LN(x))``
- ``sandwich`` (Ding et al. 2021):     ``x <- x + LN'(G(LN(x)))``
- ``deepnorm`` (Wang et al. 2022):     ``x <- LN(alpha * x + G(x))``, with G's value, output
  and feed-forward weights initialised scaled by ``beta`` (see :func:`init_weights`)

and ``parallel_residual`` computes ``x + attn(LN1(x)) + ffn(LN2(x))`` (GPT-J, GPT-NeoX, PaLM).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .attention import KVCache, MultiHeadAttention
from .config import ModelConfig
from .ffn import FeedForward
from .norms import make_norm


def kernel_options(config: ModelConfig) -> dict:
    """Extra keyword arguments the configured attention kernel needs."""
    if config.attn_impl == "performer":
        return {"n_features": config.performer_features}
    return {}


def _attention(config: ModelConfig) -> MultiHeadAttention:
    return MultiHeadAttention(
        config.d_model,
        config.n_heads,
        config.resolved_n_kv_heads,
        config.resolved_head_dim,
        bias=config.bias,
        dropout=config.dropout,
        impl=config.attn_impl,
        scale=config.resolved_attn_scale,
        rope_pairing=config.rope_pairing,
        kernel_options=kernel_options(config),
    )


class LayerCache:
    """The KV caches of one block: self-attention, and cross-attention in an encoder-decoder."""

    def __init__(self) -> None:
        self.self_attn = KVCache()
        self.cross_attn = KVCache()


class Block(nn.Module):
    """One layer. Shapes: ``x (B, T, D)``, ``context (B, S, D)`` -> ``(B, T, D)``."""

    def __init__(self, config: ModelConfig, cross_attention: bool = False, alpha: float = 1.0) -> None:
        super().__init__()
        D, eps, nb = config.d_model, config.norm_eps, config.resolved_norm_bias
        self.placement = config.norm_placement
        self.parallel_residual = config.parallel_residual
        self.alpha = alpha  # DeepNorm's residual scale; 1 for the other placements
        self.attn_norm = make_norm(config.norm, D, eps, nb, fused=config.fused_kernels)
        self.attn = _attention(config)
        self.cross_attn = _attention(config) if cross_attention else None
        self.cross_norm = make_norm(config.norm, D, eps, nb, fused=config.fused_kernels) if cross_attention else None
        self.ffn_norm = make_norm(config.norm, D, eps, nb, fused=config.fused_kernels)
        self.ffn = FeedForward(
            D, config.resolved_d_ff, config.ffn, bias=config.bias, dropout=config.dropout, fused=config.fused_kernels
        )
        sandwich = self.placement == "sandwich"
        self.attn_post_norm = make_norm(config.norm, D, eps, nb, fused=config.fused_kernels) if sandwich else None
        self.cross_post_norm = make_norm(config.norm, D, eps, nb, fused=config.fused_kernels) if sandwich and cross_attention else None
        self.ffn_post_norm = make_norm(config.norm, D, eps, nb, fused=config.fused_kernels) if sandwich else None
        self.dropout = nn.Dropout(config.dropout)

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
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        context: torch.Tensor | None = None,
        context_bias: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        self_cache = cache.self_attn if cache is not None else None

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            return self.attn(h, bias=bias, causal=causal, rope=rope, cache=self_cache)

        if self.parallel_residual:
            return x + self.dropout(self_attention(self.attn_norm(x))) + self.dropout(self.ffn(self.ffn_norm(x)))
        x = self._sublayer(x, self_attention, self.attn_norm, self.attn_post_norm)
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("this block has cross-attention: pass the encoder output as context=(B, S, D).")
            cross_cache = cache.cross_attn if cache is not None else None

            def cross_attention(h: torch.Tensor) -> torch.Tensor:
                return self.cross_attn(h, context=context, bias=context_bias, cache=cross_cache)

            x = self._sublayer(x, cross_attention, self.cross_norm, self.cross_post_norm)
        return self._sublayer(x, self.ffn, self.ffn_norm, self.ffn_post_norm)


def init_weights(module: nn.Module, config: ModelConfig, n_layers: int, beta: float | None = None) -> None:
    """Initialise one stack's parameters.

    Linear and embedding weights ~ N(0, init_std), biases 0, norms 1. With
    ``scaled_residual_init`` the projections that write into the residual stream
    (``o_proj``, ``down_proj``) get ``init_std / sqrt(2 * n_layers)`` (GPT-2).
    With DeepNorm, ``beta`` is given: every attention and FFN matrix is Xavier-normal,
    with gain ``beta`` for the value, output and FFN projections (DeepNet, sec. 3).
    """
    std = config.init_std
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 2)
        pname = leaf[-1]
        parent = leaf[-2] if len(leaf) > 1 else ""
        if p.dim() == 1:
            if "norm" in parent:
                nn.init.ones_(p) if pname == "weight" else nn.init.zeros_(p)
            else:
                nn.init.zeros_(p)
            continue
        if beta is not None and parent in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            gain = 1.0 if parent in ("q_proj", "k_proj") else beta
            nn.init.xavier_normal_(p, gain=gain)
        elif config.scaled_residual_init and parent in ("o_proj", "down_proj"):
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * n_layers))
        else:
            nn.init.normal_(p, 0.0, std)
