"""The three architectures, told apart by perturbation: who may attend to whom.

Causal: no position sees a later token. Prefix: the prefix sees itself in both
directions, the rest sees the prefix and its past. Encoder-decoder: decoder
position t depends on every encoder token and on no decoder token after t.
Padding never changes the outputs at real positions.
"""

import pytest
import torch

from llmcourse import ModelConfig, build_model, to_prefix_decoder
from llmcourse.ffn import count_parameters
from llmcourse.hf import CONVERTERS, from_hf

V, T = 23, 10


def _cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=V, d_model=32, n_heads=4, n_layers=2, max_seq_len=16)
    base.update(kw)
    return ModelConfig(**base)


def _ids(B=2, L=T, seed=0):
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per position: did the logits move? Shapes: ``(B, T, V) -> (T,)`` (any example)."""
    return ((a - b).abs().amax(-1) > 1e-6).any(0)


def _perturb(ids: torch.Tensor, j: int) -> torch.Tensor:
    out = ids.clone()
    out[:, j] = (out[:, j] + 1) % V
    return out


def _dependence(fn, ids: torch.Tensor) -> torch.Tensor:
    """``D[i, j]``: does output position i change when input token j changes? Shapes: ``(T_out, T_in)``."""
    with torch.no_grad():
        base = fn(ids)
        return torch.stack([_changed(fn(_perturb(ids, j)), base) for j in range(ids.shape[1])], dim=1)


@pytest.mark.parametrize("position", ["learned", "rope", "alibi", "t5"])
def test_causal_decoder_never_sees_the_future(position):
    model = build_model(_cfg(position=position), seed=0).eval()
    dep = _dependence(model, _ids())
    assert torch.equal(dep, torch.ones(T, T, dtype=torch.bool).tril())  # exactly its past and itself


@pytest.mark.parametrize("position", ["learned", "t5"])
def test_prefix_decoder_sees_the_prefix_both_ways(position):
    p = 4
    model = build_model(_cfg(mask="prefix", position=position), seed=0).eval()
    dep = _dependence(lambda x: model(x, prefix_len=p), _ids())
    i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    assert torch.equal(dep, (j < p) | (j <= i))
    assert dep[0, p - 1]  # the first token reads the last prefix token
    assert not dep[p, p + 1]  # after the prefix: causal


def test_prefix_lengths_per_example_match_single_runs():
    model = build_model(_cfg(mask="prefix"), seed=0).eval()
    ids = _ids(B=3)
    lengths = torch.tensor([0, 3, T])
    with torch.no_grad():
        batched = model(ids, prefix_len=lengths)
        for b in range(3):
            torch.testing.assert_close(batched[b : b + 1], model(ids[b : b + 1], prefix_len=int(lengths[b])), atol=1e-6, rtol=0)


@pytest.mark.parametrize("position", ["learned", "t5"])
def test_to_prefix_decoder_is_the_same_weights_with_another_mask(position):
    causal = build_model(_cfg(position=position), seed=0).eval()
    prefix = to_prefix_decoder(causal)
    assert prefix.config.mask == "prefix" and causal.config.mask == "causal"
    ours = {n: p.data_ptr() for n, p in causal.named_parameters()}
    theirs = {n: p.data_ptr() for n, p in prefix.named_parameters()}
    assert ours == theirs  # shared, not copied
    if position == "t5":  # a trained-looking table, so that a remapped bucket would show
        with torch.no_grad():
            causal.decoder.positions.relative_attention_bias.weight.normal_(generator=torch.Generator().manual_seed(0))
    ids = _ids()
    with torch.no_grad():
        # an empty prefix is a causal mask: the converted model computes exactly what the causal one does
        torch.testing.assert_close(prefix(ids, prefix_len=0), causal(ids), atol=1e-6, rtol=0)
        out_p, out_c = prefix(ids, prefix_len=5), causal(ids)
    # positions before the end of the prefix now read later prefix tokens; positions after see the same keys
    assert _changed(out_p, out_c)[:4].all()


def test_encoder_decoder_dependence():
    model = build_model(_cfg(arch="encoder_decoder", n_encoder_layers=2), seed=0).eval()
    src, tgt = _ids(L=8, seed=1), _ids(L=T, seed=2)
    with torch.no_grad():
        on_source = _dependence(lambda s: model(s, tgt), src)  # (T, S)
        on_target = _dependence(lambda d: model(src, d), tgt)  # (T, T)
    assert on_source.all()  # every decoder position reads every encoder token
    assert torch.equal(on_target, torch.ones(T, T, dtype=torch.bool).tril())  # and only its own past


@pytest.mark.parametrize("position", ["learned", "t5"])
def test_encoder_decoder_embeddings_shared_or_separate(position):
    shared = build_model(_cfg(arch="encoder_decoder", position=position), seed=0)
    separate = build_model(_cfg(arch="encoder_decoder", position=position, share_embeddings=False), seed=0)
    assert shared.decoder_embedding is shared.tok_emb
    assert separate.decoder_embedding is not separate.tok_emb
    assert count_parameters(separate) - count_parameters(shared) == V * 32


@pytest.mark.parametrize("mask", ["causal", "prefix"])
def test_decoder_padding_never_changes_real_positions(mask):
    model = build_model(_cfg(mask=mask), seed=0).eval()
    ids = _ids(B=1, L=6)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    attn = torch.tensor([[1] * 6 + [0] * 4])
    kw = {"prefix_len": 3} if mask == "prefix" else {}
    with torch.no_grad():
        torch.testing.assert_close(model(padded, attention_mask=attn, **kw)[:, :6], model(ids, **kw), atol=1e-6, rtol=0)


@pytest.mark.parametrize("position", ["learned", "t5"])
def test_encoder_padding_never_changes_outputs(position):
    model = build_model(_cfg(arch="encoder_decoder", position=position), seed=0).eval()
    src, tgt = _ids(B=1, L=6, seed=1), _ids(B=1, L=5, seed=2)
    padded = torch.cat([src, torch.full((1, 5), 3)], dim=1)
    attn = torch.tensor([[1] * 6 + [0] * 5])
    with torch.no_grad():
        expected = model(src, tgt)
        torch.testing.assert_close(model(padded, tgt, attention_mask=attn), expected, atol=1e-6, rtol=0)
        # without the mask the padding is read: the test can fail
        assert not torch.allclose(model(padded, tgt), expected, atol=1e-4)


def test_encoder_padding_in_a_mixed_batch():
    model = build_model(_cfg(arch="encoder_decoder"), seed=0).eval()
    long, short, tgt = _ids(B=1, L=8, seed=1), _ids(B=1, L=5, seed=3), _ids(B=2, L=4, seed=2)
    batch = torch.cat([long, torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], 1)])
    attn = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    with torch.no_grad():
        out = model(batch, tgt, attention_mask=attn)
        torch.testing.assert_close(out[1:], model(short, tgt[1:]), atol=1e-6, rtol=0)
        torch.testing.assert_close(out[:1], model(long, tgt[:1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_fused_kernel_agrees_with_the_explicit_path(arch):
    kw = dict(arch=arch, mask="prefix") if arch == "decoder" else dict(arch=arch)
    explicit = build_model(_cfg(**kw), seed=0).eval()
    fused = build_model(_cfg(attn_impl="sdpa", **kw), seed=0).eval()
    ids = _ids()
    with torch.no_grad():
        if arch == "decoder":
            a, b = explicit(ids, prefix_len=torch.tensor([2, 7])), fused(ids, prefix_len=torch.tensor([2, 7]))
        else:
            a, b = explicit(ids, ids[:, :5]), fused(ids, ids[:, :5])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --- clear errors ----------------------------------------------------------------
def test_prefix_longer_than_the_sequence():
    model = build_model(_cfg(mask="prefix"), seed=0)
    with pytest.raises(ValueError, match=r"prefix lengths must lie in \[0, 10\].*shorten the prefix"):
        model(_ids(), prefix_len=11)


def test_prefix_decoder_needs_a_prefix_and_causal_refuses_one():
    with pytest.raises(ValueError, match="needs prefix_len"):
        build_model(_cfg(mask="prefix"), seed=0)(_ids())
    with pytest.raises(ValueError, match="to_prefix_decoder"):
        build_model(_cfg(), seed=0)(_ids(), prefix_len=3)


def test_mismatched_batch_sizes():
    model = build_model(_cfg(arch="encoder_decoder"), seed=0)
    with pytest.raises(ValueError, match="batch sizes differ: input_ids has 2 examples, decoder_input_ids 3"):
        model(_ids(B=2), _ids(B=3))
    with pytest.raises(ValueError, match="one per example"):
        build_model(_cfg(mask="prefix"), seed=0)(_ids(B=2), prefix_len=torch.tensor([1, 2, 3]))
    memory = model.encode(_ids(B=2, L=6))
    with pytest.raises(ValueError, match="batch sizes differ: the encoder output has 2 examples"):
        model.decode(_ids(B=3, L=4), memory)
    with pytest.raises(ValueError, match="pass the mask the source was encoded with"):
        model.decode(_ids(B=2, L=4), memory, attention_mask=torch.ones(2, 7, dtype=torch.long))


def test_from_hf_unknown_model_type_lists_the_known_ones():
    class Config:
        model_type = "mamba"

    class Model(torch.nn.Module):
        config = Config()

    with pytest.raises(ValueError, match="does not know model_type='mamba'") as err:
        from_hf(Model())
    for known in CONVERTERS:
        assert known in str(err.value)
    with pytest.raises(ValueError, match="config.model_type"):
        from_hf(torch.nn.Linear(2, 2))


def test_to_prefix_decoder_refuses_an_encoder_decoder():
    with pytest.raises(ValueError, match="converts a DecoderLM"):
        to_prefix_decoder(build_model(_cfg(arch="encoder_decoder"), seed=0))
