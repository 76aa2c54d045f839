"""Sampling from decoder-only and encoder-decoder models: greedy, temperature, top-k, batched, with a KV cache.

Shape legend: ``B`` batch, ``T`` length, ``V`` vocab.

With the cache each new token costs one position of attention instead of
re-running the whole sequence; :func:`generate` with ``use_cache=False`` does the
full recomputation, and the two give the same tokens.

Prompts of different lengths go in one batch left-padded, with an
``attention_mask`` (1 for real tokens, 0 for padding): padded keys are masked
and each token's position id counts only the real tokens before it, so every
row computes what its prompt alone would (greedy decoding gives the same tokens).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .masks import check_attention_mask
from .models import DecoderLM, EncoderDecoderLM


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token from the last position's logits. Shapes: ``(B, V) -> (B, 1)``."""
    if bool(torch.isnan(logits).any()):  # argmax of nan is an arbitrary token; multinomial fails obscurely
        raise FloatingPointError(
            "the model produced nan logits, so no next token can be chosen; its weights or inputs are not finite "
            "(check the checkpoint, or a float16 model's range)."
        )
    if greedy or temperature == 0:
        return logits.argmax(-1, keepdim=True)
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy).")
    logits = logits.float() / temperature
    if top_k is not None:
        if top_k <= 0:
            raise ValueError(f"top_k={top_k} must be a positive number of candidate tokens, or None.")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _check_generation_args(
    model: nn.Module, input_ids: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None,
    eos_token_id: int | None,
) -> None:
    """The argument checks ``generate`` and ``generate_seq2seq`` share."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 0.")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature={temperature!r} must be a finite number >= 0 (0 means greedy).")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0):
        raise ValueError(f"top_k={top_k!r} must be a positive integer number of candidate tokens, or None.")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a 2-D (B, T) tensor of token ids, got {shape}; add a batch dimension with ids[None].")
    V = model.config.vocab_size
    if eos_token_id is not None and (not isinstance(eos_token_id, int) or isinstance(eos_token_id, bool) or not 0 <= eos_token_id < V):
        raise ValueError(f"eos_token_id={eos_token_id!r} must be a token id in [0, vocab_size={V}), or None.")


def _finish(next_ids: torch.Tensor, done: torch.Tensor, eos_token_id: int | None, pad_token_id: int | None) -> torch.Tensor:
    if eos_token_id is None:
        return next_ids
    fill = eos_token_id if pad_token_id is None else pad_token_id
    next_ids = torch.where(done[:, None], torch.full_like(next_ids, fill), next_ids)
    done |= next_ids[:, 0] == eos_token_id
    return next_ids


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    use_cache: bool = True,
    prefix_len: torch.Tensor | int | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Continue each row of ``input_ids`` by ``max_new_tokens`` tokens. Shapes: ``(B, T) -> (B, T + new)``.

    Decoder-only models. A prefix decoder treats the prompt as its prefix (``prefix_len``
    defaults to the prompt length). Past ``max_seq_len`` the model sees the last
    ``max_seq_len`` tokens, recomputed without a cache, as nanoGPT does.
    ``attention_mask (B, T)``: 1 for prompt tokens, 0 for left padding (prompts of
    different lengths in one batch).
    """
    if not isinstance(model, DecoderLM):
        raise ValueError(f"generate() is for decoder-only models; use generate_seq2seq() for {type(model).__name__}.")
    _check_generation_args(model, input_ids, max_new_tokens, temperature, top_k, eos_token_id)
    was_training = model.training
    try:  # an error half-way must not leave the model in eval mode
        return _generate(model, input_ids, max_new_tokens, temperature, top_k, greedy, use_cache, prefix_len,
                         eos_token_id, generator, attention_mask)
    finally:
        model.train(was_training)


def _generate(model, input_ids, max_new_tokens, temperature, top_k, greedy, use_cache, prefix_len, eos_token_id,
              generator, attention_mask):
    cfg = model.config
    model.eval()
    B, T = input_ids.shape
    if T == 0:
        raise ValueError("input_ids is empty: give at least one prompt token per row (for example a newline).")
    if T > cfg.max_seq_len:
        raise ValueError(f"the prompt has {T} tokens but the model's context is max_seq_len={cfg.max_seq_len}; shorten the prompt.")
    mask = _check_padding(attention_mask, input_ids) if attention_mask is not None else None
    prefix_kwargs = {}
    if cfg.mask == "prefix":
        prefix_kwargs["prefix_len"] = T if prefix_len is None else prefix_len
    use_cache = use_cache and (T + max_new_tokens <= cfg.max_seq_len or cfg.sliding_window is not None)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    ids = input_ids
    cache = model.new_cache() if use_cache else None
    logits = model(ids, cache=cache, **_padding_kwargs(mask), **prefix_kwargs)[:, -1]  # (B, V)
    for _ in range(max_new_tokens):
        next_ids = sample_next(logits, temperature=temperature, top_k=top_k, greedy=greedy, generator=generator)
        next_ids = _finish(next_ids, done, eos_token_id, cfg.pad_token_id)
        ids = torch.cat([ids, next_ids], dim=1)
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(next_ids)], dim=1)
        if eos_token_id is not None and bool(done.all()):
            break
        if use_cache:
            kwargs = {}
            if mask is not None:  # the new token's position: one past the row's last real token
                kwargs = {"attention_mask": mask, "position_ids": mask.sum(-1, keepdim=True) - 1}
            logits = model(next_ids, cache=cache, **kwargs)[:, -1]
        else:
            window = ids[:, -cfg.max_seq_len :]
            window_prefix = {}
            if cfg.mask == "prefix":  # the prompt stays the prefix while it is still inside the window
                p = torch.as_tensor(prefix_kwargs["prefix_len"]) - (ids.shape[1] - window.shape[1])
                window_prefix["prefix_len"] = p.clamp(0, window.shape[1]).reshape(-1).to(torch.long)
            window_mask = mask[:, -cfg.max_seq_len :] if mask is not None else None
            logits = model(window, **_padding_kwargs(window_mask), **window_prefix)[:, -1]
    return ids


def _check_padding(attention_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """A left-padding mask as 0/1 longs; clear errors for a wrong shape, right padding or an empty row."""
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids {tuple(input_ids.shape)}; "
            "give one 0/1 entry per prompt token."
        )
    mask = check_attention_mask(attention_mask).long()  # bool or 0/1 only: an additive mask is refused
    if bool((mask.sum(-1) == 0).any()):
        raise ValueError("a row of attention_mask is all padding; give every prompt at least one token.")
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError(
            "attention_mask has padding after a prompt token (right padding); generation appends to the right, "
            "so pad prompts on the left."
        )
    return mask


def _padding_kwargs(mask: torch.Tensor | None) -> dict:
    """``attention_mask`` and the ``position_ids`` that count only real tokens (padding sits at position 0)."""
    if mask is None:
        return {}
    return {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}


@torch.no_grad()
def generate_seq2seq(
    model: EncoderDecoderLM,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    use_cache: bool = True,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Encode ``input_ids (B, S)`` once, then decode. Returns decoder ids ``(B, 1 + new)`` starting with the start token."""
    if not isinstance(model, EncoderDecoderLM):
        raise ValueError(f"generate_seq2seq() is for encoder-decoder models; use generate() for {type(model).__name__}.")
    _check_generation_args(model, input_ids, max_new_tokens, temperature, top_k, eos_token_id)
    cfg = model.config
    # the last step feeds the start token and max_new_tokens - 1 generated ones: positions 0 .. max_new_tokens - 1
    if max_new_tokens > cfg.max_seq_len and not model.decoder.positions.extrapolates:
        raise ValueError(f"max_new_tokens={max_new_tokens} runs past the decoder's context max_seq_len={cfg.max_seq_len}.")
    was_training = model.training
    try:  # an error half-way must not leave the model in eval mode
        return _generate_seq2seq(model, input_ids, max_new_tokens, attention_mask, temperature, top_k, greedy,
                                 use_cache, eos_token_id, generator)
    finally:
        model.train(was_training)


def _generate_seq2seq(model, input_ids, max_new_tokens, attention_mask, temperature, top_k, greedy, use_cache,
                      eos_token_id, generator):
    cfg = model.config
    model.eval()
    B = input_ids.shape[0]
    memory = model.encode(input_ids, attention_mask)
    ids = torch.full((B, 1), cfg.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    cache = model.new_cache() if use_cache else None
    step_ids = ids
    for _ in range(max_new_tokens):
        logits = model.decode(step_ids, memory, attention_mask, cache=cache, extrapolate=True)[:, -1]
        next_ids = sample_next(logits, temperature=temperature, top_k=top_k, greedy=greedy, generator=generator)
        next_ids = _finish(next_ids, done, eos_token_id, cfg.pad_token_id)
        ids = torch.cat([ids, next_ids], dim=1)
        if eos_token_id is not None and bool(done.all()):
            break
        step_ids = next_ids if use_cache else ids
    return ids
