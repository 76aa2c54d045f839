"""The one attention path: projections, heads, an additive bias, a choice of kernel, a KV cache.

Shape legend: ``B`` batch, ``T`` query length, ``S`` key length, ``D`` d_model,
``H`` query heads, ``K`` kv heads, ``Dh`` head_dim.

``attention(q, k, v, bias=..., causal=...)`` computes
``softmax(q k^T * scale + bias) v`` with one of several kernels
(``ModelConfig.attn_impl``): the explicit path below (scores, bias, softmax, all
visible), PyTorch's fused ``scaled_dot_product_attention``, and the efficient
kernels of :mod:`llmcourse.efficient_attention` (FlashAttention-style tiling,
Performer's random features). Causality is a flag rather than a materialised
``T x S`` mask so that a tiled kernel never has to build one; every other mask,
ALiBi and T5's buckets arrive in ``bias``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .masks import causal_bias, combine
from .positions import apply_rotary

Kernel = Callable[..., torch.Tensor]


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    scale: float,
    dropout_p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Attention written out. Shapes: ``q (B, H, T, Dh)``, ``k, v (B, H, S, Dh)``, ``bias (1|B, 1|H, T, S)`` -> ``(B, H, T, Dh)``."""
    T, S = q.shape[-2], k.shape[-2]
    attn_scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
    if causal:
        attn_scores = attn_scores + causal_bias(T, S, device=q.device)  # queries are the last T of S positions
    if bias is not None:
        attn_scores = attn_scores + bias
    attn_weights = torch.softmax(attn_scores.float(), dim=-1).to(q.dtype)  # softmax in float32
    if dropout_p and training:
        attn_weights = F.dropout(attn_weights, p=dropout_p)
    return attn_weights @ v  # (B, H, T, Dh)


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    scale: float,
    dropout_p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """The same computation through PyTorch's fused kernel (``F.scaled_dot_product_attention``)."""
    T, S = q.shape[-2], k.shape[-2]
    # SDPA's is_causal aligns the mask to the top-left corner, right only when T == S.
    use_flag = causal and bias is None and T == S
    mask = None if use_flag else combine(causal_bias(T, S, device=q.device) if causal else None, bias)
    if mask is not None:
        mask = mask.to(q.dtype)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0, is_causal=use_flag, scale=scale
    )


def get_kernel(impl: str) -> Kernel:
    """The attention kernel named by ``ModelConfig.attn_impl``."""
    if impl == "explicit":
        return explicit_attention
    if impl == "sdpa":
        return sdpa_attention
    from . import efficient_attention  # floor 2: tiled and random-feature kernels

    kernels = getattr(efficient_attention, "KERNELS", {})
    if impl not in kernels:
        raise ValueError(f"attn_impl={impl!r} is not a known kernel; choose one of explicit, sdpa, {', '.join(kernels)}.")
    return kernels[impl]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Share each kv head with ``n_rep`` query heads. Shapes: ``(B, K, S, Dh) -> (B, K * n_rep, S, Dh)``."""
    if n_rep == 1:
        return x
    B, K, S, Dh = x.shape
    return x[:, :, None].expand(B, K, n_rep, S, Dh).reshape(B, K * n_rep, S, Dh)


class KVCache:
    """Keys and values of the tokens seen so far, for one attention layer.

    Self-attention appends each step's new keys and values. Cross-attention
    computes them once from the encoder output (``static``) and reuses them.
    Keys are cached after RoPE, so a cached key keeps the rotation of its own position.
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None  # (B, K, S, Dh)
        self.v: torch.Tensor | None = None
        self.static = False

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def nbytes(self) -> int:
        """Memory held by the cache: ``2 * B * K * S * Dh * bytes_per_element``."""
        return 0 if self.k is None else self.k.nelement() * self.k.element_size() * 2


class MultiHeadAttention(nn.Module):
    """Multi-head, multi-query (``n_kv_heads=1``) or grouped-query attention.

    Self-attention when ``context`` is ``None``; cross-attention to ``context``
    (the encoder output) otherwise. Shapes: ``x (B, T, D)``, ``context (B, S, D)`` -> ``(B, T, D)``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        impl: str = "explicit",
        scale: float | None = None,
        rope_pairing: str = "half",
        kernel_options: dict | None = None,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must divide n_heads={n_heads}.")
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}; pass head_dim or change n_heads.")
            head_dim = d_model // n_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5 if scale is None else scale
        self.dropout = dropout
        self.impl = impl
        self.kernel = get_kernel(impl)
        self.kernel_options = dict(kernel_options or {})
        self.rope_pairing = rope_pairing
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, n, self.head_dim).transpose(1, 2)  # (B, L, n*Dh) -> (B, n, L, Dh)

    def forward(
        self,
        x: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        causal: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self._heads(self.q_proj(x), self.n_heads)  # (B, H, T, Dh)
        if cache is not None and cache.static:
            k, v = cache.k, cache.v  # cross-attention keys computed on the first step
        else:
            source = x if context is None else context
            k = self._heads(self.k_proj(source), self.n_kv_heads)  # (B, K, S, Dh)
            v = self._heads(self.v_proj(source), self.n_kv_heads)
            if rope is not None:
                cos, sin = rope
                q = apply_rotary(q, cos, sin, self.rope_pairing)
                k = apply_rotary(k, cos, sin, self.rope_pairing)
            if cache is not None:
                k, v = cache.append(k, v)
                cache.static = context is not None
        n_rep = self.n_heads // self.n_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, S, Dh)
        context_vectors = self.kernel(
            q, k, v, bias=bias, causal=causal, scale=self.scale, dropout_p=self.dropout, training=self.training,
            **self.kernel_options,
        )  # (B, H, T, Dh)
        context_vectors = context_vectors.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(context_vectors)  # (B, T, D)
