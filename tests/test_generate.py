"""Generation: batched equals one row at a time, cached equals uncached, sampling controls behave."""

import pytest
import torch

from llmcourse import ModelConfig, build_model, generate, generate_seq2seq, to_prefix_decoder
from llmcourse.generate import sample_next

V = 19


def _cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=V, d_model=32, n_heads=4, n_layers=2, max_seq_len=24, pad_token_id=0)
    base.update(kw)
    return ModelConfig(**base)


def _ids(B=3, L=5, seed=0):
    return torch.randint(1, V, (B, L), generator=torch.Generator().manual_seed(seed))


DECODERS = [dict(), dict(position="rope"), dict(position="alibi"), dict(position="t5"), dict(mask="prefix")]


@pytest.mark.parametrize("kw", DECODERS, ids=lambda kw: "-".join(kw.values()) or "learned")
def test_decoder_cached_equals_uncached(kw):
    model = build_model(_cfg(**kw), seed=0)
    prompt = _ids()
    cached = generate(model, prompt, 12, greedy=True, use_cache=True)
    uncached = generate(model, prompt, 12, greedy=True, use_cache=False)
    assert cached.shape == (3, 17)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :5], prompt)


@pytest.mark.parametrize("kw", [dict(), dict(position="t5"), dict(share_embeddings=False)], ids=["learned", "t5", "separate"])
def test_encoder_decoder_cached_equals_uncached(kw):
    model = build_model(_cfg(arch="encoder_decoder", **kw), seed=0)
    src = _ids(L=9)
    cached = generate_seq2seq(model, src, 10, greedy=True, use_cache=True)
    uncached = generate_seq2seq(model, src, 10, greedy=True, use_cache=False)
    assert cached.shape == (3, 11) and (cached[:, 0] == model.config.decoder_start_token_id).all()
    assert torch.equal(cached, uncached)


def test_cached_logits_equal_full_recomputation():
    model = build_model(_cfg(arch="encoder_decoder", position="t5"), seed=0).eval()
    src, tgt = _ids(L=7), _ids(L=6, seed=1)
    with torch.no_grad():
        full = model(src, tgt)
        memory, cache = model.encode(src), model.new_cache()
        steps = torch.cat([model.decode(tgt[:, t : t + 1], memory, cache=cache) for t in range(6)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kw", [dict(), dict(mask="prefix")], ids=["causal", "prefix"])
def test_decoder_batched_equals_one_row_at_a_time(kw):
    model = build_model(_cfg(**kw), seed=0)
    prompt = _ids()
    batched = generate(model, prompt, 10, greedy=True)
    for b in range(3):
        assert torch.equal(batched[b : b + 1], generate(model, prompt[b : b + 1], 10, greedy=True))


def test_encoder_decoder_batched_with_padded_sources():
    model = build_model(_cfg(arch="encoder_decoder"), seed=0)
    long, short = _ids(B=1, L=9, seed=1), _ids(B=1, L=4, seed=2)
    src = torch.cat([long, torch.cat([short, torch.zeros(1, 5, dtype=torch.long)], 1)])
    attn = torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    batched = generate_seq2seq(model, src, 8, greedy=True, attention_mask=attn)
    assert torch.equal(batched[:1], generate_seq2seq(model, long, 8, greedy=True))
    assert torch.equal(batched[1:], generate_seq2seq(model, short, 8, greedy=True))


def test_converted_prefix_decoder_generates_from_a_bidirectional_prompt():
    causal = build_model(_cfg(), seed=0)
    prefix = to_prefix_decoder(causal)
    prompt = _ids(L=8)
    out_c = generate(causal, prompt, 6, greedy=True)
    out_p = generate(prefix, prompt, 6, greedy=True)
    assert torch.equal(out_p, generate(prefix, prompt, 6, greedy=True, use_cache=False))
    assert out_c.shape == out_p.shape
    with torch.no_grad():  # same weights, another mask: the prompt is read differently
        assert not torch.allclose(prefix(prompt, prefix_len=8)[:, -1], causal(prompt)[:, -1], atol=1e-6)


def test_sampling_is_reproducible_and_top_k_one_is_greedy():
    model = build_model(_cfg(), seed=0)
    prompt = _ids()
    a = generate(model, prompt, 10, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b = generate(model, prompt, 10, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    greedy = generate(model, prompt, 10, greedy=True)
    assert torch.equal(generate(model, prompt, 10, top_k=1, generator=torch.Generator().manual_seed(0)), greedy)
    assert torch.equal(generate(model, prompt, 10, temperature=0.0), greedy)


def test_top_k_only_picks_among_the_k_best():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]]).expand(200, 5)
    picks = sample_next(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(picks.flatten().tolist()) <= {1, 2} and len(set(picks.flatten().tolist())) == 2


def test_eos_stops_and_pads():
    model = build_model(_cfg(arch="encoder_decoder"), seed=0)
    src = _ids(L=6)
    free = generate_seq2seq(model, src, 8, greedy=True)
    eos = int(free[0, 3])  # pretend the third generated token of row 0 is the end
    out = generate_seq2seq(model, src, 8, greedy=True, eos_token_id=eos)
    row = out[0].tolist()
    first = row.index(eos, 1)
    assert all(t == model.config.pad_token_id for t in row[first + 1 :])


def test_wrong_family_is_a_clear_error():
    with pytest.raises(ValueError, match="generate_seq2seq"):
        generate(build_model(_cfg(arch="encoder_decoder"), seed=0), _ids(), 3)
    with pytest.raises(ValueError, match="use generate\\(\\)"):
        generate_seq2seq(build_model(_cfg(), seed=0), _ids(), 3)


def test_encoder_decoder_fills_its_whole_context():
    model = build_model(_cfg(arch="encoder_decoder"), seed=0)  # learned positions, max_seq_len 24
    src = _ids(L=6)
    full = generate_seq2seq(model, src, 24, greedy=True)
    assert full.shape == (3, 25) and torch.equal(full, generate_seq2seq(model, src, 24, greedy=True, use_cache=False))
    with pytest.raises(ValueError, match="past the decoder's context"):
        generate_seq2seq(model, src, 25, greedy=True)


# --- batched generation with left padding -------------------------------------------------------------
import pytest as _pytest  # noqa: E402

from llmcourse.config import ModelConfig as _ModelConfig  # noqa: E402
from llmcourse.generate import generate as _generate  # noqa: E402
from llmcourse.models import build_model as _build_model  # noqa: E402


@_pytest.mark.parametrize("position", ["learned", "rope", "alibi", "t5", "sinusoidal"])
@_pytest.mark.parametrize("use_cache", [True, False])
def test_left_padded_batch_equals_each_prompt_alone(position, use_cache):
    cfg = _ModelConfig(vocab_size=37, d_model=32, n_heads=4, n_layers=2, max_seq_len=32, position=position)
    model = _build_model(cfg, seed=3).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 37, (n,), generator=g) for n in (3, 7, 5)]
    L = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), L, dtype=torch.long)
    mask = torch.zeros(len(prompts), L, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):], mask[i, L - len(p):] = p, 1
    batched = _generate(model, ids, 8, greedy=True, attention_mask=mask, use_cache=use_cache)
    for i, p in enumerate(prompts):
        alone = _generate(model, p[None], 8, greedy=True, use_cache=use_cache)
        assert batched[i, L:].tolist() == alone[0, len(p):].tolist(), f"row {i} differs"


def test_padding_masks_are_checked():
    cfg = _ModelConfig(vocab_size=17, d_model=16, n_heads=2, n_layers=1, max_seq_len=16)
    model = _build_model(cfg, seed=0)
    ids = torch.ones(2, 4, dtype=torch.long)
    with _pytest.raises(ValueError, match="right padding"):
        _generate(model, ids, 2, greedy=True, attention_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    with _pytest.raises(ValueError, match="all padding"):
        _generate(model, ids, 2, greedy=True, attention_mask=torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))
    with _pytest.raises(ValueError, match="1 \\(real token\\) and 0 \\(padding\\)"):
        _generate(model, ids, 2, greedy=True, attention_mask=torch.tensor([[0.0, -1e9, 0, 0], [1, 1, 1, 1]]))
    with _pytest.raises(ValueError, match="shape"):
        _generate(model, ids, 2, greedy=True, attention_mask=torch.ones(2, 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=-1), "max_new_tokens=-1"),
        (dict(max_new_tokens=2.5), "max_new_tokens=2.5"),
        (dict(temperature=float("nan")), "temperature=nan"),
        (dict(temperature=float("inf")), "temperature=inf"),
        (dict(top_k=2.5), "top_k=2.5"),
        (dict(eos_token_id=V), f"eos_token_id={V} must be a token id in \\[0, vocab_size={V}\\)"),
        (dict(input_ids=torch.arange(4)), "input_ids must be a 2-D"),
    ],
)
@pytest.mark.parametrize("seq2seq", [False, True])
def test_generation_arguments_are_checked_alike(kwargs, message, seq2seq):
    """Issue 18, the rest of the list: one shared argument check for generate and generate_seq2seq."""
    model = build_model(_cfg(arch="encoder_decoder") if seq2seq else _cfg(), seed=0)
    fn = generate_seq2seq if seq2seq else generate
    args = dict(input_ids=_ids(), max_new_tokens=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fn(model, args.pop("input_ids"), args.pop("max_new_tokens"), **args)


def test_generate_restores_training_mode_after_an_error_and_refuses_nan_logits():
    model = build_model(_cfg(), seed=0).train()
    with pytest.raises(ValueError, match="right padding"):
        generate(model, _ids(B=2, L=4), 2, attention_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    assert model.training
    with torch.no_grad():
        model.tok_emb.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="nan logits"):
        generate(model, _ids(), 2, greedy=True)
    assert model.training
    with pytest.raises(FloatingPointError, match="nan logits"):
        sample_next(torch.tensor([[0.0, float("nan")]]), greedy=True)
