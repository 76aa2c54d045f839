"""Pre-training objectives. Shape legend: ``B`` batch, ``T`` length, ``V`` vocab.

A *batch* is a dict: the model's keyword inputs (``input_ids``, and per objective
``prefix_len``, ``decoder_input_ids``, ``attention_mask``) plus ``targets``
``(B, T)`` with :data:`IGNORE` where no loss is taken. :func:`lm_loss` works for
every objective, because an objective is fully described by its batches:

- language modelling: targets are the inputs shifted by one, loss everywhere
  (``L_LM(x) = sum_i log P(x_i | x_<i)``);
- prefix language modelling: the same, with targets inside the prefix ignored;
- denoising (span corruption): the encoder reads corrupted text, the decoder
  predicts the removed spans.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # target id that takes no loss (PyTorch's cross_entropy default)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its targets: what the model is called with."""
    return {k: v for k, v in batch.items() if k != "targets"}


# --- softmax and cross-entropy, written out ----------------------------------------
def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m)`` with ``m = max_j x_j``.

    Subtracting the maximum changes nothing mathematically (it cancels between
    numerator and denominator) but keeps every exponent <= 0, so ``exp`` never
    overflows: logits of 1000 give the right answer instead of ``inf / inf = nan``.
    Equal to :func:`torch.softmax` to rounding.

    Shapes: ``x (..., V)`` -> ``(..., V)`` (any ``dim``).
    """
    shifted = x - x.amax(dim=dim, keepdim=True)  # every entry <= 0
    e = shifted.exp()
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log softmax(x)_i = x_i - logsumexp(x)``, with ``logsumexp(x) = m + log sum_j exp(x_j - m)``.

    Shapes: ``x (..., V)`` -> ``(..., V)``.
    """
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Mean negative log-likelihood of ``targets``, in log-sum-exp form, over the targets not equal to ``ignore_index``.

    ``-log softmax(z)_y = logsumexp(z) - z_y``: computed this way nothing is
    exponentiated above 0 and no probability is rounded to 0 before its log is
    taken. Logits are upcast to float32 first, as in :func:`lm_loss`. Equal to
    :func:`torch.nn.functional.cross_entropy` to rounding (not bit for bit: torch
    adds in another order); :func:`lm_loss` keeps torch's kernel, so training
    numbers do not depend on this teaching version. With every target ignored
    the mean is ``0 / 0 = nan``, as in torch.

    Shapes: ``logits (..., V)``, ``targets (...)`` -> scalar (e.g. ``(B, T, V)``, ``(B, T)``).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} do not fit: logits need one more "
            "(last, vocabulary) dimension than targets."
        )
    logits = logits.reshape(-1, logits.shape[-1]).float()  # (N, V)
    targets = targets.reshape(-1)  # (N,)
    keep = targets != ignore_index  # (N,)
    m = logits.amax(dim=-1, keepdim=True)  # (N, 1)
    logsumexp = (m + (logits - m).exp().sum(dim=-1, keepdim=True).log()).squeeze(-1)  # (N,)
    target_logit = logits.gather(-1, torch.where(keep, targets, 0)[:, None]).squeeze(-1)  # (N,)
    nll = torch.where(keep, logsumexp - target_logit, 0.0)  # (N,)
    return nll.sum() / keep.sum()


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Call the model on the batch's inputs and score its ``targets`` (torch's fused cross-entropy, in float32).

    The training loop's loss. It uses :func:`torch.nn.functional.cross_entropy`
    rather than the written-out :func:`cross_entropy` (equal to rounding), so
    every stored training run keeps its exact numbers.
    """
    if "targets" not in batch:
        raise ValueError("a training batch needs 'targets' (B, T) next to the model inputs.")
    logits = model(**model_inputs(batch))  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["targets"].reshape(-1), ignore_index=IGNORE)


def decoder_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`lm_loss` for a decoder of either mask, scored on the same targets.

    A prefix decoder reads the batch's ``prefix_len``; a causal decoder reads the
    same tokens causally and ignores it. Because the targets do not change, the
    two losses compare directly (chapter 01 does exactly that).
    """
    if getattr(getattr(model, "config", None), "mask", "causal") == "causal" and "prefix_len" in batch:
        batch = {k: v for k, v in batch.items() if k != "prefix_len"}
    return lm_loss(model, batch)


# --- prefix language modelling ------------------------------------------------
def prefix_lm_targets(targets: torch.Tensor, prefix_len: torch.Tensor | int) -> torch.Tensor:
    """Hide the targets that lie inside the prefix.

    Position ``i`` predicts token ``i + 1``. With a prefix of ``p`` tokens
    (positions ``0 .. p-1``, seen bidirectionally) the targets ``1 .. p-1`` are
    inside the prefix: a prefix position can *see* them, so they cannot be
    scored. Position ``p - 1`` predicts token ``p``, the first one after the
    prefix, which no prefix position sees; it keeps its loss.

    Shapes: ``targets (B, T)``, ``prefix_len`` int or ``(B,)`` -> ``(B, T)``.
    """
    B, T = targets.shape
    prefix_len = torch.as_tensor(prefix_len, device=targets.device).reshape(-1)
    if prefix_len.numel() not in (1, B):
        raise ValueError(f"prefix_len has {prefix_len.numel()} entries but the batch has {B} examples; give one per example.")
    if (prefix_len < 0).any() or (prefix_len > T).any():
        raise ValueError(
            f"prefix lengths must lie in [0, {T}] for a sequence of length {T}, got {prefix_len.tolist()}; "
            "shorten the prefix or lengthen the sequence."
        )
    inside = torch.arange(T, device=targets.device)[None, :] < (prefix_len[:, None] - 1)  # (B, T)
    return targets.masked_fill(inside, IGNORE)


def prefix_lm_batch(batch: dict[str, torch.Tensor], prefix_len: torch.Tensor | int) -> dict[str, torch.Tensor]:
    """Turn a language-modelling batch into a prefix-LM batch with the given prefix lengths."""
    B = batch["input_ids"].shape[0]
    prefix_len = torch.as_tensor(prefix_len, dtype=torch.long).reshape(-1).expand(B).clone()
    return {"input_ids": batch["input_ids"], "prefix_len": prefix_len, "targets": prefix_lm_targets(batch["targets"], prefix_len)}


class PrefixLMBatches:
    """Random windows of a token stream, each with a random prefix (the survey's prefix LM).

    ``batches(generator)`` -> ``{"input_ids": (B, T), "prefix_len": (B,), "targets": (B, T)}``.
    Each example draws its own prefix length uniformly from
    ``[min_prefix, max_prefix]`` (default ``[1, T - 1]``); targets inside the
    prefix are :data:`IGNORE`, so the loss is taken only after it.
    """

    def __init__(
        self, ids: torch.Tensor, batch_size: int, seq_len: int, min_prefix: int = 1, max_prefix: int | None = None
    ) -> None:
        from .data import LMBatches  # floor 1

        max_prefix = seq_len - 1 if max_prefix is None else max_prefix
        if not 0 <= min_prefix <= max_prefix <= seq_len:
            raise ValueError(
                f"need 0 <= min_prefix <= max_prefix <= seq_len, got min_prefix={min_prefix}, "
                f"max_prefix={max_prefix}, seq_len={seq_len}."
            )
        self.windows = LMBatches(ids, batch_size, seq_len)
        self.min_prefix, self.max_prefix = min_prefix, max_prefix

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = self.windows(generator)
        B = batch["input_ids"].shape[0]
        prefix_len = torch.randint(self.min_prefix, self.max_prefix + 1, (B,), generator=generator)
        return prefix_lm_batch(batch, prefix_len)


# --- denoising: T5 span corruption ------------------------------------------------
def sentinel_tokens(n: int) -> list[str]:
    """Names of ``n`` sentinel tokens, as T5 spells them (``<extra_id_0>``, ...)."""
    return [f"<extra_id_{i}>" for i in range(n)]


def span_counts(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """``(noise tokens, noise spans)`` for a text of ``length`` tokens, rounded as T5 does.

    Raffel et al. 2020 (sec. 3.3.4) corrupt 15% of the tokens in spans of mean
    length 3. At least one token is noise and at least one is not.
    """
    if length < 2:
        raise ValueError(f"span corruption needs a text of at least 2 tokens, got length={length}.")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density={noise_density} must lie strictly between 0 and 1.")
    if mean_noise_span_length < 1.0:
        raise ValueError(f"mean_noise_span_length={mean_noise_span_length} must be at least 1 token.")
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(round(n_noise / mean_noise_span_length), 1)
    n_spans = min(n_spans, length - n_noise)  # every noise span needs a clean span before it
    return n_noise, n_spans


def _random_segmentation(n_items: int, n_segments: int, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """Split ``n_items`` into ``n_segments`` non-empty runs, uniformly at random. Shapes: ``-> (B, n_segments)``."""
    if n_segments == 1:
        return torch.full((batch_size, 1), n_items, dtype=torch.long)
    # choose n_segments - 1 distinct cut points among the n_items - 1 gaps
    order = torch.rand(batch_size, n_items - 1, generator=generator).argsort(dim=1)
    cuts = order < (n_segments - 1)  # (B, n_items - 1), exactly n_segments - 1 True per row
    first_in_segment = torch.cat([torch.ones(batch_size, 1, dtype=torch.bool), cuts], dim=1)  # (B, n_items)
    segment_id = first_in_segment.long().cumsum(1) - 1
    return torch.zeros(batch_size, n_segments, dtype=torch.long).scatter_add_(1, segment_id, torch.ones_like(segment_id))


def random_spans_noise_mask(
    length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which tokens to corrupt, in T5's layout: clean, noise, clean, noise, ... ending with noise.

    The noise tokens and the clean tokens are each split at random into the same
    number of non-empty spans, then interleaved starting with a clean span (the
    algorithm of T5's ``random_spans_noise_mask``).

    Shapes: returns a boolean ``(B, length)``, True on noise.
    """
    n_noise, n_spans = span_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(n_noise, n_spans, batch_size, generator)  # (B, k)
    clean_lengths = _random_segmentation(length - n_noise, n_spans, batch_size, generator)  # (B, k)
    interleaved = torch.stack([clean_lengths, noise_lengths], dim=2).reshape(batch_size, 2 * n_spans)  # (B, 2k)
    span_starts = interleaved.cumsum(1)[:, :-1]  # (B, 2k - 1), each < length
    starts = torch.zeros(batch_size, length, dtype=torch.long).scatter_(1, span_starts, 1)
    return starts.cumsum(1) % 2 == 1


def _replace_runs(tokens: torch.Tensor, mask: torch.Tensor, sentinel_ids: torch.Tensor) -> torch.Tensor:
    """Keep the tokens where ``mask`` is False; replace each run of True by one sentinel, numbered in order."""
    previous = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
    run_start = mask & ~previous  # (B, L)
    run_index = run_start.long().cumsum(1) - 1
    n_runs = int(run_start.sum(1).max()) if mask.numel() else 0
    if n_runs > len(sentinel_ids):
        raise ValueError(
            f"a row has {n_runs} spans to replace but only {len(sentinel_ids)} sentinel ids were given; "
            "add sentinels (span_counts tells how many spans a length gives)."
        )
    values = torch.where(run_start, sentinel_ids[run_index.clamp_min(0)], tokens)
    keep = ~mask | run_start
    lengths = keep.sum(1)
    if (lengths != lengths[0]).any():
        raise ValueError("rows of the noise mask give different lengths; use the same number of noise tokens and spans per row.")
    return values[keep].view(tokens.shape[0], -1)


def span_corrupt(
    tokens: torch.Tensor, noise_mask: torch.Tensor, sentinel_ids: list[int] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5's span corruption (Raffel et al. 2020, fig. 2) of a batch of texts.

    The input keeps the clean tokens and replaces each noise span ``i`` by
    sentinel ``i``; the target lists each span after its sentinel and ends with
    one more sentinel:
    ``Thank you <X> me to your party <Y> week.`` -> ``<X> for inviting <Y> last <Z>``.

    Shapes: ``tokens, noise_mask (B, L)`` -> inputs ``(B, L - noise + k)``,
    targets ``(B, noise + k + 1)`` for ``k`` noise spans per row.
    """
    if tokens.shape != noise_mask.shape or tokens.dim() != 2:
        raise ValueError(f"tokens {tuple(tokens.shape)} and noise_mask {tuple(noise_mask.shape)} must be the same (B, L).")
    sentinel_ids = torch.as_tensor(sentinel_ids, dtype=tokens.dtype, device=tokens.device)
    noise_mask = noise_mask.bool()
    inputs = _replace_runs(tokens, noise_mask, sentinel_ids)
    # Pad one clean token on each side: then every clean run (the padding included)
    # becomes a sentinel, giving s0 N0 s1 N1 ... s_k whatever the mask's ends look like.
    B = tokens.shape[0]
    pad = torch.zeros(B, 1, dtype=tokens.dtype, device=tokens.device)
    clean = torch.ones(B, 1, dtype=torch.bool, device=tokens.device)
    targets = _replace_runs(torch.cat([pad, tokens, pad], 1), ~torch.cat([~clean, noise_mask, ~clean], 1), sentinel_ids)
    return inputs, targets


def shift_right(targets: torch.Tensor, start_token_id: int) -> torch.Tensor:
    """Decoder inputs: the start token, then the targets without their last token (teacher forcing)."""
    start = torch.full_like(targets[:, :1], start_token_id)
    return torch.cat([start, targets[:, :-1]], dim=1)


class SpanCorruptionBatches:
    """Random windows of ``seq_len`` tokens, span-corrupted for an encoder-decoder.

    ``batches(generator)`` -> ``{"input_ids": (B, S), "decoder_input_ids": (B, T), "targets": (B, T)}``
    with ``S = seq_len - noise + k`` and ``T = noise + k + 1`` (:func:`span_counts`).
    ``sentinel_ids`` needs ``k + 1`` ids (:attr:`n_sentinels`); the vocabulary
    must hold them, e.g. ``tokenizer.with_specials(sentinel_tokens(n))``.
    """

    def __init__(
        self,
        ids: torch.Tensor,
        batch_size: int,
        seq_len: int,
        *,
        sentinel_ids: list[int],
        decoder_start_token_id: int,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
    ) -> None:
        from .data import LMBatches  # floor 1

        self.n_noise, self.n_spans = span_counts(seq_len, noise_density, mean_noise_span_length)
        if len(sentinel_ids) < self.n_sentinels:
            raise ValueError(
                f"seq_len={seq_len} gives {self.n_spans} noise spans, which need {self.n_sentinels} sentinel ids; "
                f"got {len(sentinel_ids)}."
            )
        self.windows = LMBatches(ids, batch_size, seq_len - 1)  # seq_len - 1 inputs + 1 shifted = seq_len tokens
        self.batch_size, self.seq_len = batch_size, seq_len
        self.sentinel_ids = list(sentinel_ids)
        self.decoder_start_token_id = decoder_start_token_id
        self.noise_density, self.mean_noise_span_length = noise_density, mean_noise_span_length

    @property
    def n_sentinels(self) -> int:
        return self.n_spans + 1

    @property
    def input_len(self) -> int:
        return self.seq_len - self.n_noise + self.n_spans

    @property
    def target_len(self) -> int:
        return self.n_noise + self.n_spans + 1

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        w = self.windows(generator)
        tokens = torch.cat([w["input_ids"], w["targets"][:, -1:]], dim=1)  # (B, seq_len)
        noise = random_spans_noise_mask(
            self.seq_len, self.noise_density, self.mean_noise_span_length, self.batch_size, generator
        )
        inputs, targets = span_corrupt(tokens, noise, self.sentinel_ids)
        return {
            "input_ids": inputs,
            "decoder_input_ids": shift_right(targets, self.decoder_start_token_id),
            "targets": targets,
        }


def seq2seq_as_decoder_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same sequence-to-sequence example for a decoder-only model.

    The source and the decoder inputs are concatenated; the source is the
    prefix (seen bidirectionally by a prefix decoder, causally by a causal one,
    see :func:`decoder_loss`), and the loss falls on exactly the encoder-decoder's
    targets, so the three architectures are scored on the same predictions.

    Shapes: ``input_ids (B, S)``, ``decoder_input_ids, targets (B, T)`` ->
    ``input_ids, targets (B, S + T)``, ``prefix_len (B,)``.
    """
    src, dec, tgt = batch["input_ids"], batch["decoder_input_ids"], batch["targets"]
    if src.shape[0] != dec.shape[0]:
        raise ValueError(f"batch sizes differ: input_ids has {src.shape[0]} rows, decoder_input_ids {dec.shape[0]}.")
    B, S = src.shape
    ignored = torch.full_like(src, IGNORE)
    return {
        "input_ids": torch.cat([src, dec], dim=1),
        "prefix_len": torch.full((B,), S, dtype=torch.long, device=src.device),
        "targets": torch.cat([ignored, tgt], dim=1),
    }
