"""Objectives: LM, prefix LM (loss only after the prefix) and T5 span corruption, and the decoder view of seq2seq."""

import math

import pytest
import torch

from llmcourse import LMBatches, ModelConfig, TrainConfig, Trainer, build_model
from llmcourse.objectives import (
    IGNORE,
    PrefixLMBatches,
    SpanCorruptionBatches,
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


def test_lm_loss_needs_targets(tiny_config, token_ids):
    model = build_model(tiny_config, seed=0)
    batch = LMBatches(token_ids, 2, 8)(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="targets"):
        lm_loss(model, {"input_ids": batch["input_ids"]})


# --- prefix LM ------------------------------------------------------------------
def test_prefix_targets_ignore_exactly_the_inside_of_the_prefix():
    targets = torch.arange(8).expand(4, 8)
    out = prefix_lm_targets(targets, torch.tensor([0, 1, 5, 8]))
    ignored = out == IGNORE
    # position i predicts token i + 1; it is inside a prefix of p tokens when i + 1 < p
    assert ignored.sum(1).tolist() == [0, 0, 4, 7]
    assert torch.equal(out[2, 4:], targets[2, 4:])
    with pytest.raises(ValueError, match="shorten the prefix"):
        prefix_lm_targets(targets, 9)


def test_prefix_lm_never_scores_a_token_the_model_can_see(tokenizer, token_ids):
    """Leakage check: each scored logit is unchanged when its own target token changes."""
    V = tokenizer.vocab_size
    model = build_model(ModelConfig(vocab_size=V, d_model=32, n_heads=4, n_layers=2, max_seq_len=16, mask="prefix"), seed=0).eval()
    batch = PrefixLMBatches(token_ids, 4, 16)(torch.Generator().manual_seed(0))
    ids, p = batch["input_ids"], batch["prefix_len"]
    with torch.no_grad():
        base = model(ids, prefix_len=p)
        for i in range(15):
            changed = ids.clone()
            changed[:, i + 1] = (changed[:, i + 1] + 1) % V  # the token position i must predict
            moved = (model(changed, prefix_len=p)[:, i] - base[:, i]).abs().amax(-1) > 1e-6  # (B,)
            scored = batch["targets"][:, i] != IGNORE
            assert not (moved & scored).any(), f"position {i} sees its own target"
            assert torch.equal(moved, ~scored)  # and every unscored one does see it (i + 1 inside the prefix)


def test_prefix_lm_batches_are_deterministic_and_in_range(token_ids):
    batches = PrefixLMBatches(token_ids, 64, 16)
    a, b = batches(torch.Generator().manual_seed(5)), batches(torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["input_ids"].shape == a["targets"].shape == (64, 16) and a["prefix_len"].shape == (64,)
    assert 1 <= int(a["prefix_len"].min()) and int(a["prefix_len"].max()) <= 15
    assert len(set(a["prefix_len"].tolist())) > 5  # one random prefix per example
    with pytest.raises(ValueError, match="min_prefix"):
        PrefixLMBatches(token_ids, 4, 16, min_prefix=10, max_prefix=5)


def test_prefix_lm_batch_from_an_lm_batch(token_ids):
    lm = LMBatches(token_ids, 3, 8)(torch.Generator().manual_seed(0))
    batch = prefix_lm_batch(lm, 4)
    assert batch["prefix_len"].tolist() == [4, 4, 4]
    assert (batch["targets"][:, :3] == IGNORE).all() and torch.equal(batch["targets"][:, 3:], lm["targets"][:, 3:])


def test_decoder_loss_scores_the_same_targets_for_both_masks(tiny_config, token_ids):
    causal = build_model(tiny_config, seed=0)
    prefix = build_model(tiny_config.replace(mask="prefix"), seed=0)
    batch = PrefixLMBatches(token_ids, 4, 16)(torch.Generator().manual_seed(0))
    no_prefix = {k: v for k, v in batch.items() if k != "prefix_len"}
    with torch.no_grad():
        assert float(decoder_loss(causal, batch)) == pytest.approx(float(lm_loss(causal, no_prefix)))
        assert float(decoder_loss(prefix, batch)) == pytest.approx(float(lm_loss(prefix, batch)))
        with pytest.raises(ValueError, match="to_prefix_decoder"):
            lm_loss(causal, batch)  # plain lm_loss passes prefix_len through, and a causal decoder refuses it


# --- span corruption ---------------------------------------------------------------
@pytest.mark.parametrize("length, expected", [(57, (9, 3)), (64, (10, 3)), (512, (77, 26)), (2, (1, 1))])
def test_span_counts_follow_t5(length, expected):
    assert span_counts(length) == expected


def test_span_counts_errors():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        span_counts(1)
    with pytest.raises(ValueError, match="noise_density"):
        span_counts(10, noise_density=0.0)


def _runs(row: torch.Tensor) -> list[tuple[bool, int]]:
    out: list[tuple[bool, int]] = []
    for v in row.tolist():
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out


def test_noise_mask_layout_and_statistics():
    L, B = 100, 400
    mask = random_spans_noise_mask(L, batch_size=B, generator=torch.Generator().manual_seed(0))
    n_noise, n_spans = span_counts(L)
    assert mask.shape == (B, L) and (mask.sum(1) == n_noise).all()
    span_lengths = []
    for row in mask:
        runs = _runs(row)
        assert runs[0][0] is False and runs[-1][0] is True  # clean first, noise last, as T5 lays them out
        noise_runs = [n for is_noise, n in runs if is_noise]
        assert len(noise_runs) == n_spans
        span_lengths += noise_runs
    assert sum(span_lengths) / len(span_lengths) == pytest.approx(3.0, abs=0.01)  # 15 tokens in 5 spans per row
    assert len(set(map(tuple, mask.int().tolist()))) > B // 2  # masks differ between rows


def test_span_corruption_reproduces_the_papers_example():
    words = "Thank you for inviting me to your party last week .".split()
    vocab = {w: i for i, w in enumerate(words)}
    X, Y, Z = 100, 101, 102
    tokens = torch.tensor([[vocab[w] for w in words]])
    noise = torch.tensor([[w in ("for", "inviting", "last") for w in words]])
    inputs, targets = span_corrupt(tokens, noise, [X, Y, Z])
    name = {i: w for w, i in vocab.items()} | {X: "<X>", Y: "<Y>", Z: "<Z>"}
    assert " ".join(name[int(i)] for i in inputs[0]) == "Thank you <X> me to your party <Y> week ."
    assert " ".join(name[int(i)] for i in targets[0]) == "<X> for inviting <Y> last <Z>"


def _reconstruct(inputs: list[int], targets: list[int], sentinels: list[int]) -> list[int]:
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs:
        out += spans[t] if t in sentinels else [t]
    return out


def test_span_corruption_round_trip():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50, (16, 40), generator=g)
    noise = random_spans_noise_mask(40, batch_size=16, generator=g)
    sentinels = list(range(50, 60))
    inputs, targets = span_corrupt(tokens, noise, sentinels)
    n_noise, k = span_counts(40)
    assert inputs.shape == (16, 40 - n_noise + k) and targets.shape == (16, n_noise + k + 1)
    for b in range(16):
        assert _reconstruct(inputs[b].tolist(), targets[b].tolist(), sentinels) == tokens[b].tolist()
    with pytest.raises(ValueError, match="sentinel ids"):
        span_corrupt(tokens, noise, sentinels[:k])  # targets need k + 1


def test_span_corruption_batches(tokenizer, token_ids):
    tok = tokenizer.with_specials(["<start>"] + sentinel_tokens(4))
    sentinels = [tok.special_id(s) for s in sentinel_tokens(4)]
    batches = SpanCorruptionBatches(token_ids, 8, 57, sentinel_ids=sentinels, decoder_start_token_id=tok.special_id("<start>"))
    batch = batches(torch.Generator().manual_seed(0))
    assert batches.n_sentinels == 4 and (batches.input_len, batches.target_len) == (51, 13)
    assert batch["input_ids"].shape == (8, 51) and batch["targets"].shape == batch["decoder_input_ids"].shape == (8, 13)
    assert torch.equal(batch["decoder_input_ids"], shift_right(batch["targets"], tok.special_id("<start>")))
    assert batch["targets"][0, 0] == sentinels[0] and batch["targets"][0, -1] == sentinels[-1]
    # the reconstructed text is a window of the corpus
    text = tok.decode(_reconstruct(batch["input_ids"][0].tolist(), batch["targets"][0].tolist(), sentinels))
    assert len(text) == 57 and text in tokenizer.decode(token_ids.tolist())
    again = batches(torch.Generator().manual_seed(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    with pytest.raises(ValueError, match="need 4 sentinel ids"):
        SpanCorruptionBatches(token_ids, 8, 57, sentinel_ids=sentinels[:3], decoder_start_token_id=0)


def test_decoder_view_scores_the_same_predictions(tokenizer, token_ids):
    """Decoder position S + t reads the source and decoder_input_ids[:t+1] and predicts targets[t], as the decoder does."""
    tok = tokenizer.with_specials(["<start>"] + sentinel_tokens(4))
    sentinels = [tok.special_id(s) for s in sentinel_tokens(4)]
    seq = SpanCorruptionBatches(token_ids, 4, 57, sentinel_ids=sentinels, decoder_start_token_id=tok.special_id("<start>"))(
        torch.Generator().manual_seed(0)
    )
    dec = seq2seq_as_decoder_batch(seq)
    S = seq["input_ids"].shape[1]
    assert dec["input_ids"].shape == dec["targets"].shape == (4, 64)
    assert (dec["prefix_len"] == S).all() and (dec["targets"][:, :S] == IGNORE).all()
    assert torch.equal(dec["targets"][:, S:], seq["targets"]) and torch.equal(dec["input_ids"][:, S:], seq["decoder_input_ids"])
    # the same number of scored tokens in both views
    assert int((dec["targets"] != IGNORE).sum()) == seq["targets"].numel()
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_heads=4, n_layers=2, max_seq_len=64)
    for model in (build_model(cfg, seed=0), build_model(cfg.replace(mask="prefix"), seed=0)):
        with torch.no_grad():
            assert abs(float(decoder_loss(model, dec)) - math.log(tok.vocab_size)) < 0.2
    with pytest.raises(ValueError, match="batch sizes differ"):
        seq2seq_as_decoder_batch({**seq, "decoder_input_ids": seq["decoder_input_ids"][:2]})


def test_an_encoder_decoder_learns_span_corruption(tokenizer, token_ids):
    tok = tokenizer.with_specials(["<start>"] + sentinel_tokens(4))
    sentinels = [tok.special_id(s) for s in sentinel_tokens(4)]
    batch = SpanCorruptionBatches(token_ids, 4, 57, sentinel_ids=sentinels, decoder_start_token_id=tok.special_id("<start>"))(
        torch.Generator().manual_seed(0)
    )
    cfg = ModelConfig(arch="encoder_decoder", vocab_size=tok.vocab_size, d_model=32, n_heads=4, n_layers=1, max_seq_len=64)
    model = build_model(cfg, seed=0)
    history = Trainer(model, TrainConfig(steps=80, batch_size=4, lr=3e-3, warmup_steps=5, weight_decay=0.0, progress=False), lambda g: batch).train()
    assert history.train_loss[0] > math.log(tok.vocab_size) - 0.2 and history.train_loss[-1] < 0.25 * history.train_loss[0]


# --- softmax and cross-entropy, written out ------------------------------------------
def _large_logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 5, 11, generator=g) * 1000.0  # exp(1000) overflows float32 (and float64)


def test_softmax_is_stable_and_equals_torch():
    from llmcourse.objectives import log_softmax, softmax

    x = _large_logits()
    naive = x.exp() / x.exp().sum(-1, keepdim=True)
    assert torch.isnan(naive).any()  # the unstable formula fails on these logits
    p = softmax(x)
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p, torch.softmax(x, -1))
    torch.testing.assert_close(softmax(x, dim=0), torch.softmax(x, 0))
    torch.testing.assert_close(log_softmax(x), torch.log_softmax(x, -1))


def test_cross_entropy_equals_torch_on_large_logits_with_ignored_targets():
    from llmcourse.objectives import cross_entropy

    x = _large_logits().requires_grad_()
    targets = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(1))
    targets[0, :2] = IGNORE
    targets[2, 4] = IGNORE
    ours = cross_entropy(x, targets)
    ref = torch.nn.functional.cross_entropy(x.reshape(-1, 11), targets.reshape(-1), ignore_index=IGNORE)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, ref)
    (g_ours,) = torch.autograd.grad(ours, x)
    (g_ref,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(g_ours, g_ref)
    assert not g_ours[0, :2].any()  # ignored positions get no gradient
    # another ignore index, and every target ignored: 0 / 0 = nan, as in torch
    t7 = targets.masked_fill(targets == IGNORE, 7)
    torch.testing.assert_close(
        cross_entropy(x, t7, ignore_index=7),
        torch.nn.functional.cross_entropy(x.reshape(-1, 11), t7.reshape(-1), ignore_index=7),
    )
    assert torch.isnan(cross_entropy(x, torch.full_like(targets, IGNORE)))
    with pytest.raises(ValueError, match="do not fit"):
        cross_entropy(x, targets[:, :4])


def test_lm_loss_is_torchs_kernel_and_the_written_out_cross_entropy_agrees(tiny_config, token_ids):
    from llmcourse.objectives import cross_entropy

    model = build_model(tiny_config, seed=0).eval()
    batch = LMBatches(token_ids, 4, 32)(torch.Generator().manual_seed(0))
    batch["targets"] = batch["targets"].clone()  # a view of the inputs, shifted
    batch["targets"][:, :3] = IGNORE
    logits = model(batch["input_ids"])
    loss = lm_loss(model, batch)
    fused = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["targets"].reshape(-1))
    assert torch.equal(loss, fused)  # the training path: bit for bit torch's kernel
    torch.testing.assert_close(cross_entropy(logits, batch["targets"]), loss)
