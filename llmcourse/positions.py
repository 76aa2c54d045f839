"""Position encodings: absolute (sinusoidal, learned), relative (T5 buckets, ALiBi), rotary (RoPE), none.

Shape legend: ``B`` batch, ``T`` query length, ``S`` key length, ``D`` d_model,
``H`` heads, ``Dh`` head_dim.

Every encoding implements the same three hooks, and a model calls all three;
each encoding overrides the one it needs and leaves the others as no-ops:

- :meth:`Positions.embed` adds an absolute encoding to the token embeddings,
- :meth:`Positions.attn_bias` returns an additive ``(1, H, T, S)`` attention
  bias (computed once per stack and shared by its layers),
- :meth:`Positions.rotary` returns the ``(cos, sin)`` that rotate queries and keys.

``positions`` are absolute token positions ``(T,)``; during cached generation
they start at the number of tokens already in the cache, so every encoding
stays right for the new tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig


class Positions(nn.Module):
    """No position information at all (NoPE): the base class of every encoding."""

    kind = "none"

    def embed(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, T, D)``."""
        return h

    def attn_bias(self, T: int, S: int, q_offset: int, device=None) -> torch.Tensor | None:
        """``(1, H, T, S)`` or ``None``; query ``i`` sits at absolute position ``q_offset + i``, key ``j`` at ``j``."""
        return None

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(cos, sin)``, each ``(T, rotary_dim // 2)``, or ``None``."""
        return None


# --- absolute -----------------------------------------------------------------
def sinusoidal_table(positions: torch.Tensor, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The original Transformer's table, interleaved as in the paper (Vaswani et al. 2017, sec. 3.5).

    ``PE[p, 2i] = sin(p / base^(2i/D))`` and ``PE[p, 2i+1] = cos(p / base^(2i/D))``.
    Shapes: ``positions (T,) -> (T, D)``.
    """
    i = torch.arange(0, d_model, 2, dtype=torch.float32, device=positions.device)  # the 2i of the formula
    inv_freq = base ** (-i / d_model)  # (D/2,)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, D/2)
    table = torch.zeros(positions.shape[0], d_model, device=positions.device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : d_model // 2])
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

    def __init__(self, d_model: int, scale: float = 1.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.scale = scale

    def embed(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, T, D)``: ``h + scale * PE[positions]``."""
        return h + (self.scale * sinusoidal_table(positions, self.d_model)).to(h.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, scale={self.scale}"


class LearnedPositions(Positions):
    """A trained table of ``max_seq_len`` vectors (GPT-2/3, OPT). It has nothing to say past its length."""

    kind = "learned"

    def __init__(self, max_seq_len: int, d_model: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_seq_len, d_model))

    def embed(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        if positions.numel() and int(positions.max()) >= n:
            raise ValueError(
                f"position {int(positions.max())} is past the learned position table of length {n}: learned "
                "positions cannot extrapolate. Keep sequences within max_seq_len, or use position='sinusoidal', "
                "'rope', 'alibi', 't5' or 'none', which are defined at every position."
            )
        return h + self.weight[positions]


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

    def attn_bias(self, T: int, S: int, q_offset: int, device=None) -> torch.Tensor:
        device = self.relative_attention_bias.weight.device
        q_pos = torch.arange(T, device=device)[:, None] + q_offset
        k_pos = torch.arange(S, device=device)[None, :]
        buckets = relative_position_bucket(k_pos - q_pos, self.bidirectional, self.num_buckets, self.max_distance)
        values = self.relative_attention_bias(buckets)  # (T, S, H)
        return values.permute(2, 0, 1)[None]  # (1, H, T, S)


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

    def attn_bias(self, T: int, S: int, q_offset: int, device=None) -> torch.Tensor:
        q_pos = torch.arange(T, device=self.slopes.device)[:, None] + q_offset
        k_pos = torch.arange(S, device=self.slopes.device)[None, :]
        distance = (q_pos - k_pos).abs().float()  # (T, S)
        return -self.slopes[None, :, None, None] * distance[None, None]  # (1, H, T, S)


# --- rotary -----------------------------------------------------------------
def rope_angles(positions: torch.Tensor, rotary_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of the angles ``p * theta^(-2i/d)``, each ``(T, rotary_dim // 2)`` (Su et al. 2021, eq. 15)."""
    inv_freq = theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device) / rotary_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, rotary_dim/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pairing: str = "half") -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` dimensions of each head; the rest pass through.

    ``pairing='interleaved'`` rotates neighbours ``(2i, 2i+1)`` as in the RoFormer
    paper; ``pairing='half'`` rotates ``(i, i + d/2)`` as in GPT-NeoX and Llama
    ("rotate half"). The two give equal scores up to a fixed permutation of the
    query and key dimensions.

    Shapes: ``x (B, H, T, Dh)``, ``cos, sin (T, R/2)`` -> ``(B, H, T, Dh)``.
    """
    rot = 2 * cos.shape[-1]
    x_rot, x_pass = x[..., :rot].float(), x[..., rot:]
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


class RotaryPositions(Positions):
    """RoPE: queries and keys rotated by their absolute position, so their dot product sees only the offset."""

    kind = "rope"

    def __init__(self, rotary_dim: int, theta: float = 10000.0, pairing: str = "half") -> None:
        super().__init__()
        self.rotary_dim = rotary_dim
        self.theta = theta
        self.pairing = pairing

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_angles(positions, self.rotary_dim, self.theta)


def build_positions(config: ModelConfig, bidirectional: bool) -> Positions:
    """The encoding named by ``config.position`` for one stack (``bidirectional`` picks T5's bucket kind)."""
    kind = config.position
    if kind == "none":
        return Positions()
    if kind == "sinusoidal":
        scale = config.sinusoidal_scale if config.sinusoidal_scale is not None else config.init_std
        return SinusoidalPositions(config.d_model, scale)
    if kind == "learned":
        return LearnedPositions(config.max_seq_len, config.d_model)
    if kind == "t5":
        return T5RelativeBias(config.n_heads, bidirectional, config.rel_num_buckets, config.rel_max_distance)
    if kind == "alibi":
        return ALiBi(config.n_heads)
    if kind == "rope":
        return RotaryPositions(config.resolved_rotary_dim, config.rope_theta, config.rope_pairing)
    raise ValueError(f"position={kind!r} is not a known position encoding.")
