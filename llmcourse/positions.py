"""Position encodings: absolute (sinusoidal, learned), relative (T5 buckets, ALiBi), rotary (RoPE), none.

Shape legend: ``B`` batch, ``T`` query length, ``S`` key length, ``D`` d_model,
``H`` heads, ``Dh`` head_dim.

Every encoding implements the same three hooks, and a model calls all three;
each encoding overrides the one it needs and leaves the others as no-ops:

- :meth:`Positions.embed` adds an absolute encoding to the token embeddings,
- :meth:`Positions.relative_bias` returns an additive ``(B|1, H, T, S)``
  attention bias from query and key positions (computed once per stack and
  shared by its layers); :meth:`Positions.attn_bias` is the same for the
  positions ``q_offset .. q_offset + T - 1`` against ``0 .. S - 1``,
- :meth:`Positions.rotation` returns the :class:`Rotation` that turns queries
  and keys (:meth:`Positions.rotary` gives its ``(cos, sin)``).

Positions are tensors, not counters: ``position_ids`` of shape ``(T,)`` or
``(B|1, T)`` hold each token's position (a model's default is ``arange`` plus
the number of tokens already in the KV cache; left-padded batches and GLM's
blank infilling pass their own), and ``(B|1, T, 2)`` holds two ids per token
for ``ModelConfig.position_dims=2`` (GLM: the position in the corrupted text
and the position inside a span). Relative encodings read positions only
through :func:`llmcourse.masks.relative_positions`, so a constant shift of
every position leaves them unchanged. ``extrapolates`` tells whether an
encoding is defined past the training length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from typing import NamedTuple

from .config import ModelConfig
from .masks import relative_positions


def _split_dims(positions: torch.Tensor, dims: int) -> list[torch.Tensor]:
    """The position ids of each dimension: ``(..., T)`` for one, ``(..., T, 2)`` split into two ``(..., T)``."""
    if dims == 1:
        if positions.dim() > 2:
            raise ValueError(
                f"position ids have shape {tuple(positions.shape)}; this model takes (T,) or (B|1, T) "
                "(two ids per token need ModelConfig.position_dims=2)."
            )
        return [positions]
    if positions.dim() < 2 or positions.shape[-1] != 2:
        raise ValueError(
            f"position ids have shape {tuple(positions.shape)}; a model with position_dims=2 takes (B|1, T, 2)."
        )
    return [positions[..., 0], positions[..., 1]]


class Positions(nn.Module):
    """No position information at all (NoPE): the base class of every encoding."""

    kind = "none"
    extrapolates = True  # defined at every position (learned tables are not)
    dims = 1  # position ids per token

    def embed(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``h (B, T, D)``, ``positions (T,) | (B|1, T) [, 2]`` -> ``(B, T, D)``."""
        return h

    def relative_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        """``(B|1, H, T, S)`` or ``None`` from ``q_pos (B|1, T)`` and ``k_pos (B|1, S)``."""
        return None

    def attn_bias(self, T: int, S: int, q_offset: int, device=None) -> torch.Tensor | None:
        """``(1, H, T, S)`` or ``None``; query ``i`` sits at absolute position ``q_offset + i``, key ``j`` at ``j``."""
        q_pos = torch.arange(T, device=device)[None] + q_offset
        return self.relative_bias(q_pos, torch.arange(S, device=device)[None])

    def rotation(self, positions: torch.Tensor) -> "Rotation | None":
        """The rotation of queries and keys at ``positions``, or ``None``."""
        return None

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(cos, sin)``, each ``(T, rotary_dim // 2)`` (or ``(B|1, 1, T, rotary_dim // 2)``), or ``None``."""
        rotation = self.rotation(positions)
        return None if rotation is None else (rotation.cos, rotation.sin)


# --- absolute -----------------------------------------------------------------
def sinusoidal_table(positions: torch.Tensor, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The original Transformer's table, interleaved as in the paper (Vaswani et al. 2017, sec. 3.5).

    ``PE[p, 2i] = sin(p / base^(2i/D))`` and ``PE[p, 2i+1] = cos(p / base^(2i/D))``.
    Shapes: ``positions (..., T) -> (..., T, D)``.
    """
    i = torch.arange(0, d_model, 2, dtype=torch.float32, device=positions.device)  # the 2i of the formula
    inv_freq = base ** (-i / d_model)  # (D/2,)
    angles = positions.float()[..., None] * inv_freq  # (..., T, D/2)
    table = torch.zeros(*positions.shape, d_model, device=positions.device)
    table[..., 0::2] = torch.sin(angles)
    table[..., 1::2] = torch.cos(angles[..., : d_model // 2])
    return table


class SinusoidalPositions(Positions):
    """Fixed sinusoids added to the embeddings; defined for every position, so it can run past training length.

    ``scale`` is the sinusoids' amplitude. What matters is their size *relative
    to the token embeddings*: the paper adds unit sinusoids to embeddings of
    about unit size per dimension (initialised with std ``D^-0.5``, then
    multiplied by ``sqrt(D)``). The course initialises embeddings with std
    ``init_std`` (0.02, GPT-2) and does not rescale them, so ``build_positions``
    passes ``scale=init_std`` by default, which keeps the paper's ratio of
    token to position; ``ModelConfig.sinusoidal_scale=1.0`` gives the raw table,
    which then outweighs the tokens by a factor of about 35.
    """

    kind = "sinusoidal"

    def __init__(self, d_model: int, scale: float = 1.0, dims: int = 1) -> None:
        super().__init__()
        self.d_model = d_model
        self.scale = scale
        self.dims = dims

    def embed(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, T, D)``: ``h + scale * PE[positions]`` (one table per position id)."""
        for ids in _split_dims(positions, self.dims):
            h = h + (self.scale * sinusoidal_table(ids, self.d_model)).to(h.dtype)
        return h

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, scale={self.scale}"


class LearnedPositions(Positions):
    """A trained table of ``max_seq_len`` vectors (GPT-2/3, OPT). It has nothing to say past its length."""

    kind = "learned"
    extrapolates = False

    def __init__(self, max_seq_len: int, d_model: int, dims: int = 1) -> None:
        super().__init__()
        self.dims = dims
        self.weight = nn.Parameter(torch.zeros(max_seq_len, d_model))
        # GLM's second table: the position inside a blank (0 outside the blanks)
        self.block_weight = nn.Parameter(torch.zeros(max_seq_len, d_model)) if dims == 2 else None

    def embed(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        tables = [self.weight] if self.block_weight is None else [self.weight, self.block_weight]
        for ids, table in zip(_split_dims(positions, self.dims), tables):
            n = table.shape[0]
            if ids.numel() and not torch.compiler.is_compiling():
                if int(ids.min()) < 0:
                    raise ValueError(f"position ids must be >= 0, got {int(ids.min())}.")
                if int(ids.max()) >= n:
                    raise ValueError(
                        f"position {int(ids.max())} is past the learned position table of length {n}: learned "
                        "positions cannot extrapolate. Keep sequences within max_seq_len, or use "
                        "position='sinusoidal', 'rope', 'alibi', 't5' or 'none', which are defined at every position."
                    )
            # F.embedding, not table[ids]: with ids repeated across rows (padding,
            # GLM's second ids), the gradient of table[ids] is accumulated by
            # several threads in no fixed order, so runs differ in the last bits.
            h = h + F.embedding(ids, table)
        return h


# --- relative: T5 buckets ---------------------------------------------------
def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """T5's bucket of each offset ``key_pos - query_pos`` (Raffel et al. 2020, sec. 2.1).

    Half the buckets hold exact small distances; the rest cover distances up to
    ``max_distance`` logarithmically, and everything further shares the last
    bucket. Bidirectional buckets split the range between past and future; causal
    ones see only the past (future offsets fall in bucket 0, and are masked anyway).
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp_min(0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log-spaced buckets for max_exact <= distance < max_distance
    large = max_exact + (
        torch.log(distance.float().clamp_min(1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp_max(num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class T5RelativeBias(Positions):
    """A learned scalar per (bucket, head) added to the scores; computed once per stack and shared by its layers."""

    kind = "t5"

    def __init__(self, n_heads: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, n_heads)

    def relative_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        device = self.relative_attention_bias.weight.device
        offsets = relative_positions(q_pos.to(device), k_pos.to(device))  # (B|1, T, S)
        buckets = relative_position_bucket(offsets, self.bidirectional, self.num_buckets, self.max_distance)
        values = self.relative_attention_bias(buckets)  # (B|1, T, S, H)
        return values.permute(0, 3, 1, 2)  # (B|1, H, T, S)


# --- relative: ALiBi --------------------------------------------------------
def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's head slopes (Press et al. 2022, sec. 3).

    For ``n`` a power of two: the geometric sequence starting at and with ratio
    ``2^(-8/n)``. Otherwise: the slopes of the closest smaller power of two, then
    every other slope of the next power of two, as the paper's reference code does.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))  # = 2^(-8/n)
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = alibi_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.cat([torch.tensor(power_of_two(closest)), extra])


class ALiBi(Positions):
    """Attention with linear biases: score ``-= m_h * |i - j|``; no position is added to the embeddings."""

    kind = "alibi"

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def relative_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        device = self.slopes.device
        distance = relative_positions(q_pos.to(device), k_pos.to(device)).abs().float()  # (B|1, T, S)
        return -self.slopes[None, :, None, None] * distance[:, None]  # (B|1, H, T, S)


# --- rotary -----------------------------------------------------------------
def rope_angles(positions: torch.Tensor, rotary_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of the angles ``p * theta^(-2i/d)``, each ``(..., T, rotary_dim // 2)`` (Su et al. 2021, eq. 15)."""
    inv_freq = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device) / rotary_dim)
    angles = positions.float()[..., None] * inv_freq  # (..., T, rotary_dim/2)
    return angles.cos(), angles.sin()  # float32 (float64 positions give float64 angles)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pairing: str = "half") -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` dimensions of each head; the rest pass through.

    ``pairing='interleaved'`` rotates neighbours ``(2i, 2i+1)`` as in the RoFormer
    paper; ``pairing='half'`` rotates ``(i, i + d/2)`` as in GPT-NeoX and Llama
    ("rotate half"). The two give equal scores up to a fixed permutation of the
    query and key dimensions.

    Shapes: ``x (B, H, T, Dh)``, ``cos, sin (T, R/2)`` or ``(B|1, 1, T, R/2)`` -> ``(B, H, T, Dh)``.
    """
    rot = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :rot].to(torch.promote_types(x.dtype, torch.float32)), x[..., rot:]
    if pairing == "half":
        x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    elif pairing == "interleaved":
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]
        out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
    else:
        raise ValueError(f"pairing={pairing!r} must be 'half' or 'interleaved'.")
    return torch.cat([out.to(x.dtype), x_pass], dim=-1)


def rope_pairing_permutation(head_dim: int, rotary_dim: int | None = None) -> torch.Tensor:
    """The permutation of head dimensions that turns the RoFormer pairing into "rotate half".

    The paper rotates neighbours ``(2i, 2i+1)``; Llama and GPT-NeoX rotate ``(i, i + R/2)``.
    With ``perm = [0, 2, 4, ..., R-2, 1, 3, ..., R-1, R, ..., Dh-1]``,
    ``apply_rotary(x[..., perm], pairing='half') == apply_rotary(x, pairing='interleaved')[..., perm]``,
    and since a permutation applied to both queries and keys leaves their dot products unchanged,
    the two layouts give the same attention scores. (Converting Meta's Llama checkpoints to Hugging
    Face's layout applies exactly this permutation to the rows of ``W_q`` and ``W_k``.)

    Shapes: returns ``(Dh,)`` indices.
    """
    rotary_dim = head_dim if rotary_dim is None else rotary_dim
    if rotary_dim % 2 or rotary_dim > head_dim:
        raise ValueError(f"rotary_dim={rotary_dim} must be even and at most head_dim={head_dim}.")
    return torch.cat([
        torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2), torch.arange(rotary_dim, head_dim)
    ])


class Rotation(NamedTuple):
    """What rotates queries and keys at given positions: the angles and the pairing of dimensions.

    Built by :meth:`RotaryPositions.rotation`, the one owner of the pairing, and
    applied by the attention layer (:meth:`apply`). Shapes: ``cos, sin (T, R/2)``
    or ``(B|1, 1, T, R/2)`` (per-example positions, broadcast over heads).
    """

    cos: torch.Tensor
    sin: torch.Tensor
    pairing: str = "half"

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, T, Dh) -> (B, H, T, Dh)``."""
        return apply_rotary(x, self.cos, self.sin, self.pairing)


class RotaryPositions(Positions):
    """RoPE: queries and keys rotated by their absolute position, so their dot product sees only the offset.

    With two position ids per token (``dims=2``, GLM-130B's 2D RoPE) the first
    half of the rotary dimensions turns with the first id and the second half
    with the second.
    """

    kind = "rope"

    def __init__(self, rotary_dim: int, theta: float = 10000.0, pairing: str = "half", dims: int = 1) -> None:
        super().__init__()
        if pairing not in ("half", "interleaved"):
            raise ValueError(f"pairing={pairing!r} must be 'half' or 'interleaved'.")
        self.rotary_dim = rotary_dim
        self.theta = theta
        self.pairing = pairing
        self.dims = dims

    def rotation(self, positions: torch.Tensor) -> Rotation:
        ids = _split_dims(positions, self.dims)
        if len(ids) == 1:
            cos, sin = rope_angles(ids[0], self.rotary_dim, self.theta)
        else:  # each id rotates its own half of the rotary dimensions
            parts = [rope_angles(p, self.rotary_dim // 2, self.theta) for p in ids]
            cos, sin = (torch.cat([a[i] for a in parts], dim=-1) for i in (0, 1))
        if ids[0].dim() == 2:  # (B|1, T, R/2) -> (B|1, 1, T, R/2): broadcast over heads
            cos, sin = cos[:, None], sin[:, None]
        return Rotation(cos, sin, self.pairing)

    def extra_repr(self) -> str:
        return f"rotary_dim={self.rotary_dim}, theta={self.theta}, pairing={self.pairing!r}, dims={self.dims}"


def build_positions(config: ModelConfig, bidirectional: bool) -> Positions:
    """The encoding named by ``config.position`` for one stack (``bidirectional`` picks T5's bucket kind)."""
    kind, dims = config.position, config.position_dims
    if kind == "none":
        return Positions()
    if kind == "sinusoidal":
        scale = config.sinusoidal_scale if config.sinusoidal_scale is not None else config.init_std
        return SinusoidalPositions(config.d_model, scale, dims)
    if kind == "learned":
        return LearnedPositions(config.max_seq_len, config.d_model, dims)
    if kind == "t5":
        return T5RelativeBias(config.n_heads, bidirectional, config.rel_num_buckets, config.rel_max_distance)
    if kind == "alibi":
        return ALiBi(config.n_heads)
    if kind == "rope":
        return RotaryPositions(config.resolved_rotary_dim, config.rope_theta, config.rope_pairing, dims)
    raise ValueError(f"position={kind!r} is not a known position encoding.")
