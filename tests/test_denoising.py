"""BERT masking, GLM blank infilling (with [gMASK]) and UL2's mixture of denoisers: batches, losses, errors."""

import pytest
import torch

from llmcourse import ModelConfig, TrainConfig, Trainer, build_model
from llmcourse.denoising import (
    END,
    GMASK,
    MASK,
    MODE_TOKENS,
    START,
    UL2_DENOISERS,
    Denoiser,
    GLMBatches,
    MaskedLMBatches,
    UL2Batches,
    bert_mask,
    denoising_loss,
    glm_as_encoder_decoder,
    glm_example,
    glm_loss,
    glm_span_lengths,
    gmask_span,
    masked_lm_loss,
    pad_examples,
    place_spans,
    regular_vocab_size,
)
from llmcourse.objectives import IGNORE, lm_loss, sentinel_tokens


@pytest.fixture
def tok(tokenizer):
    return tokenizer.with_specials([MASK, START, END, GMASK, *MODE_TOKENS.values(), "<s>"] + sentinel_tokens(12))


def _cfg(tok, **kw):
    base = dict(vocab_size=tok.vocab_size, d_model=32, n_heads=4, n_layers=2, max_seq_len=96)
    return ModelConfig(**{**base, **kw})


# --- BERT ----------------------------------------------------------------------------
def test_bert_mask_rates_and_targets():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (64, 1000), generator=g)
    inputs, targets = bert_mask(tokens, mask_id=99, n_random=50, generator=torch.Generator().manual_seed(1))
    chosen = targets != IGNORE
    assert (chosen.sum(1) == 150).all()  # exactly 15% per row
    assert torch.equal(targets[chosen], tokens[chosen])  # targets are the original tokens
    assert torch.equal(inputs[~chosen], tokens[~chosen])  # the other 85% are untouched
    masked = (inputs == 99) & chosen
    changed = (inputs != tokens) & (inputs != 99)
    kept = (inputs == tokens) & chosen
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # a random replacement equals the original 1 time in 50: it then counts as kept
    assert abs(changed.sum().item() / n - 0.1 * 49 / 50) < 0.01
    assert abs(kept.sum().item() / n - 0.1 - 0.1 / 50) < 0.01
    assert int(inputs[changed].max()) < 50  # random ids are regular tokens only


def test_bert_mask_is_deterministic_and_checks_arguments():
    tokens = torch.arange(40).reshape(2, 20)
    a = bert_mask(tokens, mask_id=99, n_random=40, generator=torch.Generator().manual_seed(3))
    b = bert_mask(tokens, mask_id=99, n_random=40, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="mask_prob"):
        bert_mask(tokens, mask_id=99, n_random=40, mask_prob=0.0)
    with pytest.raises(ValueError, match="replace_probs"):
        bert_mask(tokens, mask_id=99, n_random=40, replace_probs=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="n_random"):
        bert_mask(tokens, mask_id=99, n_random=0)


def test_masked_lm_batches_and_loss(tok, token_ids):
    batches = MaskedLMBatches(token_ids, 4, 20, mask_id=tok.special_id(MASK), n_random=regular_vocab_size(tok))
    batch = batches(torch.Generator().manual_seed(0))
    assert batch["prefix_len"].tolist() == [20] * 4 and (batch["targets"] != IGNORE).sum(1).tolist() == [3] * 4
    encoder = build_model(_cfg(tok, mask="prefix"), seed=0)
    assert torch.isfinite(masked_lm_loss(encoder, batch))
    with pytest.raises(ValueError, match="mask='prefix'"):
        masked_lm_loss(build_model(_cfg(tok), seed=0), batch)
    with pytest.raises(ValueError, match="encoder-decoder"):
        masked_lm_loss(build_model(_cfg(tok, arch="encoder_decoder"), seed=0), batch)


def test_masked_lm_sees_both_sides(tok, token_ids):
    """The prediction at a masked position changes when a token *after* it changes: the encoder is bidirectional."""
    batch = MaskedLMBatches(token_ids, 2, 16, mask_id=tok.special_id(MASK), n_random=10)(torch.Generator().manual_seed(0))
    model = build_model(_cfg(tok, mask="prefix"), seed=0).eval()
    ids = batch["input_ids"].clone()
    with torch.no_grad():
        base = model(ids, prefix_len=batch["prefix_len"])[:, 0]
        ids[:, -1] = (ids[:, -1] + 1) % 10
        moved = model(ids, prefix_len=batch["prefix_len"])[:, 0]
    assert not torch.allclose(base, moved)


# --- GLM -------------------------------------------------------------------------------
def test_glm_example_is_the_papers_figure_2():
    """Du et al. 2022, fig. 2: x1..x6, spans [x3] and [x5 x6], part B in the order (x5 x6), (x3)."""
    M, S, E = 100, 101, 102
    ex = glm_example([1, 2, 3, 4, 5, 6], [(2, 3), (4, 6)], order=[1, 0], mask_id=M, start_id=S, end_id=E)
    assert ex["input_ids"].tolist() == [1, 2, M, 4, M, S, 5, 6, S, 3]
    assert ex["prefix_len"].item() == 5  # part A: x1 x2 [M] x4 [M]
    assert ex["targets"].tolist() == [IGNORE] * 5 + [5, 6, E, 3, E]  # loss on part B only
    # the figure's Position 1 (1-based there): 1 2 3 4 5 5 5 5 3 3; Position 2: 0 0 0 0 0 1 2 3 1 2
    assert ex["position_ids"][:, 0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 2, 2]
    assert ex["position_ids"][:, 1].tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 1, 2]


def test_glm_example_errors():
    with pytest.raises(ValueError, match="at least one span"):
        glm_example([1, 2, 3], [], mask_id=9, start_id=8, end_id=7)
    with pytest.raises(ValueError, match="non-overlapping"):
        glm_example([1, 2, 3, 4], [(0, 2), (1, 3)], mask_id=9, start_id=8, end_id=7)
    with pytest.raises(ValueError, match="permutation"):
        glm_example([1, 2, 3, 4], [(0, 1), (2, 3)], order=[0, 0], mask_id=9, start_id=8, end_id=7)


def test_glm_span_lengths_rate_and_poisson_mean():
    g = torch.Generator().manual_seed(0)
    lengths = [glm_span_lengths(1000, g) for _ in range(40)]
    covered = [sum(x) for x in lengths]
    assert all(150 <= c < 150 + 20 for c in covered)  # the last draw may overshoot 15%
    flat = [n for x in lengths for n in x]
    assert min(flat) >= 1
    # Poisson(3) without zeros has mean 3 / (1 - e^-3) = 3.157
    assert abs(sum(flat) / len(flat) - 3.157) < 0.15
    with pytest.raises(ValueError, match="mask_ratio"):
        glm_span_lengths(100, g, mask_ratio=1.0)


def test_place_spans_are_separate_and_uniform():
    g = torch.Generator().manual_seed(0)
    starts = torch.zeros(20)
    for _ in range(2000):
        spans = place_spans([3, 2, 4], 20, g)
        assert [b - a for a, b in spans] == [3, 2, 4]
        assert all(spans[i][1] < spans[i + 1][0] for i in range(2)) and spans[-1][1] <= 20
        for a, b in spans:
            starts[a:b] += 1
    assert starts.min() > 0  # every position gets covered sometimes
    with pytest.raises(ValueError, match="do not fit"):
        place_spans([5, 5], 10)


def test_gmask_is_one_long_blank_at_the_end():
    g = torch.Generator().manual_seed(0)
    spans = [gmask_span(40, g) for _ in range(500)]
    assert all(b == 40 and 1 <= a <= 20 for a, b in spans)
    assert {a for a, _ in spans} == set(range(1, 21))  # uniform over 50% .. 39 of 40 tokens
    ex = glm_example(list(range(10)), [(6, 10)], mask_id=50, start_id=51, end_id=52)
    assert ex["input_ids"].tolist() == [0, 1, 2, 3, 4, 5, 50, 51, 6, 7, 8, 9]
    assert ex["position_ids"][7:, 0].tolist() == [6] * 5 and ex["position_ids"][7:, 1].tolist() == [1, 2, 3, 4, 5]


def test_glm_batches_deterministic_with_padding(tok, token_ids):
    ids = dict(mask_id=tok.special_id(MASK), start_id=tok.special_id(START), end_id=tok.special_id(END))
    batches = GLMBatches(token_ids, 8, 40, **ids, gmask_id=tok.special_id(GMASK), gmask_prob=0.5)
    a, b = batches(torch.Generator().manual_seed(4)), batches(torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    T = a["input_ids"].shape[1]
    assert a["position_ids"].shape == (8, T, 2) and a["attention_mask"].shape == (8, T)
    n_real = a["attention_mask"].sum(1)
    assert (a["targets"][a["attention_mask"] == 0] == IGNORE).all()
    gmask = (a["input_ids"] == tok.special_id(GMASK)).any(1)
    assert 0 < gmask.sum() < 8  # both kinds of example
    for r in range(8):
        k = int((a["input_ids"][r] == tok.special_id(START)).sum())
        assert n_real[r] == 40 + 2 * k  # |A| + |B| = (L - n + k) + (n + k)
        scored = a["targets"][r] != IGNORE
        assert not scored[: a["prefix_len"][r]].any() and scored.sum() == 40 - a["prefix_len"][r] + 2 * k  # n + k with n = 40 - (|A| - k)
    with pytest.raises(ValueError, match="gmask_id"):
        GLMBatches(token_ids, 8, 40, **ids, gmask_prob=0.5)


def test_glm_never_scores_a_token_it_can_see(tok, token_ids):
    """Leakage: changing the token a part-B position must predict leaves that position's logits unchanged."""
    ids = dict(mask_id=tok.special_id(MASK), start_id=tok.special_id(START), end_id=tok.special_id(END))
    batch = GLMBatches(token_ids, 2, 24, **ids)(torch.Generator().manual_seed(1))
    model = build_model(_cfg(tok, mask="prefix", position_dims=2), seed=0).eval()
    inputs = {k: v for k, v in batch.items() if k != "targets"}
    with torch.no_grad():
        base = model(**inputs)
        for r in range(2):
            a, n = int(batch["prefix_len"][r]), int(batch["attention_mask"][r].sum())
            for i in range(a, n - 1):
                changed = {**inputs, "input_ids": inputs["input_ids"].clone()}
                changed["input_ids"][r, i + 1] = (changed["input_ids"][r, i + 1] + 1) % 10
                out = model(**changed)
                assert torch.allclose(out[r, : i + 1], base[r, : i + 1], atol=1e-6)  # causal over part B
            # a token of part A changes every part-B output (part B sees all of A)
            changed = {**inputs, "input_ids": inputs["input_ids"].clone()}
            changed["input_ids"][r, a - 1] = (changed["input_ids"][r, a - 1] + 1) % 10
            assert not torch.allclose(model(**changed)[r, a:n], base[r, a:n])


def test_glm_loss_errors_and_encoder_decoder_form(tok, token_ids):
    ids = dict(mask_id=tok.special_id(MASK), start_id=tok.special_id(START), end_id=tok.special_id(END))
    batch = GLMBatches(token_ids, 4, 24, **ids)(torch.Generator().manual_seed(2))
    glm = build_model(_cfg(tok, mask="prefix", position_dims=2), seed=0)
    assert torch.isfinite(glm_loss(glm, batch))
    with pytest.raises(ValueError, match="mask='prefix'"):
        glm_loss(build_model(_cfg(tok, position_dims=2), seed=0), batch)
    with pytest.raises(ValueError, match="position_dims=2"):
        glm_loss(build_model(_cfg(tok, mask="prefix"), seed=0), batch)
    ed = build_model(_cfg(tok, arch="encoder_decoder", position_dims=2), seed=0)
    with pytest.raises(ValueError, match="glm_as_encoder_decoder"):
        glm_loss(ed, batch)
    ed_batch = glm_as_encoder_decoder(batch)
    assert torch.equal(ed_batch["targets"][ed_batch["targets"] != IGNORE], batch["targets"][batch["targets"] != IGNORE])
    assert torch.isfinite(glm_loss(ed, ed_batch))
    one_d = GLMBatches(token_ids, 4, 24, **ids, two_d=False)(torch.Generator().manual_seed(2))
    assert one_d["position_ids"].shape == one_d["input_ids"].shape
    assert torch.isfinite(glm_loss(build_model(_cfg(tok, mask="prefix"), seed=0), one_d))


def test_pad_examples_refuses_short_length():
    ex = {"input_ids": torch.arange(5), "targets": torch.arange(5)}
    assert pad_examples([ex], 7)["attention_mask"].tolist() == [[1] * 5 + [0] * 2]
    with pytest.raises(ValueError, match="raise it"):
        pad_examples([ex], 4)


def test_a_prefix_decoder_learns_glm(tok, token_ids):
    ids = dict(mask_id=tok.special_id(MASK), start_id=tok.special_id(START), end_id=tok.special_id(END))
    batches = GLMBatches(token_ids, 16, 24, **ids)
    model = build_model(_cfg(tok, mask="prefix", position_dims=2), seed=0)
    cfg = TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=60, eval_batches=2, progress=False)
    history = Trainer(model, cfg, batches, batches, glm_loss).train()
    assert history.val_loss[-1] < history.train_loss[0] - 1.0  # from ln V to below the character unigram entropy


# --- UL2 -----------------------------------------------------------------------------
def _ul2(tok, token_ids, arch="decoder", **kw):
    return UL2Batches(
        token_ids, 4, 32, mode_ids={m: tok.special_id(t) for m, t in MODE_TOKENS.items()},
        sentinel_ids=[tok.special_id(s) for s in sentinel_tokens(12)], decoder_start_token_id=tok.special_id("<s>"),
        arch=arch, **kw,
    )


def test_ul2_mode_tokens_and_shapes(tok, token_ids):
    for arch in ("decoder", "encoder_decoder"):
        for d in UL2_DENOISERS:
            batch = _ul2(tok, token_ids, arch, denoisers=[d])(torch.Generator().manual_seed(0))
            assert (batch["input_ids"][:, 0] == tok.special_id(MODE_TOKENS[d.mode])).all()
            n_scored = (batch["targets"] != IGNORE).sum(1)
            if d.mode == "S":
                # decoder: positions from the split on; encoder-decoder: the continuation
                assert (n_scored == 32 - (batch["prefix_len"] - 1 if arch == "decoder" else 32 - n_scored)).all()
            else:
                n, k = span_counts_of(d)
                assert (n_scored == n + k + 1).all()


def span_counts_of(d):
    from llmcourse.objectives import span_counts

    return span_counts(32, d.rate, d.mean_span)


def test_ul2_decoder_and_encoder_decoder_score_the_same_tokens(tok, token_ids):
    for d in UL2_DENOISERS:
        a = _ul2(tok, token_ids, "decoder", denoisers=[d])(torch.Generator().manual_seed(5))
        b = _ul2(tok, token_ids, "encoder_decoder", denoisers=[d])(torch.Generator().manual_seed(5))
        ta, tb = a["targets"], b["targets"]
        assert torch.equal(ta[ta != IGNORE], tb[tb != IGNORE])


def test_ul2_mixture_frequencies_and_determinism(tok, token_ids):
    batches = _ul2(tok, token_ids, weights=[1, 0, 2, 0, 0, 0, 1])
    g = torch.Generator().manual_seed(0)
    drawn = []
    for _ in range(400):
        batches(g)
        drawn.append(str(batches.last))
    assert set(drawn) == {str(UL2_DENOISERS[i]) for i in (0, 2, 6)}
    assert abs(drawn.count("S") / 400 - 0.5) < 0.07
    x = _ul2(tok, token_ids)
    a, b = x(torch.Generator().manual_seed(9)), x(torch.Generator().manual_seed(9))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ul2_errors(tok, token_ids):
    with pytest.raises(ValueError, match="mode"):
        Denoiser("Q", 3, 0.15)
    with pytest.raises(ValueError, match="prefix LM"):
        Denoiser("S", 3, 0.15)
    with pytest.raises(ValueError, match="needs mean_span"):
        Denoiser("X")
    with pytest.raises(ValueError, match="sentinel"):
        UL2Batches(token_ids, 4, 32, mode_ids={"R": 1, "S": 2, "X": 3}, sentinel_ids=[5, 6], decoder_start_token_id=0)
    with pytest.raises(ValueError, match="mode_ids"):
        UL2Batches(token_ids, 4, 32, mode_ids={"R": 1}, sentinel_ids=list(range(20)), decoder_start_token_id=0)
    batch = _ul2(tok, token_ids, "encoder_decoder")(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="seq2seq_as_decoder_batch"):
        denoising_loss(build_model(_cfg(tok, mask="prefix"), seed=0), batch)
    dec_batch = _ul2(tok, token_ids)(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="arch='encoder_decoder'"):
        denoising_loss(build_model(_cfg(tok, arch="encoder_decoder"), seed=0), dec_batch)


def test_ul2_losses_on_all_three_architectures(tok, token_ids):
    dec = _ul2(tok, token_ids)(torch.Generator().manual_seed(1))
    ed = _ul2(tok, token_ids, "encoder_decoder")(torch.Generator().manual_seed(1))
    for model, batch in (
        (build_model(_cfg(tok), seed=0), dec),
        (build_model(_cfg(tok, mask="prefix"), seed=0), dec),
        (build_model(_cfg(tok, arch="encoder_decoder"), seed=0), ed),
    ):
        assert torch.isfinite(denoising_loss(model, batch))
    # a causal decoder ignores the prefix: its loss is lm_loss without prefix_len
    causal = build_model(_cfg(tok), seed=0)
    plain = {k: v for k, v in dec.items() if k != "prefix_len"}
    assert torch.equal(denoising_loss(causal, dec), lm_loss(causal, plain))


# --- the five compared objectives (chapter 07) -------------------------------------------
def test_compared_objectives_need_the_comparison_specials(tokenizer):
    from llmcourse.denoising import compared_objectives

    with pytest.raises(ValueError, match="comparison_tokenizer"):
        compared_objectives(tokenizer, torch.arange(200) % 20, 16)


def test_compared_objectives_see_the_same_windows_and_train(tokenizer):
    from llmcourse.denoising import comparison_tokenizer, compared_objectives, window_batches

    tok = comparison_tokenizer(tokenizer)
    ids = torch.tensor(tok.encode("Before we proceed any further, hear me speak. " * 8))
    objectives = compared_objectives(tok, ids, 24)
    assert list(objectives) == ["LM", "prefix LM", "BERT", "T5 spans", "GLM"]
    lm_windows, after = None, []
    for name, objective in objectives.items():
        g = torch.Generator().manual_seed(3)
        batch = window_batches(objective.make, ids, 4, 24)(g)
        after.append(int(torch.randint(2**31, (), generator=g)))  # g stays in step
        if name == "LM":
            lm_windows = torch.cat([batch["input_ids"], batch["targets"][:, -1:]], 1)
        elif name == "BERT":  # the chosen positions hold the window's own tokens
            chosen = batch["targets"] != IGNORE
            assert chosen.any() and torch.equal(batch["targets"][chosen], lm_windows[chosen])
        elif name == "prefix LM":
            assert torch.equal(batch["input_ids"], lm_windows[:, :-1])
        model = build_model(_cfg(tok, **objective.settings), seed=0)
        loss = objective.loss(model, batch)
        loss.backward()
        assert torch.isfinite(loss) and 0 < loss.item() < 10
    assert len(set(after)) == 1
    with pytest.raises(ValueError, match="mask='prefix'"):  # GLM on a causal decoder names the fix
        objectives["GLM"].loss(build_model(_cfg(tok)), window_batches(objectives["GLM"].make, ids, 2, 24)(g))
