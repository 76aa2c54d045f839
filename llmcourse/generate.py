"""Sampling from decoder-only and encoder-decoder models: greedy, temperature, top-k, batched, with a KV cache.

Shape legend: ``B`` batch, ``T`` length, ``V`` vocab.

With the cache each new token costs one position of attention instead of
re-running the whole sequence; :func:`generate` with ``use_cache=False`` does the
full recomputation, and the two give the same tokens.
"""

from __future__ import annotations

import torch
from torch import nn

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
) -> torch.Tensor:
    """Continue each row of ``input_ids`` by ``max_new_tokens`` tokens. Shapes: ``(B, T) -> (B, T + new)``.

    Decoder-only models. A prefix decoder treats the prompt as its prefix (``prefix_len``
    defaults to the prompt length). Past ``max_seq_len`` the model sees the last
    ``max_seq_len`` tokens, recomputed without a cache, as nanoGPT does.
    """
    if not isinstance(model, DecoderLM):
        raise ValueError(f"generate() is for decoder-only models; use generate_seq2seq() for {type(model).__name__}.")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0.")
    cfg = model.config
    was_training = model.training
    model.eval()
    B, T = input_ids.shape
    if T == 0:
        raise ValueError("input_ids is empty: give at least one prompt token per row (for example a newline).")
    if T > cfg.max_seq_len:
        raise ValueError(f"the prompt has {T} tokens but the model's context is max_seq_len={cfg.max_seq_len}; shorten the prompt.")
    prefix_kwargs = {}
    if cfg.mask == "prefix":
        prefix_kwargs["prefix_len"] = T if prefix_len is None else prefix_len
    use_cache = use_cache and T + max_new_tokens <= cfg.max_seq_len
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    ids = input_ids
    cache = model.new_cache() if use_cache else None
    logits = model(ids, cache=cache, **prefix_kwargs)[:, -1]  # (B, V)
    for _ in range(max_new_tokens):
        next_ids = sample_next(logits, temperature=temperature, top_k=top_k, greedy=greedy, generator=generator)
        next_ids = _finish(next_ids, done, eos_token_id, cfg.pad_token_id)
        ids = torch.cat([ids, next_ids], dim=1)
        if eos_token_id is not None and bool(done.all()):
            break
        if use_cache:
            logits = model(next_ids, cache=cache)[:, -1]
        else:
            window = ids[:, -cfg.max_seq_len :]
            window_prefix = {}
            if cfg.mask == "prefix":  # the prompt stays the prefix while it is still inside the window
                p = torch.as_tensor(prefix_kwargs["prefix_len"]) - (ids.shape[1] - window.shape[1])
                window_prefix["prefix_len"] = p.clamp(0, window.shape[1]).reshape(-1).to(torch.long)
            logits = model(window, **window_prefix)[:, -1]
    model.train(was_training)
    return ids


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
    cfg = model.config
    # the last step feeds the start token and max_new_tokens - 1 generated ones: positions 0 .. max_new_tokens - 1
    if max_new_tokens > cfg.max_seq_len and cfg.position == "learned":
        raise ValueError(f"max_new_tokens={max_new_tokens} runs past the decoder's context max_seq_len={cfg.max_seq_len}.")
    was_training = model.training
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
    model.train(was_training)
    return ids
