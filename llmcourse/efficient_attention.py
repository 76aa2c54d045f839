"""Efficient attention kernels: FlashAttention-style tiling, Performer's random features, block-sparse patterns.

Shape legend: ``B`` batch, ``H`` heads, ``T`` query length, ``S`` key length,
``Dh`` head_dim, ``M`` random features, ``L`` block (tile) length.

Every kernel has the signature of :func:`llmcourse.attention.explicit_attention`::

    kernel(q, k, v, *, bias=None, causal=False, scale, dropout_p=0.0, training=False, **options) -> (B, H, T, Dh)

and is registered in :data:`KERNELS` under the name ``ModelConfig.attn_impl``
uses. With ``causal=True`` the queries are the last ``T`` of ``S`` positions
(query ``i`` sits at position ``S - T + i``), as during cached decoding.

- :func:`flash_attention` (Dao et al. 2022) is *exact*: the same numbers as the
  explicit path, computed tile by tile over the keys with an online softmax
  (Milakov & Gimelshein 2018), and differentiated by a hand-written backward
  that recomputes each tile from the saved log-sum-exp. Neither pass ever holds
  a ``T x S`` matrix, so memory grows linearly with the length.
- :func:`performer_attention` (Choromanski et al. 2021) *approximates* softmax
  attention with positive orthogonal random features, in time and memory
  linear in the length; with a ``gate`` it becomes RFA's gated recurrence
  (Peng et al. 2021).
- :func:`sparse_attention` computes exactly the sparse patterns of
  :mod:`llmcourse.masks` (strided, fixed, BigBird, window) while touching only
  the keys each pattern allows.
"""

from __future__ import annotations

import math

import torch

from .masks import MASKED, bigbird_random_blocks, default_summary, pattern_allowed


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, T, Dh), (B, H, S, Dh), (B, H, S, Dh); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")
    if k.shape[:-1] != v.shape[:-1] or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not fit together (repeat kv heads first).")
    if causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(f"there are more queries ({q.shape[-2]}) than keys ({k.shape[-2]}); queries are the last T of S positions.")


def _as_4d(bias: torch.Tensor | None) -> torch.Tensor | None:
    if bias is None:
        return None
    if bias.dim() > 4:
        raise ValueError(f"an attention bias is (1|B, 1|H, 1|T, 1|S), got shape {tuple(bias.shape)}.")
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))


# --- FlashAttention ----------------------------------------------------------------
def _bias_tile(bias: torch.Tensor, r0: int, r1: int, j0: int, j1: int) -> torch.Tensor:
    """Rows ``r0:r1`` and columns ``j0:j1`` of a broadcastable bias (size-1 dimensions stay size 1)."""
    rows = slice(r0, r1) if bias.shape[-2] != 1 else slice(None)
    cols = slice(j0, j1) if bias.shape[-1] != 1 else slice(None)
    return bias[..., rows, cols]


def _tile_scores(q, k, bias, causal, scale, offset, r0, j0, j1, pattern=None):
    """Scores of the queries ``r0:`` against the key tile ``j0:j1``: ``(B, H, T - r0, j1 - j0)``."""
    T = q.shape[-2]
    acc = torch.promote_types(q.dtype, torch.float32)  # float16 q k^T overflows; the mask is -inf in float16
    s = (q[..., r0:, :].to(acc) @ k[..., j0:j1, :].to(acc).transpose(-2, -1)) * scale
    if bias is not None:
        tile = _bias_tile(bias, r0, T, j0, j1)
        if torch.finfo(tile.dtype).bits < 32:  # a float16 mask holds -inf: keep it finite (-inf - -inf is nan)
            tile = tile.to(acc).clamp_min(MASKED)
        s = s + tile
    if pattern is not None:  # a sparse pattern, built for this tile alone
        s = s + torch.where(pattern.allowed(slice(r0, T), slice(j0, j1)), 0.0, MASKED).to(s.dtype)
    if causal and j1 - 1 > r0 + offset:  # the tile reaches above the diagonal
        q_pos = torch.arange(r0, T, device=q.device)[:, None] + offset
        k_pos = torch.arange(j0, j1, device=q.device)[None, :]
        s = s + torch.where(k_pos > q_pos, MASKED, 0.0).to(s.dtype)  # the same additive mask as the explicit path
    return s


def _first_row(causal: bool, offset: int, j0: int) -> int:
    """The first query that may see key ``j0``: queries before it see nothing of this tile and skip it."""
    return max(0, j0 - offset) if causal else 0


def _dropout_keep(shape, p: float, seed: int, tile: int, device) -> torch.Tensor:
    """The dropout mask of one tile, regenerated identically in the backward from ``(seed, tile)``."""
    g = torch.Generator(device=device).manual_seed(seed + tile)
    return torch.rand(shape, generator=g, device=device) >= p


class FlashAttentionFunction(torch.autograd.Function):
    """softmax(q k^T * scale + bias) v, tiled over keys, with a backward that recomputes each tile."""

    @staticmethod
    def forward(ctx, q, k, v, bias, causal, scale, block_size, dropout_p, seed, pattern=None):
        B, H, T, _ = q.shape
        S, Dv = k.shape[-2], v.shape[-1]
        offset = S - T
        acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        row_max = torch.full((B, H, T, 1), -math.inf, dtype=acc, device=q.device)  # m: running max
        row_sum = torch.zeros((B, H, T, 1), dtype=acc, device=q.device)  # l: running sum of exp(s - m)
        out = torch.zeros((B, H, T, Dv), dtype=acc, device=q.device)  # running numerator
        for j0 in range(0, S, block_size):
            j1 = min(S, j0 + block_size)
            r0 = _first_row(causal, offset, j0)
            if r0 >= T:
                break
            s = _tile_scores(q, k, bias, causal, scale, offset, r0, j0, j1, pattern).to(acc)  # (B, H, T-r0, L)
            m_old = row_max[..., r0:, :]
            m_new = torch.maximum(m_old, s.amax(-1, keepdim=True))
            p = torch.exp(s - m_new)  # (B, H, T-r0, L)
            correction = torch.exp(m_old - m_new)  # rescales what was summed under the old maximum
            row_sum[..., r0:, :] = correction * row_sum[..., r0:, :] + p.sum(-1, keepdim=True)
            if dropout_p:
                p = p * _dropout_keep(p.shape, dropout_p, seed, j0, q.device) / (1 - dropout_p)
            out[..., r0:, :] = correction * out[..., r0:, :] + p @ v[..., j0:j1, :].to(acc)
            row_max[..., r0:, :] = m_new
        out = out / row_sum
        lse = row_max + torch.log(row_sum)  # log-sum-exp of each row: all the backward needs
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.causal, ctx.scale, ctx.block_size, ctx.dropout_p, ctx.seed = causal, scale, block_size, dropout_p, seed
        ctx.pattern = pattern
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, out, lse = ctx.saved_tensors
        causal, scale, block_size, dropout_p, seed = ctx.causal, ctx.scale, ctx.block_size, ctx.dropout_p, ctx.seed
        T, S = q.shape[-2], k.shape[-2]
        offset = S - T
        acc = lse.dtype
        grad_out = grad_out.to(acc)
        # D_i = sum_j P_ij dP_ij = dO_i . O_i (the dropout mask cancels in this identity)
        delta = (grad_out * out.to(acc)).sum(-1, keepdim=True)  # (B, H, T, 1)
        dq = torch.zeros(q.shape, dtype=acc, device=q.device)
        dk = torch.zeros(k.shape, dtype=acc, device=q.device)
        dv = torch.zeros(v.shape, dtype=acc, device=q.device)
        need_dbias = bias is not None and ctx.needs_input_grad[3]
        dbias = torch.zeros(bias.shape, dtype=acc, device=q.device) if need_dbias else None
        for j0 in range(0, S, block_size):
            j1 = min(S, j0 + block_size)
            r0 = _first_row(causal, offset, j0)
            if r0 >= T:
                break
            s = _tile_scores(q, k, bias, causal, scale, offset, r0, j0, j1, ctx.pattern).to(acc)
            p = torch.exp(s - lse[..., r0:, :])  # the tile's probabilities, recomputed: (B, H, T-r0, L)
            g = grad_out[..., r0:, :]
            k_tile, v_tile = k[..., j0:j1, :].to(acc), v[..., j0:j1, :].to(acc)
            dp = g @ v_tile.transpose(-2, -1)  # dL/dP (B, H, T-r0, L)
            if dropout_p:
                keep = _dropout_keep(p.shape, dropout_p, seed, j0, q.device) / (1 - dropout_p)
                dv[..., j0:j1, :] = (p * keep).transpose(-2, -1) @ g
                dp = dp * keep
            else:
                dv[..., j0:j1, :] = p.transpose(-2, -1) @ g
            ds = p * (dp - delta[..., r0:, :])  # softmax backward: dS = P * (dP - D)
            dq[..., r0:, :] += (ds @ k_tile) * scale
            dk[..., j0:j1, :] = (ds.transpose(-2, -1) @ q[..., r0:, :].to(acc)) * scale
            if need_dbias:
                dims = [d for d in range(4) if bias.shape[d] == 1 and ds.shape[d] != 1]
                reduced = ds.sum(dim=dims, keepdim=True) if dims else ds
                _bias_tile(dbias, r0, T, j0, j1).add_(reduced)
        dbias = dbias.to(bias.dtype) if need_dbias else None
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbias, None, None, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    scale: float,
    dropout_p: float = 0.0,
    training: bool = False,
    block_size: int = 128,
    dropout_seed: int | None = None,
    pattern=None,
) -> torch.Tensor:
    """FlashAttention in plain PyTorch: exact attention in memory linear in the length.

    The keys are visited in tiles of ``block_size``. For each tile the kernel
    computes the scores of every query against it, and keeps per query a running
    maximum ``m``, a running sum ``l = sum exp(s - m)`` and a running output,
    rescaling the old sums by ``exp(m_old - m_new)`` whenever the maximum grows
    (the online softmax). Only ``O`` and the log-sum-exp ``m + log l`` are saved;
    the backward recomputes each tile's probabilities from them. With
    ``causal=True`` tiles above the diagonal are skipped and the causal mask of
    a diagonal tile is built for that tile alone. A ``bias`` (ALiBi, T5 buckets,
    sparse patterns) is sliced tile by tile and receives its gradient; a sparse
    ``pattern`` (:class:`llmcourse.masks.Pattern`) is instead evaluated tile by
    tile from its position rule, so it costs no ``T x S`` memory either.
    Dropout masks are regenerated per tile from ``dropout_seed`` (drawn from
    torch's global generator when ``None``).

    Shapes: ``q (B, H, T, Dh)``, ``k, v (B, H, S, Dh)``, ``bias (1|B, 1|H, 1|T, 1|S)`` -> ``(B, H, T, Dh)``.
    """
    _check_qkv(q, k, v, causal)
    if block_size <= 0:
        raise ValueError(f"block_size={block_size} must be a positive number of keys per tile.")
    p = dropout_p if training else 0.0
    seed = 0
    if p:
        seed = int(torch.randint(0, 2**62, (1,))) if dropout_seed is None else dropout_seed
    return FlashAttentionFunction.apply(q, k, v, _as_4d(bias), causal, scale, block_size, p, seed, pattern)


# --- Performer / RFA ---------------------------------------------------------------
_FEATURE_CACHE: dict[tuple, torch.Tensor] = {}


def random_projection(n_features: int, dim: int, *, seed: int = 0, orthogonal: bool = True) -> torch.Tensor:
    """Gaussian projection rows ``w_1..w_M`` for the random features, reproducible from ``seed``.

    ``orthogonal=True`` (Performer's ORF): rows come in blocks of ``dim`` exactly
    orthogonal directions, each rescaled to the length of a Gaussian vector
    (a chi-distributed norm), so each row is still marginally ``N(0, I)`` but the
    rows of a block do not repeat each other's information.

    Shapes: returns ``(M, Dh)`` float64.
    """
    key = (n_features, dim, seed, orthogonal)
    if key not in _FEATURE_CACHE:
        g = torch.Generator().manual_seed(seed)
        if orthogonal:
            blocks = []
            for _ in range(math.ceil(n_features / dim)):
                qmat, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
                blocks.append(qmat.T)  # dim orthonormal rows
            directions = torch.cat(blocks)[:n_features]
            norms = torch.randn(n_features, dim, generator=g, dtype=torch.float64).norm(dim=1)
            w = directions * norms[:, None]
        else:
            w = torch.randn(n_features, dim, generator=g, dtype=torch.float64)
        _FEATURE_CACHE[key] = w
    return _FEATURE_CACHE[key]


def positive_features(x: torch.Tensor, w: torch.Tensor, *, is_query: bool) -> torch.Tensor:
    """FAVOR+ positive features ``phi(x) = exp(w x - |x|^2 / 2) / sqrt(M)``, so ``E[phi(q) . phi(k)] = exp(q . k)``.

    A constant factor cancels in the attention's ratio, so for numerical range
    each query row subtracts its own maximum exponent and the keys subtract
    their largest exponent over all positions and features (per batch and head),
    as the Performer's reference code does: every feature lies in (0, 1].

    Shapes: ``x (B, H, L, Dh)``, ``w (M, Dh)`` -> ``(B, H, L, M)``.
    """
    projected = x @ w.T  # (B, H, L, M)
    exponent = projected - (x * x).sum(-1, keepdim=True) / 2
    if is_query:
        exponent = exponent - exponent.amax(-1, keepdim=True).detach()
    else:
        exponent = exponent - exponent.amax((-2, -1), keepdim=True).detach()
    return torch.exp(exponent) / math.sqrt(w.shape[0])


def _key_bias_weights(bias: torch.Tensor | None, S: int) -> torch.Tensor | None:
    """A bias that depends on the key only (padding) factorises: ``exp(s + b_j) = exp(s) exp(b_j)``."""
    bias = _as_4d(bias)
    if bias is None:
        return None
    if bias.shape[-2] != 1:
        raise ValueError(
            "random-feature attention never forms the T x S score matrix, so it cannot add a bias that depends on "
            "both query and key (ALiBi, T5 buckets, prefix or sparse masks); only key-only biases (1|B, 1|H, 1, S) "
            "such as padding work. Use attn_impl='explicit', 'sdpa' or 'flash' for those."
        )
    return torch.exp(bias.transpose(-2, -1))  # (1|B, 1|H, S, 1)


def performer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    scale: float,
    dropout_p: float = 0.0,
    training: bool = False,
    n_features: int = 64,
    feature_seed: int = 0,
    orthogonal: bool = True,
    chunk_size: int = 64,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Performer's FAVOR+: softmax attention approximated with positive orthogonal random features.

    ``softmax(q k^T * scale) v ~ phi(q') (phi(k')^T v) / (phi(q') phi(k')^T 1)`` with
    ``q' = q sqrt(scale)``, ``k' = k sqrt(scale)``: the ``M x Dh`` summary
    ``phi(k')^T v`` replaces the ``T x S`` matrix, so cost is linear in the length.
    The causal form keeps running sums, chunk by chunk (``chunk_size``): exact
    prefix sums across chunks, a small masked product inside each chunk.

    ``gate`` (``(B, H, S)`` in (0, 1), causal only) turns it into RFA's gated
    recurrence ``S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T`` (Peng et al. 2021),
    a learned recency bias. The features are fixed by ``feature_seed`` (no
    redrawing), so the kernel is deterministic. ``dropout_p`` is ignored: there
    are no attention weights to drop.

    Shapes: ``q (B, H, T, Dh)``, ``k, v (B, H, S, Dh)``, ``bias (1|B, 1|H, 1, S)``, ``gate (B, H, S)`` -> ``(B, H, T, Dh)``.
    """
    _check_qkv(q, k, v, causal)
    if n_features <= 0:
        raise ValueError(f"n_features={n_features} must be a positive number of random features.")
    if gate is not None and not causal:
        raise ValueError("a gate defines RFA's causal recurrence; pass causal=True (or no gate).")
    T, S, Dh = q.shape[-2], k.shape[-2], q.shape[-1]
    dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    w = random_projection(n_features, Dh, seed=feature_seed, orthogonal=orthogonal).to(device=q.device, dtype=dtype)
    root = math.sqrt(scale)
    q_feat = positive_features(q.to(dtype) * root, w, is_query=True)  # (B, H, T, M)
    k_feat = positive_features(k.to(dtype) * root, w, is_query=False)  # (B, H, S, M)
    key_weights = _key_bias_weights(bias, S)
    if key_weights is not None:
        k_feat = k_feat * key_weights.to(dtype)
    v = v.to(dtype)
    if not causal:
        kv = k_feat.transpose(-2, -1) @ v  # (B, H, M, Dh)
        normaliser = k_feat.sum(-2)  # (B, H, M)
        out = (q_feat @ kv) / (q_feat @ normaliser[..., None]).clamp_min(torch.finfo(dtype).tiny)
        return out.to(q.dtype)
    return _causal_linear_attention(q_feat, k_feat, v, gate, chunk_size).to(q.dtype)


def _causal_linear_attention(q_feat, k_feat, v, gate, chunk_size):
    """Causal ``phi(q) sum_{j<=i} phi(k_j) v_j^T`` (optionally gated), queries the last T of S positions."""
    B, H, T, M = q_feat.shape
    S, Dh = k_feat.shape[-2], v.shape[-1]
    offset = S - T
    state = q_feat.new_zeros(B, H, M, Dh)  # sum of phi(k_j) v_j^T so far
    norm = q_feat.new_zeros(B, H, M)  # sum of phi(k_j) so far
    log_gate = torch.log(gate.to(q_feat.dtype)) if gate is not None else None
    outputs = []
    for c0 in range(0, S, chunk_size):
        c1 = min(S, c0 + chunk_size)
        kc, vc = k_feat[..., c0:c1, :], v[..., c0:c1, :]  # (B, H, C, M), (B, H, C, Dh)
        if log_gate is None:
            decay_to_end = None
            kc_in = kc
        else:
            a = torch.cumsum(log_gate[..., c0:c1], -1)  # log of the product of gates inside the chunk: (B, H, C)
            written = (1 - gate[..., c0:c1].to(q_feat.dtype))[..., None]  # RFA writes (1 - g_j) phi(k_j) v_j
            kc_in = kc * written
            decay_to_end = torch.exp(a[..., -1:] - a)  # (B, H, C): how much of key j survives to the chunk's end
        q0 = max(c0, offset)  # queries inside this chunk
        if q0 < c1:
            qc = q_feat[..., q0 - offset : c1 - offset, :]  # (B, H, Cq, M)
            q_pos = torch.arange(q0, c1, device=q_feat.device)[:, None]
            k_pos = torch.arange(c0, c1, device=q_feat.device)[None, :]
            within = (k_pos <= q_pos).to(q_feat.dtype)  # (Cq, C)
            scores = qc @ kc_in.transpose(-2, -1)  # (B, H, Cq, C)
            if log_gate is None:
                weights = scores * within
                carry_q = qc
            else:
                aq = a[..., q0 - c0 :]  # (B, H, Cq)
                decay = torch.exp((aq[..., :, None] - a[..., None, :]).clamp(max=0.0)) * within
                weights = scores * decay
                carry_q = qc * torch.exp(aq)[..., None]  # the state from before the chunk has decayed by prod g
            numerator = weights @ vc + carry_q @ state  # (B, H, Cq, Dh)
            denominator = weights.sum(-1) + (carry_q @ norm[..., None])[..., 0]  # (B, H, Cq)
            outputs.append(numerator / denominator[..., None].clamp_min(torch.finfo(q_feat.dtype).tiny))
        if decay_to_end is None:
            state = state + kc_in.transpose(-2, -1) @ vc
            norm = norm + kc_in.sum(-2)
        else:
            total = torch.exp(a[..., -1])  # (B, H)
            kd = kc_in * decay_to_end[..., None]
            state = state * total[..., None, None] + kd.transpose(-2, -1) @ vc
            norm = norm * total[..., None] + kd.sum(-2)
    return torch.cat(outputs, dim=-2)


# --- sparse patterns, computed sparsely -------------------------------------------
def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    pattern: str,
    block: int,
    global_blocks: int = 1,
    random_blocks: int = 1,
    seed: int = 0,
    summary: int | None = None,
    bias: torch.Tensor | None = None,
    causal: bool = True,
    scale: float,
    dropout_p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Attention restricted to a sparse pattern, computing only the scores the pattern allows (up to whole blocks).

    Equal to the explicit path with ``bias = sparse_bias(pattern, ...)``, but the
    work and memory follow the pattern: for ``strided`` and ``fixed`` about
    ``T (2 block + T / block)`` scores (``O(T sqrt T)`` with ``block ~ sqrt T``),
    for ``bigbird`` and ``window`` about ``T * block * (blocks per row)``, linear in ``T``.

    - ``strided``: the local part is a band of two blocks per query block, the
      strided part is attention along the columns of the ``(T / block, block)``
      grid of positions (a transpose), as in the Sparse Transformer.
    - ``fixed``: the own block plus the gathered summary columns.
    - ``bigbird`` / ``window``: each query block gathers its key blocks (window,
      global, random); global query rows attend densely.

    Needs self-attention over a whole sequence (``T == S``) with ``T`` a multiple
    of ``block``; no extra ``bias`` and no dropout.

    Shapes: ``q, k, v (B, H, T, Dh)`` -> ``(B, H, T, Dh)``.
    """
    _check_qkv(q, k, v, causal)
    T, S = q.shape[-2], k.shape[-2]
    if T != S or T % block:
        raise ValueError(
            f"sparse_attention needs T == S and T a multiple of block={block}, got T={T}, S={S}; "
            "pad the sequence, or use the explicit path with masks.sparse_bias for other shapes."
        )
    if bias is not None or (dropout_p and training):
        raise ValueError("sparse_attention takes no extra bias and no dropout; add them through the explicit path with masks.sparse_bias.")
    if pattern in ("strided", "fixed") and not causal:
        raise ValueError(f"the {pattern} kernel is the Sparse Transformer's causal one; pass causal=True.")
    if pattern == "strided":
        return _strided(q, k, v, block, scale)
    if pattern == "fixed":
        return _fixed(q, k, v, block, default_summary(block) if summary is None else summary, scale)
    if pattern in ("bigbird", "window"):
        return _blocked(q, k, v, pattern, block, global_blocks, random_blocks, seed, causal, scale)
    raise ValueError(f"pattern={pattern!r} has no sparse kernel; choose strided, fixed, bigbird or window.")


def _softmax_parts(*scores: torch.Tensor) -> list[torch.Tensor]:
    """One softmax over several disjoint groups of keys (concatenated on the last dimension, split back)."""
    joint = torch.softmax(torch.cat(scores, dim=-1), dim=-1)
    return list(joint.split([s.shape[-1] for s in scores], dim=-1))


def _strided(q, k, v, stride, scale):
    B, H, T, Dh = q.shape
    Dv = v.shape[-1]
    nb, L = T // stride, stride
    qb = q.view(B, H, nb, L, Dh)  # (B, H, nb, L, Dh): row b of the grid holds positions b*L .. b*L+L-1
    kb, vb = k.view(B, H, nb, L, Dh), v.view(B, H, nb, L, Dv)
    k_band = torch.cat([torch.cat([kb.new_zeros(B, H, 1, L, Dh), kb[:, :, :-1]], 2), kb], 3)  # previous and own block: (B, H, nb, 2L, Dh)
    v_band = torch.cat([torch.cat([vb.new_zeros(B, H, 1, L, Dv), vb[:, :, :-1]], 2), vb], 3)
    offs = torch.arange(L, device=q.device)[:, None] - torch.arange(-L, L, device=q.device)[None, :]  # i - j: (L, 2L)
    band_ok = ((offs >= 0) & (offs < L)).expand(nb, L, 2 * L).clone()  # A1: the previous L positions
    band_ok[0, :, :L] = False  # block 0 has no previous block (those keys are padding)
    s_band = (qb @ k_band.transpose(-2, -1)) * scale + torch.where(band_ok, 0.0, MASKED).to(q.dtype)
    qc, kc, vc = qb.transpose(2, 3), kb.transpose(2, 3), vb.transpose(2, 3)  # columns: (B, H, L, nb, Dh)
    col_ok = torch.arange(nb, device=q.device)[:, None] > torch.arange(nb, device=q.device)[None, :]  # A2 beyond the band
    s_col = (qc @ kc.transpose(-2, -1)) * scale + torch.where(col_ok, 0.0, MASKED).to(q.dtype)  # (B, H, L, nb, nb)
    s_col = s_col.transpose(2, 3)  # (B, H, nb, L, nb): back to query order
    p_band, p_col = _softmax_parts(s_band, s_col)
    out = p_band @ v_band + (p_col.transpose(2, 3) @ vc).transpose(2, 3)  # (B, H, nb, L, Dv)
    return out.reshape(B, H, T, Dv)


def _fixed(q, k, v, block, summary, scale):
    B, H, T, Dh = q.shape
    Dv = v.shape[-1]
    nb, L, c = T // block, block, summary
    qb, kb, vb = q.view(B, H, nb, L, Dh), k.view(B, H, nb, L, Dh), v.view(B, H, nb, L, Dv)
    own_ok = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()  # A1: own block, causal
    s_own = (qb @ kb.transpose(-2, -1)) * scale + torch.where(own_ok, 0.0, MASKED).to(q.dtype)  # (B, H, nb, L, L)
    k_sum = kb[:, :, :, L - c :].reshape(B, H, nb * c, Dh)  # A2: the last c positions of every block
    v_sum = vb[:, :, :, L - c :].reshape(B, H, nb * c, Dv)
    key_block = torch.arange(nb, device=q.device).repeat_interleave(c)  # (nb*c,)
    sum_ok = key_block[None, :] < torch.arange(nb, device=q.device)[:, None]  # earlier blocks only (own is in A1)
    s_sum = (qb @ k_sum[:, :, None].transpose(-2, -1)) * scale  # (B, H, nb, L, nb*c)
    s_sum = s_sum + torch.where(sum_ok, 0.0, MASKED).to(q.dtype)[:, None, :]
    p_own, p_sum = _softmax_parts(s_own, s_sum)
    out = p_own @ vb + p_sum @ v_sum[:, :, None]
    return out.reshape(B, H, T, Dv)


def _key_blocks(pattern, nb, global_blocks, random_blocks, seed, causal) -> torch.Tensor:
    """Per query block, the key blocks it may touch (without repeats), padded with -1: ``(nb, width)``."""
    table = bigbird_random_blocks(nb, random_blocks, global_blocks, seed, causal) if pattern == "bigbird" else None
    rows = []
    for b in range(nb):
        wanted = [b - 1, b] + ([] if causal else [b + 1])
        if pattern == "bigbird":
            wanted += list(range(global_blocks)) + [int(x) for x in table[b] if x >= 0]
        rows.append(sorted({x for x in wanted if 0 <= x < nb and (not causal or x <= b)}))
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)


def _blocked(q, k, v, pattern, block, global_blocks, random_blocks, seed, causal, scale):
    B, H, T, Dh = q.shape
    Dv = v.shape[-1]
    nb, L = T // block, block
    idx = _key_blocks(pattern, nb, global_blocks, random_blocks, seed, causal).to(q.device)  # (nb, W)
    W = idx.shape[1]
    kb, vb = k.view(B, H, nb, L, Dh), v.view(B, H, nb, L, Dv)
    safe = idx.clamp(min=0)
    k_g = kb[:, :, safe].reshape(B, H, nb, W * L, Dh)  # gathered key blocks: (B, H, nb, W*L, Dh)
    v_g = vb[:, :, safe].reshape(B, H, nb, W * L, Dv)
    q_pos = torch.arange(T, device=q.device).view(nb, L, 1)
    k_pos = (safe[:, :, None] * L + torch.arange(L, device=q.device)).reshape(nb, 1, W * L)
    options = dict(block=block, global_blocks=global_blocks, random_blocks=random_blocks, seed=seed, causal=causal)
    ok = pattern_allowed(pattern, q_pos, k_pos, **options) & (idx >= 0).repeat_interleave(L, 1)[:, None, :]
    s = (q.view(B, H, nb, L, Dh) @ k_g.transpose(-2, -1)) * scale + torch.where(ok, 0.0, MASKED).to(q.dtype)
    out = (torch.softmax(s, -1) @ v_g).reshape(B, H, T, Dv)
    if pattern == "bigbird" and not causal and global_blocks:
        g = min(T, global_blocks * L)  # global queries see every key: a dense (g, S) strip
        s_glob = (q[..., :g, :] @ k.transpose(-2, -1)) * scale
        out = torch.cat([torch.softmax(s_glob, -1) @ v, out[..., g:, :]], dim=-2)
    return out


def pattern_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    pattern,
    bias: torch.Tensor | None = None,
    causal: bool = True,
    scale: float,
    dropout_p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """:func:`sparse_attention` driven by a :class:`llmcourse.masks.Pattern` (the ``'sparse'`` kernel of the registry).

    The attention layer calls it only for whole sequences (``T == S``, ``T`` a
    multiple of the block, no extra bias, no dropout) and uses the explicit
    path with the pattern as a bias for everything else (cached decoding).
    """
    options = {k: v for k, v in pattern.options.items() if k != "causal"}
    return sparse_attention(
        q, k, v, pattern=pattern.name, bias=bias, causal=causal, scale=scale, dropout_p=dropout_p,
        training=training, **options,
    )


# Kept for code that looked kernels up here; the registry is llmcourse.kernels.KERNELS.
KERNELS = {"flash": flash_attention, "performer": performer_attention}
