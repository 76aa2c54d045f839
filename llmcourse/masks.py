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

from dataclasses import dataclass, field

import numbers

import torch

MASKED = -1e9  # exp(MASKED - max) underflows to exactly 0 in float32


def relative_positions(q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """The offset ``key - query`` of every (query, key) pair: the one helper every relative rule uses.

    T5's buckets, ALiBi's distances, the causal mask and the sparse patterns all
    depend on positions only through this offset. Shapes: ``q_pos (..., T)``,
    ``k_pos (..., S)`` (leading dimensions broadcast, e.g. ``(B|1, T)``) -> ``(..., T, S)``.
    """
    return k_pos[..., None, :] - q_pos[..., :, None]


def masked_value(dtype: torch.dtype = torch.float32) -> float:
    """:data:`MASKED` in ``dtype``: -1e9 for float32/float64/bfloat16; for float16 (max 65504, where -1e9 is
    ``-inf``) a quarter of its most negative value, so two masks still add up without overflowing."""
    return max(MASKED, torch.finfo(dtype).min / 4) if dtype.is_floating_point else MASKED


def allowed_to_bias(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean "may attend" tensor into an additive bias of the same shape (finite in every float dtype)."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.tensor(masked_value(dtype), dtype=dtype, device=allowed.device))


def causal_allowed(T: int, S: int | None = None, offset: int | None = None, device=None) -> torch.Tensor:
    """Boolean ``(T, S)``: query ``i`` (absolute position ``offset + i``) sees keys ``j <= offset + i``.

    With a KV cache the queries are the last ``T`` of ``S`` positions, so the
    default offset is ``S - T``.
    """
    S = T if S is None else S
    offset = S - T if offset is None else offset
    return relative_positions(torch.arange(T, device=device) + offset, torch.arange(S, device=device)) <= 0


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
    if isinstance(prefix_len, bool) or not isinstance(prefix_len, (numbers.Integral, torch.Tensor)):
        raise ValueError(f"prefix_len must be an int or an integer tensor, got {prefix_len!r}; prefix lengths count tokens.")
    if isinstance(prefix_len, numbers.Integral):
        prefix_len = torch.tensor([int(prefix_len)], device=device)
    prefix_len = torch.as_tensor(prefix_len, device=device)
    if prefix_len.is_floating_point() or prefix_len.is_complex() or prefix_len.dtype == torch.bool:
        raise ValueError(f"prefix_len must hold integers (token counts), got dtype {prefix_len.dtype}; "
                         "round it yourself, e.g. prefix_len.long(), if that is what you mean.")
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


def check_attention_mask(attention_mask: torch.Tensor, name: str = "attention_mask", *, every_row_real: bool = False) -> torch.Tensor:
    """Validate a ``(B, S)`` padding mask and return it as bool (True for real tokens).

    The course's convention is Hugging Face's *input* mask: bool, or integers or
    floats holding only 1 (real token) and 0 (padding). Anything else is refused
    rather than guessed: an additive mask (0 keep, a large negative number for
    padding, as inside Hugging Face models) read with ``.bool()`` would be
    silently inverted. ``every_row_real`` also refuses an example with no real
    token at all (an additive mask without padding is all zeros, which would read
    as "everything is padding").
    """
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, S) with 1 for real tokens and 0 for padding, "
                        f"got {type(attention_mask).__name__}.")
    if attention_mask.dim() != 2:
        raise ValueError(f"{name} must be (B, S) with 1 for real tokens, got shape {tuple(attention_mask.shape)}.")
    if attention_mask.dtype != torch.bool:
        if attention_mask.is_complex() or bool(((attention_mask != 0) & (attention_mask != 1)).any()):
            bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)]
            raise ValueError(
                f"{name} must be bool or hold only 1 (real token) and 0 (padding); it holds {bad.flatten()[0].item()!r}. "
                "An additive mask (0 to keep, a large negative number for padding, as inside Hugging Face models) "
                f"is the opposite convention: pass {name}=(additive_mask == 0) instead."
            )
        attention_mask = attention_mask != 0
    if every_row_real and attention_mask.numel() and not bool(attention_mask.any(-1).all()):
        rows = (~attention_mask.any(-1)).nonzero().flatten().tolist()
        raise ValueError(
            f"{name} has no real token in row(s) {rows} (all 0): 1 marks real tokens and 0 padding. "
            f"If this is an additive mask without padding (all zeros), pass {name}=torch.ones_like(...) or None."
        )
    return attention_mask


def padding_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """Hide padded keys. ``attention_mask`` is ``(B, S)``, 1/True for real tokens, 0/False for padding.

    Any other value is refused (see :func:`check_attention_mask`). Shapes: returns
    ``(B, 1, 1, S)``, broadcasting over heads and queries.
    """
    return allowed_to_bias(check_attention_mask(attention_mask))[:, None, None, :]


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
    return bias > masked_value(bias.dtype) / 2


# --- sparse attention patterns (chapter 05) ------------------------------------
# Each pattern is a rule "may the query at absolute position i see the key at
# position j?", written for broadcasting position tensors, so the same rule
# gives the whole (T, S) matrix for a plot, one tile of it for a tiled kernel,
# or the rows of the newest tokens during cached decoding.

SPARSE_PATTERNS = ("strided", "fixed", "bigbird", "window")


def window_allowed(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int, causal: bool = True) -> torch.Tensor:
    """Sliding window: ``0 <= i - j < window`` (causal) or ``|i - j| < window``."""
    d = q_pos - k_pos
    return (d >= 0) & (d < window) if causal else d.abs() < window


def strided_allowed(q_pos: torch.Tensor, k_pos: torch.Tensor, stride: int, causal: bool = True) -> torch.Tensor:
    """Sparse Transformer's strided pattern (Child et al. 2019, eq. for A^(1), A^(2)), both heads merged.

    ``A1``: the previous ``stride`` positions (``i - j < stride``); ``A2``: every
    ``stride``-th position (``(i - j) mod stride == 0``). A query reaches any key
    in two steps, and sees about ``stride + T / stride`` keys: ``O(T sqrt T)``
    work for ``stride ~ sqrt(T)``.
    """
    d = q_pos - k_pos
    allowed = (d.abs() < stride) | (torch.remainder(d, stride) == 0)
    return allowed & (d >= 0) if causal else allowed


def fixed_allowed(
    q_pos: torch.Tensor, k_pos: torch.Tensor, block: int, summary: int | None = None, causal: bool = True
) -> torch.Tensor:
    """Sparse Transformer's fixed pattern: the query's own block, plus the last ``summary`` positions of every block.

    ``A1``: ``floor(j / l) == floor(i / l)``; ``A2``: ``j mod l >= l - c``, with
    block ``l`` and ``c = summary`` (default ``max(1, l // 16)``; the paper uses
    ``c`` in {8, 16, 32} for ``l`` in {128, 256}). The summary positions carry
    each block's content to every later query.
    """
    c = default_summary(block) if summary is None else summary
    allowed = (torch.div(q_pos, block, rounding_mode="floor") == torch.div(k_pos, block, rounding_mode="floor")) | (
        torch.remainder(k_pos, block) >= block - c
    )
    return allowed & (q_pos >= k_pos) if causal else allowed


def default_summary(block: int) -> int:
    """Summary positions per block of the fixed pattern when none is given: ``max(1, block // 16)``."""
    return max(1, block // 16)


def bigbird_random_blocks(
    n_blocks: int, random_blocks: int, global_blocks: int = 1, seed: int = 0, causal: bool = True
) -> torch.Tensor:
    """BigBird's random key blocks, ``random_blocks`` per query block, reproducible from ``seed``.

    Candidates exclude the query block's window (blocks ``b-1, b, b+1``) and the
    global blocks; a causal model draws only from earlier blocks. Each query
    block's draw uses its own generator (seed and block index), so with
    ``causal=True`` a block's choice never depends on the sequence length: cached
    decoding sees the same pattern as a full forward pass. Rows with fewer
    candidates than ``random_blocks`` are padded with ``-1``.

    Shapes: returns ``(n_blocks, random_blocks)`` long.
    """
    table = torch.full((n_blocks, random_blocks), -1, dtype=torch.long)
    for b in range(n_blocks):
        hi = b - 1 if causal else n_blocks
        candidates = [c for c in range(global_blocks, hi) if abs(c - b) > 1]
        if not candidates or random_blocks == 0:
            continue
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        pick = torch.randperm(len(candidates), generator=g)[:random_blocks]
        table[b, : len(pick)] = torch.tensor(candidates)[pick]
    return table


def bigbird_allowed(
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    block: int,
    global_blocks: int = 1,
    random_blocks: int = 1,
    seed: int = 0,
    causal: bool = True,
    n_blocks: int | None = None,
) -> torch.Tensor:
    """BigBird (Zaheer et al. 2020): a window of 3 blocks, ``global_blocks`` global blocks, ``random_blocks`` random ones.

    Blocks are ``block`` positions wide. The first ``global_blocks`` blocks see
    and are seen by every position; every query block sees its neighbours and
    a few random blocks (:func:`bigbird_random_blocks`). ``n_blocks`` (default:
    enough for the largest position given) sets the random table's size.
    """
    qb = torch.div(q_pos, block, rounding_mode="floor")
    kb = torch.div(k_pos, block, rounding_mode="floor")
    if n_blocks is None:
        n_blocks = int(torch.maximum(q_pos.max(), k_pos.max())) // block + 1
    table = bigbird_random_blocks(n_blocks, random_blocks, global_blocks, seed, causal).to(q_pos.device)
    allowed = ((qb - kb).abs() <= 1) | (qb < global_blocks) | (kb < global_blocks)
    if random_blocks:
        allowed = allowed | (table[qb] == kb[..., None]).any(-1)
    return allowed & (q_pos >= k_pos) if causal else allowed


def pattern_allowed(
    pattern: str,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    *,
    block: int = 16,
    global_blocks: int = 1,
    random_blocks: int = 1,
    seed: int = 0,
    causal: bool = True,
    summary: int | None = None,
) -> torch.Tensor:
    """The rule of ``pattern`` (``ModelConfig.attn_pattern``) at broadcast positions; ``'full'`` allows everything (causally if asked).

    ``block`` is the stride (strided), the block (fixed, bigbird) or the window (window).
    """
    if pattern == "full":
        allowed = torch.ones(torch.broadcast_shapes(q_pos.shape, k_pos.shape), dtype=torch.bool, device=q_pos.device)
        return allowed & (q_pos >= k_pos) if causal else allowed
    if pattern == "strided":
        return strided_allowed(q_pos, k_pos, block, causal)
    if pattern == "fixed":
        return fixed_allowed(q_pos, k_pos, block, summary, causal)
    if pattern == "bigbird":
        return bigbird_allowed(q_pos, k_pos, block, global_blocks, random_blocks, seed, causal)
    if pattern == "window":
        return window_allowed(q_pos, k_pos, block, causal)
    raise ValueError(f"attn_pattern={pattern!r} is not a known pattern; choose one of full, {', '.join(SPARSE_PATTERNS)}.")


def sparse_allowed(pattern: str, T: int, S: int | None = None, offset: int | None = None, device=None, **options) -> torch.Tensor:
    """Boolean ``(T, S)`` matrix of ``pattern``: query ``i`` sits at position ``offset + i`` (default ``S - T``), key ``j`` at ``j``.

    ``options`` are those of :func:`pattern_allowed` (``block``, ``global_blocks``,
    ``random_blocks``, ``seed``, ``causal``, ``summary``).
    """
    S = T if S is None else S
    offset = S - T if offset is None else offset
    q_pos = torch.arange(T, device=device)[:, None] + offset
    k_pos = torch.arange(S, device=device)[None, :]
    return pattern_allowed(pattern, q_pos, k_pos, **options)


def sparse_bias(pattern: str, T: int, S: int | None = None, offset: int | None = None, device=None, **options) -> torch.Tensor:
    """:func:`sparse_allowed` as an additive bias. Shapes: returns ``(1, 1, T, S)``."""
    return allowed_to_bias(sparse_allowed(pattern, T, S, offset, device, **options))[None, None]


@dataclass
class Pattern:
    """A sparse pattern at given sequence indices, handed to a kernel instead of a dense ``T x S`` bias.

    ``q_index (T,)`` and ``k_index (S,)`` are the tokens' indices in the
    sequence (not their position ids: a pattern is about order), so the rule
    stays right when a KV cache has dropped old keys (sliding window). A kernel
    that knows the pattern (``KernelSpec.patterns``) asks for one tile at a time
    (:meth:`allowed` with row and column slices) and never holds the whole
    matrix; any other kernel gets :meth:`bias`.
    """

    name: str  # strided | fixed | bigbird | window
    q_index: torch.Tensor
    k_index: torch.Tensor
    options: dict = field(default_factory=dict)  # block, global_blocks, random_blocks, seed, summary, causal

    @property
    def block(self) -> int:
        return self.options.get("block", 16)

    def allowed(self, rows: slice = slice(None), cols: slice = slice(None)) -> torch.Tensor:
        """Boolean ``(T', S')`` for the query rows and key columns asked for."""
        return pattern_allowed(self.name, self.q_index[rows][:, None], self.k_index[cols][None, :], **self.options)

    def bias(self) -> torch.Tensor:
        """The whole pattern as an additive bias ``(1, 1, T, S)``."""
        return allowed_to_bias(self.allowed())[None, None]
