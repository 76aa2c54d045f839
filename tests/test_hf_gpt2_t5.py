"""Parity of llmcourse.hf.from_hf with GPT-2 and T5 built from tiny random configs (no downloads).

GPT-2: Conv1D weights stored transposed, fused q/k/v, gelu_new, learned positions,
tied head. T5 v1.0: ReLU, tied head scaled by d_model^-0.5; T5 v1.1: gated GeLU
(tanh form), untied head. Both T5s: no 1/sqrt(d) scaling, relative buckets held
by the first layer of each stack, RMS "LayerNorm", no biases. Logits equal within
1e-5; greedy generations identical.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import randomize as _randomize  # noqa: E402
from llmcourse import generate, generate_seq2seq  # noqa: E402
from llmcourse.hf import from_hf  # noqa: E402
from llmcourse.models import DecoderLM, EncoderDecoderLM  # noqa: E402

ATOL = 1e-5
VOCAB = 61


def _ids(B: int = 2, T: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


# --- GPT-2 ------------------------------------------------------------------------
def _gpt2(**kw):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB, n_positions=40, n_embd=48, n_layer=3, n_head=4, bos_token_id=0, eos_token_id=1,
        pad_token_id=1, attn_implementation="eager", **kw,
    )
    return _randomize(GPT2LMHeadModel(config))


def test_gpt2_logits():
    hf = _gpt2()
    ours = from_hf(hf)
    assert isinstance(ours, DecoderLM)
    cfg = ours.config
    assert (cfg.ffn, cfg.position, cfg.norm, cfg.bias, cfg.tie_embeddings) == ("gelu_tanh", "learned", "layernorm", True, True)
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=ATOL, rtol=0)


def test_gpt2_cached_logits_and_greedy_generation():
    hf = _gpt2()
    ours = from_hf(hf)
    ids = _ids(T=14)
    with torch.no_grad():
        expected = hf(ids).logits
        cache = ours.new_cache()
        steps = [ours(ids[:, :6], cache=cache)] + [ours(ids[:, t : t + 1], cache=cache) for t in range(6, 14)]
    torch.testing.assert_close(torch.cat(steps, 1), expected, atol=ATOL, rtol=0)
    prompt = _ids(B=3, T=5, seed=4)
    out = hf.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False, eos_token_id=None,
        return_dict_in_generate=True, output_logits=True,
    )
    theirs = out.sequences
    assert torch.equal(generate(ours, prompt, 20, greedy=True), theirs)
    assert torch.equal(generate(ours, prompt, 20, greedy=True, use_cache=False), theirs)
    # and the logits of every step along the way, not only their argmax
    with torch.no_grad():
        ours_steps = ours(theirs[:, :-1])[:, 4:]
    torch.testing.assert_close(ours_steps, torch.stack(out.logits, 1), atol=ATOL, rtol=0)


def test_gpt2_variants():
    hf = _gpt2(n_inner=80, activation_function="relu", layer_norm_epsilon=1e-6)
    ours = from_hf(hf)
    assert ours.config.resolved_d_ff == 80 and ours.config.ffn == "relu" and ours.config.norm_eps == 1e-6
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=ATOL, rtol=0)


def test_gpt2_unsupported_options_are_named():
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        from_hf(_gpt2(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="activation_function='quick_gelu'"):
        from_hf(_gpt2(activation_function="quick_gelu"))


# --- T5 ----------------------------------------------------------------------------
def _t5(version: str, num_decoder_layers: int = 3, **kw):
    from transformers import T5Config, T5ForConditionalGeneration

    extra = {} if version == "1.0" else dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    config = T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=num_decoder_layers, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0,
        attn_implementation="eager",
        **extra, **kw,
    )
    hf = T5ForConditionalGeneration(config)
    if version == "1.1":
        # released v1.1 checkpoints hold their own lm_head; recent transformers ties it on
        # construction, so give it separate weights as loading such a checkpoint would
        hf.lm_head.weight = torch.nn.Parameter(hf.shared.weight.detach().clone())
    return _randomize(hf, scale=0.15)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_t5_logits(version):
    hf = _t5(version)
    ours = from_hf(hf)
    assert isinstance(ours, EncoderDecoderLM)
    cfg = ours.config
    assert (cfg.position, cfg.norm, cfg.bias, cfg.attn_scale, cfg.resolved_head_dim) == ("t5", "rmsnorm", False, 1.0, 12)
    if version == "1.0":
        assert cfg.ffn == "relu" and cfg.tie_embeddings and cfg.logit_scale == pytest.approx(32**-0.5)
    else:
        assert cfg.ffn == "geglu_tanh" and not cfg.tie_embeddings and cfg.logit_scale == 1.0
    src, tgt = _ids(T=30), _ids(T=25, seed=2)  # longer than max_distance: the last, shared bucket is used
    with torch.no_grad():
        expected = hf(input_ids=src, decoder_input_ids=tgt).logits
        torch.testing.assert_close(ours(src, tgt), expected, atol=ATOL, rtol=0)
        assert expected.abs().max() > 0.5  # logits large enough that the tolerance means something


def test_t5_padded_source():
    hf = _t5("1.0")
    ours = from_hf(hf)
    src, tgt = _ids(T=10), _ids(T=6, seed=2)
    attn = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=attn, decoder_input_ids=tgt).logits
        torch.testing.assert_close(ours(src, tgt, attention_mask=attn), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_t5_greedy_generation(version):
    hf = _t5(version, num_decoder_layers=2)  # transformers' generation cache assumes equal stacks
    ours = from_hf(hf)
    src = _ids(B=3, T=9, seed=5)
    out = hf.generate(
        src, attention_mask=torch.ones_like(src), max_new_tokens=15, do_sample=False, eos_token_id=None,
        return_dict_in_generate=True, output_logits=True,
    )
    theirs = out.sequences
    assert ours.config.decoder_start_token_id == int(theirs[0, 0])
    assert torch.equal(generate_seq2seq(ours, src, 15, greedy=True), theirs)
    assert torch.equal(generate_seq2seq(ours, src, 15, greedy=True, use_cache=False), theirs)
    # random T5s tend to repeat one token, so compare every step's logits too, decoded with our KV cache
    with torch.no_grad():
        memory, cache = ours.encode(src), ours.new_cache()
        steps = [ours.decode(theirs[:, t : t + 1], memory, cache=cache) for t in range(15)]
    torch.testing.assert_close(torch.cat(steps, 1), torch.stack(out.logits, 1), atol=ATOL, rtol=0)


def test_t5_relative_bias_lives_in_each_stack_once():
    ours = from_hf(_t5("1.0"))
    tables = [n for n, _ in ours.named_parameters() if "relative_attention_bias" in n]
    assert tables == ["encoder.positions.relative_attention_bias.weight", "decoder.positions.relative_attention_bias.weight"]
    assert ours.encoder.positions.bidirectional and not ours.decoder.positions.bidirectional
