"""Attention masks as one additive bias.

Shape legend: ``B`` batch, ``H`` heads, ``T`` query length, ``S`` key length.

Every mask in the course is a float tensor of shape ``(1|B, 1|H, T, S)`` added
to the attention scores before the softmax: ``0`` where a query may look at a
key, :data:`MASKED` where it may not. Masks, ALiBi and T5's relative buckets are
all biases of this shape, so they combine by addition (:func:`combine`) and
every attention variant shares one code path.

We use a large finite negative number rather than ``-inf``: a row whose keys are
all masked (a padding query) then gets a harmless uniform distribution instead
of NaNs, and the sum of two masks never overflows.
"""

from __future__ import annotations

import torch

MASKED = -1e9  # exp(MASKED - max) underflows to exactly 0 in float32


def allowed_to_bias(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean "may attend" tensor into an additive bias of the same shape."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.tensor(MASKED, dtype=dtype, device=allowed.device))


def causal_allowed(T: int, S: int | None = None, offset: int | None = None, device=None) -> torch.Tensor:
    """Boolean ``(T, S)``: query ``i`` (absolute position ``offset + i``) sees keys ``j <= offset + i``.

    With a KV cache the queries are the last ``T`` of ``S`` positions, so the
    default offset is ``S - T``.
    """
    S = T if S is None else S
    offset = S - T if offset is None else offset
    q_pos = torch.arange(T, device=device)[:, None] + offset
    k_pos = torch.arange(S, device=device)[None, :]
    return k_pos <= q_pos


def causal_bias(T: int, S: int | None = None, offset: int | None = None, device=None) -> torch.Tensor:
    """Causal mask as a bias. Shapes: returns ``(1, 1, T, S)``."""
    return allowed_to_bias(causal_allowed(T, S, offset, device))[None, None]


def prefix_bias(prefix_len: torch.Tensor | int, T: int, batch_size: int | None = None, device=None) -> torch.Tensor:
    """Prefix-LM mask: bidirectional inside the prefix, causal after it.

    Query ``i`` may see key ``j`` when ``j <= i`` (causal) or ``j < prefix_len``
    (every token sees the whole prefix). ``prefix_len`` is an int or a ``(B,)``
    tensor, one prefix per example.

    Shapes: returns ``(B, 1, T, T)`` (``B = 1`` for an int prefix).
    """
    if isinstance(prefix_len, int):
        prefix_len = torch.tensor([prefix_len], device=device)
    prefix_len = torch.as_tensor(prefix_len, device=device)
    if prefix_len.dim() != 1:
        raise ValueError(f"prefix_len must be an int or a 1-D tensor of per-example lengths, got shape {tuple(prefix_len.shape)}.")
    if batch_size is not None and prefix_len.numel() not in (1, batch_size):
        raise ValueError(f"prefix_len has {prefix_len.numel()} entries but the batch has {batch_size} examples; give one per example.")
    if (prefix_len < 0).any() or (prefix_len > T).any():
        raise ValueError(
            f"prefix lengths must lie in [0, {T}] for a sequence of length {T}, got {prefix_len.tolist()}; "
            "shorten the prefix or lengthen the sequence."
        )
    causal = causal_allowed(T, device=prefix_len.device)  # (T, T)
    in_prefix = torch.arange(T, device=prefix_len.device)[None, None, :] < prefix_len[:, None, None]  # (B, 1, T)
    allowed = causal[None] | in_prefix  # (B, T, T)
    return allowed_to_bias(allowed)[:, None]


def bidirectional_bias(S: int, device=None) -> torch.Tensor:
    """Every query sees every key (encoder self-attention, cross-attention). Shapes: ``(1, 1, 1, S)``."""
    return torch.zeros(1, 1, 1, S, device=device)


def padding_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """Hide padded keys. ``attention_mask`` is ``(B, S)``, 1/True for real tokens, 0/False for padding.

    Shapes: returns ``(B, 1, 1, S)``, broadcasting over heads and queries.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, S) with 1 for real tokens, got shape {tuple(attention_mask.shape)}.")
    return allowed_to_bias(attention_mask.bool())[:, None, None, :]


def combine(*biases: torch.Tensor | None) -> torch.Tensor | None:
    """Add biases with broadcasting, skipping ``None``; ``None`` if all are ``None``."""
    out = None
    for b in biases:
        if b is None:
            continue
        out = b if out is None else out + b
    return out


def allowed_from_bias(bias: torch.Tensor) -> torch.Tensor:
    """Which entries of a bias are visible (the inverse of :func:`allowed_to_bias`, for plotting and tests)."""
    return bias > MASKED / 2
