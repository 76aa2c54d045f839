"""Helpers shared by the tests of llmcourse.hf: random weights, token ids, and the checks against transformers.

Every check builds nothing itself: a test builds a tiny random ``transformers``
model (no downloads), and these compare it with its conversion. Tolerance
:data:`ATOL` on logits; a check also asserts that the logits are large enough
(``> 0.5``) for the tolerance to mean something.
"""

from __future__ import annotations

import torch

from llmcourse import generate
from llmcourse.hf import from_hf

ATOL = 1e-5
VOCAB = 97  # not a power of two


def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.08) -> torch.nn.Module:
    """Weights far from their initial values, so every one matters: norm gains near 1, biases and the rest random.

    A parameter whose name has ``norm`` or ``ln_`` is a norm (weight ``1 + 0.2 z``, bias ``0.2 z``); T5's
    ``relative_attention_bias`` tables get ``0.5 z``; everything else ``scale * z``. Returns ``model.eval()``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name or "ln_" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            elif "relative_attention_bias" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(scale * noise)
    return model.eval()


def ids(B: int = 2, T: int = 12, seed: int = 1, low: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    """Random token ids ``(B, T)`` in ``[low, vocab)``."""
    return torch.randint(low, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def assert_cached_parity(hf: torch.nn.Module, ours: torch.nn.Module, prompt: int = 5, T: int = 12) -> None:
    """Our incremental decoding (the prompt, then one token at a time) gives HF's full-sequence logits."""
    x = ids(T=T)
    with torch.no_grad():
        expected = hf(x).logits
        cache = ours.new_cache()
        steps = [ours(x[:, :prompt], cache=cache)]
        steps += [ours(x[:, t : t + 1], cache=cache) for t in range(prompt, T)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=ATOL, rtol=0)


def assert_parity(hf: torch.nn.Module, T: int = 12, cached: bool = False) -> torch.nn.Module:
    """``from_hf(hf)`` computes HF's logits (and, with ``cached``, with its KV cache too); returns the conversion."""
    ours = from_hf(hf)
    x = ids(T=T)
    with torch.no_grad():
        expected = hf(x).logits
        got = ours(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert expected.abs().max() > 0.5  # logits large enough that the tolerance means something
    if cached:
        assert_cached_parity(hf, ours, T=T)
    return ours


def assert_greedy_equal(hf: torch.nn.Module, ours: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int) -> None:
    """``llmcourse.generate`` (KV cache, greedy) gives the tokens of HF's ``generate``, and every step's logits."""
    out = hf.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens, do_sample=False,
        use_cache=True, eos_token_id=None, return_dict_in_generate=True, output_logits=True,
    )
    assert torch.equal(generate(ours, prompt, max_new_tokens, greedy=True), out.sequences)
    with torch.no_grad():  # random models tend to repeat one token: compare every step's logits too
        steps = ours(out.sequences[:, :-1])[:, prompt.shape[1] - 1 :]
    torch.testing.assert_close(steps, torch.stack(out.logits, 1), atol=ATOL, rtol=0)


def left_padded(lengths: tuple[int, ...], pad: int = 0, seed: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of the given lengths, left-padded with ``pad`` into one batch: ``input_ids, attention_mask (B, T)``."""
    T = max(lengths)
    x = ids(B=len(lengths), T=T, seed=seed, low=1)
    mask = torch.tensor([[0] * (T - n) + [1] * n for n in lengths])
    return x.masked_fill(mask == 0, pad), mask


def assert_batched_greedy_equal(
    hf: torch.nn.Module, ours: torch.nn.Module, lengths: tuple[int, ...] = (7, 4, 2), max_new_tokens: int = 10
) -> None:
    """Left-padded prompts of different lengths: our batched greedy generation gives HF's batched ``generate``.

    Also: each row equals that prompt generated alone (padding changes nothing), and the logits of every
    generated step agree with HF's.
    """
    x, mask = left_padded(lengths)
    out = hf.generate(
        x, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True, eos_token_id=None,
        pad_token_id=0, return_dict_in_generate=True, output_logits=True,
    )
    theirs = out.sequences
    assert torch.equal(generate(ours, x, max_new_tokens, greedy=True, attention_mask=mask), theirs)
    T = x.shape[1]
    for row, n in enumerate(lengths):
        alone = generate(ours, x[row : row + 1, T - n :], max_new_tokens, greedy=True)
        assert torch.equal(alone[0], theirs[row, T - n :])
    full_mask = torch.cat([mask, torch.ones(len(lengths), max_new_tokens - 1, dtype=mask.dtype)], dim=1)
    with torch.no_grad():
        steps = ours(theirs[:, :-1], attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp_min(0))
    torch.testing.assert_close(steps[:, T - 1 :], torch.stack(out.logits, 1), atol=ATOL, rtol=0)
