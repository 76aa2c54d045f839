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
ALiBi and T5's buckets arrive in ``bias``, and a sparse pattern arrives as a
:class:`~llmcourse.masks.Pattern` that the kernels able to (the registry's
capability flags, :mod:`llmcourse.kernels`) apply tile by tile and the others
receive as a bias.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import kernel_spec
from .masks import Pattern, causal_bias, combine, masked_value
from .norms import RMSNorm
from .positions import Rotation

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
    # scores in at least float32: a float16 q k^T overflows long before the scaled scores would
    wide = torch.promote_types(q.dtype, torch.float32)  # at least float32, never narrower than q
    attn_scores = (q.to(wide) @ k.to(wide).transpose(-2, -1)) * scale  # (B, H, T, S)
    if causal:
        attn_scores = attn_scores + causal_bias(T, S, device=q.device)  # queries are the last T of S positions
    if bias is not None:
        attn_scores = attn_scores + bias
    attn_weights = torch.softmax(attn_scores.to(wide), dim=-1).to(q.dtype)
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
        if q.dtype.is_floating_point and torch.finfo(q.dtype).bits < 32:  # -1e9 is -inf in float16
            mask = mask.clamp_min(masked_value(q.dtype))
        mask = mask.to(q.dtype)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0, is_causal=use_flag, scale=scale
    )


def get_kernel(impl: str) -> Kernel:
    """The attention kernel named by ``ModelConfig.attn_impl`` (looked up in :data:`llmcourse.kernels.KERNELS`)."""
    return kernel_spec(impl).function()


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

    With a ``window`` (``ModelConfig.sliding_window``) only the last ``window``
    keys are kept after each step, so memory stays bounded however long the
    generation runs. ``index`` and ``positions`` record, for the keys kept, their
    index in the sequence and their position ids (which relative encodings and
    sparse patterns need once old keys are gone); ``seen`` counts every token
    ever appended (the next token's index).
    """

    def __init__(self, window: int | None = None) -> None:
        self.k: torch.Tensor | None = None  # (B, K, S, Dh)
        self.v: torch.Tensor | None = None
        self.static = False
        self.window = window
        self.seen = 0
        self.index: torch.Tensor | None = None  # (S,) sequence index of each kept key
        self.positions: torch.Tensor | None = None  # (B|1, S[, 2]) position ids of each kept key

    @property
    def length(self) -> int:
        """Number of keys held (``seen`` minus what a sliding window dropped)."""
        return 0 if self.k is None else self.k.shape[2]

    def append(
        self, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add a step's keys and values; returns every key and value this step attends to."""
        T = k.shape[2]
        new_index = torch.arange(self.seen, self.seen + T, device=k.device)
        if self.k is None:
            self.k, self.v, self.index, self.positions = k, v, new_index, positions
        else:
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
            self.index = torch.cat([self.index, new_index])
            if positions is not None and self.positions is not None:
                b = max(self.positions.shape[0], positions.shape[0])
                past = self.positions.expand(b, *self.positions.shape[1:])
                self.positions = torch.cat([past, positions.expand(b, *positions.shape[1:])], dim=1)
        self.seen += T
        k_all, v_all = self.k, self.v
        if self.window is not None and self.k.shape[2] > self.window:  # the next query needs the last window - 1 keys
            self.k, self.v = self.k[:, :, -self.window :], self.v[:, :, -self.window :]
            self.index = self.index[-self.window :]
            if self.positions is not None:
                self.positions = self.positions[:, -self.window :]
        return k_all, v_all

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
        qkv_bias: bool | None = None,
        dropout: float = 0.0,
        impl: str = "explicit",
        scale: float | None = None,
        kernel_options: dict | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        norm_gain_offset: float = 0.0,
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
        self.spec = kernel_spec(impl)
        self.kernel = self.spec.function()
        self.kernel_options = dict(kernel_options or {})
        qkv_bias = bias if qkv_bias is None else qkv_bias  # Qwen2: biased q, k, v; unbiased output
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        # QK-norm (Qwen3, OLMo 2): RMSNorm over each head's query and key (over Dh, one gain shared by
        # the heads), before RoPE
        qk = dict(eps=norm_eps, fused=True, gain_offset=norm_gain_offset)
        self.q_norm = RMSNorm(head_dim, **qk) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, **qk) if qk_norm else None
        # roles read by blocks.init_weights (GPT-2's scaled residual init, DeepNorm's beta)
        self.q_proj.init_role = self.k_proj.init_role = "attn_qk"
        self.v_proj.init_role = "attn_v"
        self.o_proj.init_role = "residual_out"

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
        rope: Rotation | None = None,
        cache: KVCache | None = None,
        pattern: Pattern | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``positions``: the new tokens' position ids, recorded in the cache (relative encodings need them)."""
        B, T, _ = x.shape
        q = self._heads(self.q_proj(x), self.n_heads)  # (B, H, T, Dh)
        if self.q_norm is not None:
            q = self.q_norm(q)
        if cache is not None and cache.static:
            k, v = cache.k, cache.v  # cross-attention keys computed on the first step
        else:
            source = x if context is None else context
            k = self._heads(self.k_proj(source), self.n_kv_heads)  # (B, K, S, Dh)
            v = self._heads(self.v_proj(source), self.n_kv_heads)
            if self.k_norm is not None:
                k = self.k_norm(k)
            if rope is not None:
                q, k = rope.apply(q), rope.apply(k)
            if cache is not None:
                k, v = cache.append(k, v, positions)
                cache.static = context is not None
        n_rep = self.n_heads // self.n_kv_heads
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, S, Dh)
        kernel, options = self.kernel, dict(self.kernel_options)
        if pattern is not None:
            S = k.shape[-2]
            whole = T == S and T % pattern.block == 0 and bias is None and not (self.dropout and self.training)
            if pattern.name in self.spec.patterns and (whole or not self.spec.needs_full_blocks):
                options["pattern"] = pattern  # the kernel applies it tile by tile
            else:  # explicit path with the pattern as a dense bias (e.g. cached decoding with a block kernel)
                bias = combine(bias, pattern.bias())
                if self.spec.needs_full_blocks:
                    kernel, options = explicit_attention, {}
        context_vectors = kernel(
            q, k, v, bias=bias, causal=causal, scale=self.scale, dropout_p=self.dropout, training=self.training,
            **options,
        )  # (B, H, T, Dh)
        context_vectors = context_vectors.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(context_vectors)  # (B, T, D)
