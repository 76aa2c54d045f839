"""Denoising objectives beyond T5's spans: BERT masking, GLM blank infilling, UL2's mixture of denoisers.

Shape legend: ``B`` batch, ``L`` text length (tokens of the original window),
``T`` model sequence length, ``S`` encoder length, ``k`` spans.

Each objective is a batch source (``batches(generator) -> dict``, deterministic
given the generator) and a loss ``(model, batch) -> tensor``; as in
:mod:`llmcourse.objectives`, targets are aligned with the model's outputs
(``targets[:, i]`` is what position ``i`` must predict) and :data:`IGNORE` marks
positions without a loss. The losses check that the model can read the batch
and raise a :class:`ValueError` naming the fix when it cannot.

- **Masked language modelling** (Devlin et al. 2019): 15% of the tokens are
  chosen; of those, 80% become ``[MASK]``, 10% a random token, 10% stay. The
  model predicts the chosen tokens *at their own positions* from both sides, so
  it needs a bidirectional encoder: here a decoder with ``mask='prefix'`` whose
  prefix covers the whole sequence (``prefix_len = T``).
- **GLM's autoregressive blank infilling** (Du et al. 2022): spans with lengths
  drawn from Poisson(3) until 15% of the tokens are covered; part A is the text
  with each span replaced by one ``[MASK]``, part B the spans in random order,
  each opened by ``[START]`` and closed by ``[END]``. Part A is read
  bidirectionally, part B causally (a prefix decoder with ``prefix_len = |A|``),
  the loss falls on part B only, and every token carries two position ids: its
  position in part A (a part-B token takes its span's ``[MASK]`` position) and
  its position inside the span (0 in part A, 1, 2, ... in part B).
  GLM-130B's ``[gMASK]`` (Zeng et al. 2022) blanks one long span at the end.
- **UL2's mixture of denoisers** (Tay et al. 2022): each batch draws one
  denoiser, R (T5 spans, short and sparse), S (prefix LM) or X (long spans or a
  high rate), and its input starts with a mode token ``[R]``, ``[S]`` or ``[X]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from .data import LMBatches
from .objectives import (
    IGNORE,
    decoder_loss,
    lm_loss,
    prefix_lm_batch,
    prefix_lm_targets,
    random_spans_noise_mask,
    sentinel_tokens,
    seq2seq_as_decoder_batch,
    shift_right,
    span_corrupt,
    span_counts,
)

MASK, START, END, GMASK = "[MASK]", "[START]", "[END]", "[gMASK]"
MODE_TOKENS = {"R": "[R]", "S": "[S]", "X": "[X]"}


def _config(model: nn.Module, objective: str):
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "arch"):
        raise ValueError(f"{objective} needs a llmcourse model (DecoderLM or EncoderDecoderLM) with a .config.")
    return cfg


def _windows(ids: torch.Tensor, batch_size: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows of ``length`` tokens. Shapes: ``ids (N,)`` -> ``(B, L)``."""
    starts = torch.randint(len(ids) - length + 1, (batch_size,), generator=generator)
    return ids[starts[:, None] + torch.arange(length)[None, :]]


def _check_stream(ids: torch.Tensor, length: int) -> None:
    if len(ids) < length:
        raise ValueError(f"the token stream has {len(ids)} tokens, too few for windows of {length}; use a longer text.")


def regular_vocab_size(tokenizer) -> int:
    """The number of ids that are ordinary tokens (characters, bytes, merges): the specials come after them."""
    return tokenizer.vocab_size - len(tokenizer.specials)


# --- BERT's masked language modelling ------------------------------------------------
def bert_mask(
    tokens: torch.Tensor,
    *,
    mask_id: int,
    n_random: int,
    mask_prob: float = 0.15,
    replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption (Devlin et al. 2019, sec. 3.1): returns ``(inputs, targets)``.

    ``round(mask_prob * L)`` positions per row (at least 1) are chosen uniformly;
    each chosen one becomes ``mask_id`` with probability ``replace_probs[0]``, a
    random id in ``[0, n_random)`` with ``replace_probs[1]``, and stays itself
    otherwise. ``targets`` holds the original token at the chosen positions and
    :data:`IGNORE` elsewhere: the loss is taken on the chosen 15% only, including
    the 10% that look unchanged (so the model cannot trust any input token).

    Shapes: ``tokens (B, L)`` -> ``inputs, targets (B, L)``.
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be (B, L), got shape {tuple(tokens.shape)}.")
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob={mask_prob} must lie strictly between 0 and 1 (BERT uses 0.15).")
    if len(replace_probs) != 3 or min(replace_probs) < 0 or not math.isclose(sum(replace_probs), 1.0):
        raise ValueError(f"replace_probs={replace_probs} must be three probabilities ([MASK], random, keep) summing to 1.")
    if n_random < 1:
        raise ValueError(f"n_random={n_random} must be at least 1: the random replacements are drawn from [0, n_random).")
    B, L = tokens.shape
    n = min(max(round(mask_prob * L), 1), L)
    order = torch.rand(B, L, generator=generator).argsort(dim=1)
    chosen = torch.zeros(B, L, dtype=torch.bool).scatter_(1, order[:, :n], True)  # exactly n per row
    u = torch.rand(B, L, generator=generator)
    random_ids = torch.randint(n_random, (B, L), generator=generator)
    p_mask, p_random, _ = replace_probs
    inputs = torch.where(chosen & (u < p_mask), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (u >= p_mask) & (u < p_mask + p_random), random_ids.to(tokens.dtype), inputs)
    targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    return inputs, targets


class MaskedLMBatches:
    """Random windows of ``seq_len`` tokens, BERT-masked, for a bidirectional encoder.

    ``batches(generator)`` -> ``{"input_ids": (B, L), "prefix_len": (B,) all L, "targets": (B, L)}``:
    the prefix covers the whole sequence, so a decoder built with
    ``mask='prefix'`` attends in both directions, like BERT's encoder.
    ``n_random``: the number of regular token ids (:func:`regular_vocab_size`).
    """

    def __init__(
        self,
        ids: torch.Tensor,
        batch_size: int,
        seq_len: int,
        *,
        mask_id: int,
        n_random: int,
        mask_prob: float = 0.15,
        replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1),
    ) -> None:
        _check_stream(ids, seq_len)
        self.ids, self.batch_size, self.seq_len = ids, batch_size, seq_len
        self.mask_id, self.n_random, self.mask_prob, self.replace_probs = mask_id, n_random, mask_prob, replace_probs
        bert_mask(torch.zeros(1, seq_len, dtype=torch.long), mask_id=mask_id, n_random=n_random, mask_prob=mask_prob,
                  replace_probs=replace_probs)  # validates the arguments now rather than at the first batch

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        tokens = _windows(self.ids, self.batch_size, self.seq_len, generator)
        inputs, targets = bert_mask(
            tokens, mask_id=self.mask_id, n_random=self.n_random, mask_prob=self.mask_prob,
            replace_probs=self.replace_probs, generator=generator,
        )
        return {"input_ids": inputs, "prefix_len": torch.full((self.batch_size,), self.seq_len), "targets": targets}


def masked_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`~llmcourse.objectives.lm_loss` after checking that the model reads the whole input bidirectionally."""
    cfg = _config(model, "masked language modelling")
    if cfg.arch == "encoder_decoder":
        raise ValueError(
            "masked language modelling predicts each token at its own position, from both sides; an encoder-decoder "
            "has no outputs at the encoder's positions. Use arch='decoder' with mask='prefix' (the batch's prefix "
            "covers the whole sequence: a BERT-like encoder), or span corruption (SpanCorruptionBatches) for an "
            "encoder-decoder."
        )
    if cfg.mask != "prefix":
        raise ValueError(
            "masked language modelling needs a bidirectional model, but this decoder is causal (config.mask='causal'): "
            "a position could not see the text after a [MASK], and the 10% unchanged tokens would be copied from the "
            "input. Build it with mask='prefix' (or convert with to_prefix_decoder); the batch's prefix_len covers the "
            "whole sequence."
        )
    return lm_loss(model, batch)


# --- GLM's autoregressive blank infilling ---------------------------------------------
def glm_span_lengths(
    length: int, generator: torch.Generator | None = None, mask_ratio: float = 0.15, poisson_lambda: float = 3.0
) -> list[int]:
    """Span lengths drawn from Poisson(``poisson_lambda``) (zeros redrawn) until ``int(mask_ratio * length)`` tokens are covered.

    As in GLM's code, the last span may overshoot the target; at least one token
    is masked, and the spans always fit the text with one clean token between
    neighbours (a draw that would not fit is shortened).
    """
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio} must lie strictly between 0 and 1 (GLM uses 0.15).")
    if poisson_lambda <= 0:
        raise ValueError(f"poisson_lambda={poisson_lambda} must be positive (GLM uses 3).")
    if length < 2:
        raise ValueError(f"blank infilling needs a text of at least 2 tokens, got length={length}.")
    target = max(int(mask_ratio * length), 1)
    lengths: list[int] = []
    while sum(lengths) < target:
        draws = torch.poisson(torch.full((16,), float(poisson_lambda)), generator=generator).long().tolist()
        for n in draws:
            if n < 1:
                continue
            room = length - sum(lengths) - len(lengths)  # tokens left once every span keeps a clean neighbour
            if room < 1:
                return lengths
            lengths.append(min(n, room))
            if sum(lengths) >= target:
                break
    return lengths


def place_spans(lengths: Sequence[int], length: int, generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """Random non-overlapping ``(start, end)`` spans of the given lengths, in order, at least one token apart.

    GLM's ``sample_spans``: the ``length - sum(lengths)`` clean tokens are
    arranged around the spans uniformly at random, with one clean token
    reserved between neighbouring spans.
    """
    n = len(lengths)
    free = length - sum(lengths) - max(n - 1, 0)  # clean tokens that may go anywhere
    if free < 0 or any(s < 1 for s in lengths):
        raise ValueError(f"spans of lengths {list(lengths)} do not fit a text of {length} tokens one token apart.")
    places = sorted(torch.randint(free + 1, (n,), generator=generator).tolist())
    spans, offset = [], 0
    for place, s in zip(places, lengths):
        spans.append((offset + place, offset + place + s))
        offset += s + 1
    return spans


def glm_example(
    tokens: Sequence[int],
    spans: Sequence[tuple[int, int]],
    order: Sequence[int] | None = None,
    *,
    mask_id: int,
    start_id: int,
    end_id: int,
) -> dict[str, torch.Tensor]:
    """One GLM training example (Du et al. 2022, fig. 2) from a text and its spans.

    Part A: the text with span ``i`` replaced by one ``mask_id``. Part B: for
    each span in ``order`` (default: text order), ``start_id`` then the span's
    tokens as inputs, and the span's tokens then ``end_id`` as targets.
    Position ids: ``[:, 0]`` is the position in part A (part B: the position of
    the span's ``[MASK]``), ``[:, 1]`` is 0 in part A and ``1 .. len + 1`` in
    part B. ``prefix_len = |A|``: part A is bidirectional, part B causal.

    Shapes: ``tokens (L,)`` -> ``input_ids, targets (T,)``, ``position_ids (T, 2)``
    with ``T = L + 2k`` for ``k`` spans; ``prefix_len`` a 0-d tensor.
    """
    tokens = [int(t) for t in tokens]
    spans = sorted((int(a), int(b)) for a, b in spans)
    if not spans:
        raise ValueError("a GLM example needs at least one span to blank.")
    if any(a < 0 or b > len(tokens) or a >= b for a, b in spans) or any(
        spans[i][1] > spans[i + 1][0] for i in range(len(spans) - 1)
    ):
        raise ValueError(f"spans {spans} must be non-empty, non-overlapping and inside the text of {len(tokens)} tokens.")
    order = list(range(len(spans))) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(len(spans))):
        raise ValueError(f"order={order} must be a permutation of the {len(spans)} span indices.")
    part_a, mask_pos, prev = [], [], 0
    for a, b in spans:
        part_a += tokens[prev:a]
        mask_pos.append(len(part_a))
        part_a.append(mask_id)
        prev = b
    part_a += tokens[prev:]
    ids, pos1, pos2, tgt = list(part_a), list(range(len(part_a))), [0] * len(part_a), [IGNORE] * len(part_a)
    for i in order:
        a, b = spans[i]
        span = tokens[a:b]
        ids += [start_id] + span
        tgt += span + [end_id]
        pos1 += [mask_pos[i]] * (len(span) + 1)
        pos2 += list(range(1, len(span) + 2))
    return {
        "input_ids": torch.tensor(ids),
        "position_ids": torch.stack([torch.tensor(pos1), torch.tensor(pos2)], dim=-1),
        "prefix_len": torch.tensor(len(part_a)),
        "targets": torch.tensor(tgt),
    }


def gmask_span(length: int, generator: torch.Generator | None = None, min_fraction: float = 0.5) -> tuple[int, int]:
    """GLM-130B's long blank: the last ``n`` tokens, ``n`` uniform in ``[ceil(min_fraction * L), L - 1]``.

    Du et al. 2022 (document-level objective) draw the span from 50% to 100% of
    the text; one token is always left in part A here so that the blank has
    context. Returns ``(start, end)`` with ``end == length``.
    """
    if not 0.0 < min_fraction < 1.0:
        raise ValueError(f"min_fraction={min_fraction} must lie strictly between 0 and 1.")
    lo = max(math.ceil(min_fraction * length), 1)
    if lo > length - 1:
        raise ValueError(f"a text of {length} tokens is too short for a [gMASK] blank of at least {lo} tokens and 1 of context.")
    n = int(torch.randint(lo, length, (1,), generator=generator))
    return (length - n, length)


def pad_examples(examples: list[dict[str, torch.Tensor]], length: int | None = None) -> dict[str, torch.Tensor]:
    """Stack 1-D examples, padded on the right to ``length`` (default: the longest).

    Padding: token id 0, target :data:`IGNORE`, position ids 0, and
    ``attention_mask`` 0 (1 on real tokens). Shapes: ``-> (B, T)`` (``(B, T, 2)`` positions).
    """
    longest = max(len(e["input_ids"]) for e in examples)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"an example has {longest} tokens, more than length={length}; raise it.")
    out: dict[str, list[torch.Tensor]] = {"input_ids": [], "targets": [], "attention_mask": []}
    for e in examples:
        pad = length - len(e["input_ids"])
        out["input_ids"].append(torch.cat([e["input_ids"], torch.zeros(pad, dtype=torch.long)]))
        out["targets"].append(torch.cat([e["targets"], torch.full((pad,), IGNORE)]))
        out["attention_mask"].append(torch.cat([torch.ones(len(e["input_ids"]), dtype=torch.long),
                                                torch.zeros(pad, dtype=torch.long)]))
        if "position_ids" in e:
            p = e["position_ids"]
            out.setdefault("position_ids", []).append(torch.cat([p, torch.zeros(pad, *p.shape[1:], dtype=p.dtype)]))
        if "prefix_len" in e:
            out.setdefault("prefix_len", []).append(e["prefix_len"].reshape(()))
    return {k: torch.stack(v) for k, v in out.items()}


class GLMBatches:
    """Random windows of ``seq_len`` tokens turned into GLM blank-infilling examples for a prefix decoder.

    ``batches(generator)`` -> ``{"input_ids", "targets", "attention_mask": (B, T), "position_ids": (B, T, 2),
    "prefix_len": (B,)}``, padded to the longest row (``T <= seq_len + 2k``).
    Each row is a ``[gMASK]`` example with probability ``gmask_prob`` (GLM-130B
    mixes 30% ``[MASK]`` and 70% ``[gMASK]``; Du et al.'s blank infilling is
    ``gmask_prob=0``), otherwise Poisson spans covering ``mask_ratio`` of it.
    ``two_d=False`` gives one position id per token instead (the position in
    the whole sequence), GLM's ablation without 2D positions.
    """

    def __init__(
        self,
        ids: torch.Tensor,
        batch_size: int,
        seq_len: int,
        *,
        mask_id: int,
        start_id: int,
        end_id: int,
        gmask_id: int | None = None,
        gmask_prob: float = 0.0,
        mask_ratio: float = 0.15,
        poisson_lambda: float = 3.0,
        gmask_min_fraction: float = 0.5,
        two_d: bool = True,
    ) -> None:
        _check_stream(ids, seq_len)
        if not 0.0 <= gmask_prob <= 1.0:
            raise ValueError(f"gmask_prob={gmask_prob} must lie in [0, 1].")
        if gmask_prob > 0 and gmask_id is None:
            raise ValueError(f"gmask_prob={gmask_prob} needs gmask_id, the id of the [gMASK] token.")
        if not 0.0 < mask_ratio < 1.0 or poisson_lambda <= 0:
            raise ValueError(f"mask_ratio={mask_ratio} must lie in (0, 1) and poisson_lambda={poisson_lambda} be > 0.")
        self.ids, self.batch_size, self.seq_len = ids, batch_size, seq_len
        self.mask_id, self.start_id, self.end_id, self.gmask_id = mask_id, start_id, end_id, gmask_id
        self.gmask_prob, self.mask_ratio, self.poisson_lambda = gmask_prob, mask_ratio, poisson_lambda
        self.gmask_min_fraction, self.two_d = gmask_min_fraction, two_d

    def example(self, tokens: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One example from one window ``(L,)``; see :func:`glm_example`."""
        L = len(tokens)
        if self.gmask_prob > 0 and float(torch.rand((), generator=generator)) < self.gmask_prob:
            spans, mask_id = [gmask_span(L, generator, self.gmask_min_fraction)], self.gmask_id
        else:
            lengths = glm_span_lengths(L, generator, self.mask_ratio, self.poisson_lambda)
            spans, mask_id = place_spans(lengths, L, generator), self.mask_id
        order = torch.randperm(len(spans), generator=generator).tolist()
        ex = glm_example(tokens.tolist(), spans, order, mask_id=mask_id, start_id=self.start_id, end_id=self.end_id)
        if not self.two_d:
            ex["position_ids"] = torch.arange(len(ex["input_ids"]))
        return ex

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        windows = _windows(self.ids, self.batch_size, self.seq_len, generator)
        return pad_examples([self.example(w, generator) for w in windows])


def glm_as_encoder_decoder(batch: dict[str, torch.Tensor], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """A GLM batch for an encoder-decoder: part A to the encoder, part B to the decoder.

    The encoder reads part A (bidirectional, as in GLM) with its position ids;
    the decoder reads part B causally with its position ids (``position_dims=2``
    models get both ids) and cross-attends to part A. The targets are exactly the
    part-B targets of the decoder-only form, so the losses compare directly.

    Shapes: ``input_ids (B, T)`` -> ``input_ids, attention_mask (B, S)``,
    ``decoder_input_ids, targets (B, T')`` (+ ``position_ids``, ``decoder_position_ids``).
    """
    if "prefix_len" not in batch or "position_ids" not in batch:
        raise ValueError("glm_as_encoder_decoder needs a GLM batch (input_ids, position_ids, prefix_len, targets).")
    ids, pos, tgt, prefix = batch["input_ids"], batch["position_ids"], batch["targets"], batch["prefix_len"]
    real = batch.get("attention_mask", torch.ones_like(ids)).bool()
    enc, dec = [], []
    for b in range(ids.shape[0]):
        a, n = int(prefix[b]), int(real[b].sum())
        enc.append({"input_ids": ids[b, :a], "targets": torch.full((a,), IGNORE), "position_ids": pos[b, :a]})
        dec.append({"input_ids": ids[b, a:n], "targets": tgt[b, a:n], "position_ids": pos[b, a:n]})
    e, d = pad_examples(enc), pad_examples(dec)
    if pad_id:
        e["input_ids"] = e["input_ids"].masked_fill(e["attention_mask"] == 0, pad_id)
    return {
        "input_ids": e["input_ids"], "attention_mask": e["attention_mask"], "position_ids": e["position_ids"],
        "decoder_input_ids": d["input_ids"], "decoder_position_ids": d["position_ids"], "targets": d["targets"],
    }


def glm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """:func:`~llmcourse.objectives.lm_loss` on a GLM batch, after checking that the model can read it."""
    cfg = _config(model, "GLM blank infilling")
    if cfg.arch == "encoder_decoder" and "decoder_input_ids" not in batch:
        raise ValueError(
            "a GLM batch is one sequence (part A, then part B) for a prefix decoder; an encoder-decoder needs "
            "decoder_input_ids: convert the batch with glm_as_encoder_decoder(batch) (part A to the encoder, "
            "part B to the decoder)."
        )
    if cfg.arch == "decoder" and cfg.mask != "prefix":
        raise ValueError(
            "GLM reads part A bidirectionally and part B causally: build the decoder with mask='prefix' (or convert "
            "it with to_prefix_decoder); the batch's prefix_len is the length of part A."
        )
    pos = batch.get("position_ids")
    if pos is not None and (pos.dim() == 3) != (cfg.position_dims == 2):
        raise ValueError(
            f"the batch carries {'two position ids' if pos.dim() == 3 else 'one position id'} per token but the model "
            f"has position_dims={cfg.position_dims}; build it with position_dims={2 if pos.dim() == 3 else 1} "
            "(or make the batches with GLMBatches(two_d=...) to match)."
        )
    return lm_loss(model, batch)


# --- UL2's mixture of denoisers ----------------------------------------------------------
@dataclass(frozen=True)
class Denoiser:
    """One of UL2's denoisers: ``mode`` R, S or X; spans of mean ``mean_span`` covering ``rate`` of the text.

    S (sequential) is a prefix LM and takes neither ``mean_span`` nor ``rate``.
    """

    mode: str
    mean_span: float | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODE_TOKENS:
            raise ValueError(f"Denoiser mode={self.mode!r} must be one of {sorted(MODE_TOKENS)}.")
        if self.mode == "S" and (self.mean_span is not None or self.rate is not None):
            raise ValueError("the S denoiser is a prefix LM: give it neither mean_span nor rate.")
        if self.mode != "S" and (self.mean_span is None or self.rate is None):
            raise ValueError(f"the {self.mode} denoiser needs mean_span and rate (e.g. Denoiser('R', 3, 0.15)).")

    def __str__(self) -> str:
        return "S" if self.mode == "S" else f"{self.mode}(mean {self.mean_span:g}, rate {self.rate:g})"


#: UL2's seven denoisers (Tay et al. 2022, sec. 3.1.2), with the mean span of 64 cut to 32 for short contexts
UL2_DENOISERS = (
    Denoiser("R", 3, 0.15), Denoiser("R", 8, 0.15), Denoiser("S"),
    Denoiser("X", 3, 0.5), Denoiser("X", 8, 0.5), Denoiser("X", 32, 0.15), Denoiser("X", 32, 0.5),
)


class UL2Batches:
    """UL2's mixture of denoisers: each batch draws one denoiser (``weights``, default uniform).

    R and X corrupt a window of ``seq_len`` tokens with T5's spans (:func:`span_corrupt`)
    and put the mode token before the corrupted text; S splits it at a random
    point per row into a prefix and a continuation. ``arch='encoder_decoder'``
    gives ``input_ids (B, S)``, ``decoder_input_ids, targets (B, T)`` (and
    ``attention_mask`` for S, whose sources differ in length);
    ``arch='decoder'`` gives one sequence with ``prefix_len`` (source, or mode
    token and prefix, bidirectional) and targets after it
    (:func:`~llmcourse.objectives.seq2seq_as_decoder_batch`). The drawn
    denoiser is :attr:`last`.
    """

    def __init__(
        self,
        ids: torch.Tensor,
        batch_size: int,
        seq_len: int,
        *,
        mode_ids: dict[str, int],
        sentinel_ids: Sequence[int],
        decoder_start_token_id: int,
        denoisers: Sequence[Denoiser] = UL2_DENOISERS,
        weights: Sequence[float] | None = None,
        arch: str = "decoder",
    ) -> None:
        _check_stream(ids, seq_len + 1)
        if arch not in ("decoder", "encoder_decoder"):
            raise ValueError(f"arch={arch!r} must be 'decoder' or 'encoder_decoder'.")
        if not denoisers:
            raise ValueError("UL2Batches needs at least one Denoiser.")
        missing = sorted({d.mode for d in denoisers} - set(mode_ids))
        if missing:
            raise ValueError(f"mode_ids lacks the mode token of {missing}; give e.g. {{'R': id, 'S': id, 'X': id}}.")
        weights = [1.0] * len(denoisers) if weights is None else list(weights)
        if len(weights) != len(denoisers) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights={weights} must be one non-negative number per denoiser, not all 0.")
        for d in denoisers:
            if d.mode != "S":
                n_spans = span_counts(seq_len, d.rate, d.mean_span)[1]
                if len(sentinel_ids) < n_spans + 1:
                    raise ValueError(
                        f"denoiser {d} makes {n_spans} spans in {seq_len} tokens and needs {n_spans + 1} sentinel ids; "
                        f"got {len(sentinel_ids)}."
                    )
        self.ids, self.batch_size, self.seq_len, self.arch = ids, batch_size, seq_len, arch
        self.mode_ids, self.sentinel_ids = dict(mode_ids), list(sentinel_ids)
        self.decoder_start_token_id = decoder_start_token_id
        self.denoisers, self.weights = list(denoisers), torch.tensor(weights, dtype=torch.float)
        self.last: Denoiser | None = None

    def spans(self, tokens: torch.Tensor, d: Denoiser, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """An R or X batch. Shapes: ``tokens (B, L)`` -> source ``(B, 1 + L - n + k)``, targets ``(B, n + k + 1)``."""
        B, L = tokens.shape
        noise = random_spans_noise_mask(L, d.rate, d.mean_span, B, generator)
        inputs, targets = span_corrupt(tokens, noise, self.sentinel_ids)
        mode = torch.full((B, 1), self.mode_ids[d.mode], dtype=tokens.dtype)
        batch = {
            "input_ids": torch.cat([mode, inputs], dim=1),
            "decoder_input_ids": shift_right(targets, self.decoder_start_token_id),
            "targets": targets,
        }
        return batch if self.arch == "encoder_decoder" else seq2seq_as_decoder_batch(batch)

    def sequential(self, tokens: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """An S batch: a random split point ``p`` in ``[1, L - 1]`` per row; predict ``x[p:]`` from ``[S] x[:p]``."""
        B, L = tokens.shape
        p = torch.randint(1, L, (B,), generator=generator)
        mode = torch.full((B, 1), self.mode_ids["S"], dtype=tokens.dtype)
        if self.arch == "decoder":  # [S] x0 .. x_{L-2} predicts x0 .. x_{L-1}; the prefix is [S] and x[:p]
            return {
                "input_ids": torch.cat([mode, tokens[:, :-1]], dim=1),
                "prefix_len": p + 1,
                "targets": prefix_lm_targets(tokens, p + 1),
            }
        src = [{"input_ids": torch.cat([mode[b], tokens[b, : p[b]]]), "targets": torch.full((int(p[b]) + 1,), IGNORE)}
               for b in range(B)]
        dec = [{"input_ids": shift_right(tokens[b : b + 1, p[b]:], self.decoder_start_token_id)[0],
                "targets": tokens[b, p[b]:]} for b in range(B)]
        s, t = pad_examples(src), pad_examples(dec)
        return {"input_ids": s["input_ids"], "attention_mask": s["attention_mask"],
                "decoder_input_ids": t["input_ids"], "targets": t["targets"]}

    def __call__(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        d = self.denoisers[int(torch.multinomial(self.weights, 1, generator=generator))]
        self.last = d
        tokens = _windows(self.ids, self.batch_size, self.seq_len, generator)
        return self.sequential(tokens, generator) if d.mode == "S" else self.spans(tokens, d, generator)


def denoising_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss of a sequence-to-sequence batch (T5 spans, UL2) on either architecture, checked.

    A decoder takes the one-sequence form (``prefix_len``; a causal decoder reads
    the source causally and ignores it, as :func:`~llmcourse.objectives.decoder_loss`
    does); an encoder-decoder takes ``decoder_input_ids``.
    """
    cfg = _config(model, "a denoising objective")
    if cfg.arch == "encoder_decoder" and "decoder_input_ids" not in batch:
        raise ValueError(
            "this batch is one sequence (for a decoder) but the model is an encoder-decoder; make the batches with "
            "arch='encoder_decoder' (source to the encoder, targets to the decoder)."
        )
    if cfg.arch == "decoder" and "decoder_input_ids" in batch:
        raise ValueError(
            "this batch is for an encoder-decoder (it has decoder_input_ids) but the model is a decoder; convert it "
            "with seq2seq_as_decoder_batch(batch), or make the batches with arch='decoder'."
        )
    if cfg.arch == "decoder" and cfg.mask == "causal" and "prefix_len" in batch:
        batch = {k: v for k, v in batch.items() if k != "prefix_len"}
    return lm_loss(model, batch)


# --- five objectives on the same windows (chapter 07's comparisons) -------------------------
BOS = "<s>"  # opens the decoder side of a sequence-to-sequence example


def comparison_tokenizer(tokenizer):
    """``tokenizer`` plus every special token the compared objectives use.

    ``[MASK]``, ``[START]``, ``[END]``, ``[gMASK]``, UL2's mode tokens, ``<s>`` and
    ten sentinels; the ids of the existing tokens do not change.
    """
    return tokenizer.with_specials([MASK, START, END, GMASK, *MODE_TOKENS.values(), BOS] + sentinel_tokens(10))


@dataclass(frozen=True)
class Objective:
    """A pre-training objective as chapter 07 compares them.

    ``make(windows (B, W), generator) -> batch`` corrupts windows of text (all its
    randomness from ``generator``), ``loss(model, batch)`` scores the batch, and
    ``settings`` are the :class:`~llmcourse.config.ModelConfig` fields the model
    needs to read it (``mask='prefix'``, ``position_dims=2``).
    """

    name: str
    make: Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]
    loss: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    settings: dict = field(default_factory=dict)


def compared_objectives(tokenizer, ids: torch.Tensor, window: int, gmask_prob: float = 0.7) -> dict[str, Objective]:
    """Language modelling, prefix LM, BERT masking, T5's spans and GLM on windows of ``window`` tokens.

    ``tokenizer`` must carry the specials of :func:`comparison_tokenizer`; ``ids``
    is the stream GLM's examples are checked against. Prefix LM draws its prefix
    length uniformly from ``[1, window - 2]``; BERT's prefix covers the window (an
    encoder); T5's spans are in decoder-only form (the corrupted text is the prefix,
    the spans follow it); GLM mixes ``gmask_prob`` ``[gMASK]`` examples with
    ``[MASK]`` ones, as GLM-130B does (70%).
    """
    missing = [t for t in (MASK, START, END, GMASK, BOS) if t not in tokenizer.specials]
    if missing:
        raise ValueError(f"the tokenizer lacks the special tokens {missing}; build it with comparison_tokenizer(tokenizer).")
    M, S, E, G, bos = (tokenizer.special_id(t) for t in (MASK, START, END, GMASK, BOS))
    sentinels = [tokenizer.special_id(s) for s in sentinel_tokens(10)]
    glm_examples = GLMBatches(ids, 1, window, mask_id=M, start_id=S, end_id=E, gmask_id=G, gmask_prob=gmask_prob)
    W = window

    def lm(w, h):
        return {"input_ids": w[:, :-1], "targets": w[:, 1:]}

    def prefix_lm(w, h):
        return prefix_lm_batch(lm(w, h), torch.randint(1, W - 1, (len(w),), generator=h))

    def bert(w, h):
        inputs, targets = bert_mask(w, mask_id=M, n_random=regular_vocab_size(tokenizer), generator=h)
        return {"input_ids": inputs, "prefix_len": torch.full((len(w),), W), "targets": targets}

    def t5(w, h):
        noise = random_spans_noise_mask(W, 0.15, 3.0, len(w), h)
        src, tgt = span_corrupt(w, noise, sentinels)
        return seq2seq_as_decoder_batch({"input_ids": src, "decoder_input_ids": shift_right(tgt, bos), "targets": tgt})

    def glm(w, h):
        return pad_examples([glm_examples.example(row, h) for row in w])

    return {
        "LM": Objective("LM", lm, lm_loss),
        "prefix LM": Objective("prefix LM", prefix_lm, decoder_loss, {"mask": "prefix"}),
        "BERT": Objective("BERT", bert, masked_lm_loss, {"mask": "prefix"}),
        "T5 spans": Objective("T5 spans", t5, denoising_loss, {"mask": "prefix"}),
        "GLM": Objective("GLM", glm, glm_loss, {"mask": "prefix", "position_dims": 2}),
    }


def window_batches(make: Callable, ids: torch.Tensor, batch_size: int, window: int) -> Callable[[torch.Generator], dict]:
    """A batch source: ``batch_size`` random windows of ``window`` tokens from ``ids``, corrupted by ``make``.

    The windows draw from the trainer's generator ``g`` and the corruption from a
    second generator seeded by one draw of ``g``, so every objective sees the same
    windows for the same seed, whatever its corruption draws.
    """
    windows = LMBatches(ids, batch_size, window - 1)

    def draw(g: torch.Generator) -> dict[str, torch.Tensor]:
        x = windows(g)
        w = torch.cat([x["input_ids"], x["targets"][:, -1:]], 1)  # (B, W)
        h = torch.Generator().manual_seed(int(torch.randint(2**31, (), generator=g)))
        return make(w, h)

    return draw
