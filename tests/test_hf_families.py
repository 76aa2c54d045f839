"""Every converted family end to end: folders saved by transformers -> llmcourse.hf.from_pretrained, and generation.

Each family is built from a tiny random HF config (no downloads), saved with
save_pretrained (safetensors), loaded back with from_pretrained: logits equal
within 1e-5. Greedy generation of the converted model (llmcourse.generate, or
generate_seq2seq for T5 and Switch) equals transformers' generate (use_cache=True,
do_sample=False) token for token, and so do the logits of every step; for the
decoders also batched, prompts of different lengths left-padded with an
attention_mask, against transformers' batched generate with the same padding, and
for the encoder-decoders batched sources of different lengths, right-padded.
The two mixture-of-experts families (Mixtral, Switch) are among them.
from_pretrained's errors name what is wrong: a missing folder or file, an
unsupported architecture (with the supported ones), an unsupported variant
(before any weights load).
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import ATOL, VOCAB, assert_batched_greedy_equal, assert_greedy_equal, randomize  # noqa: E402

from llmcourse import generate_seq2seq  # noqa: E402
from llmcourse.hf import from_hf, from_pretrained  # noqa: E402


def _randomize(model: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    return randomize(model, seed=0, scale=scale)


def _build(family: str) -> torch.nn.Module:
    t = transformers
    # every family with an odd number of query heads (3, 5 or 6 of 2), grouped-query where the family has it
    common = dict(vocab_size=VOCAB, attn_implementation="eager")
    if family == "llama":
        return _randomize(t.LlamaForCausalLM(t.LlamaConfig(
            hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
            max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 500.0}, **common)))
    if family == "gpt2":
        return _randomize(t.GPT2LMHeadModel(t.GPT2Config(n_positions=40, n_embd=48, n_layer=2, n_head=3, **common)))
    if family == "gpt_neox":
        return _randomize(t.GPTNeoXForCausalLM(t.GPTNeoXConfig(
            hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3, max_position_embeddings=64,
            rotary_pct=0.25, use_parallel_residual=True, **common)))
    if family == "bloom":
        return _randomize(t.BloomForCausalLM(t.BloomConfig(hidden_size=48, n_layer=2, n_head=6, **common)))
    if family == "opt":
        return _randomize(t.OPTForCausalLM(t.OPTConfig(
            hidden_size=48, ffn_dim=80, num_hidden_layers=2, num_attention_heads=3, max_position_embeddings=40,
            word_embed_proj_dim=48, **common)))
    if family == "qwen2":
        return _randomize(t.Qwen2ForCausalLM(t.Qwen2Config(
            hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=5, num_key_value_heads=1,
            max_position_embeddings=64, **common)))
    if family == "qwen3":
        return _randomize(t.Qwen3ForCausalLM(t.Qwen3Config(
            hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3,
            head_dim=10, max_position_embeddings=64, **common)))
    if family == "gemma":
        return _randomize(t.GemmaForCausalLM(t.GemmaConfig(
            hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
            head_dim=20, max_position_embeddings=64, pad_token_id=None, **common)))
    if family == "falcon":
        return _randomize(t.FalconForCausalLM(t.FalconConfig(
            hidden_size=48, num_hidden_layers=2, num_attention_heads=6, num_kv_heads=2, new_decoder_architecture=True,
            max_position_embeddings=64, **common)))
    if family == "mixtral":  # 3 query heads share 1 key/value head; top-2 of 3 experts
        return _randomize(t.MixtralForCausalLM(t.MixtralConfig(
            hidden_size=36, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
            head_dim=14, num_local_experts=3, num_experts_per_tok=2, max_position_embeddings=64, **common)))
    if family == "switch":  # 3 heads of 10 (inner 30 != d_model 32); top-1 of 4 experts in layer 1 of each stack
        return _randomize(t.SwitchTransformersForConditionalGeneration(t.SwitchTransformersConfig(
            d_model=32, d_kv=10, d_ff=40, num_layers=2, num_decoder_layers=2, num_sparse_encoder_layers=1,
            num_sparse_decoder_layers=1, num_heads=3, num_experts=4, expert_capacity=64,
            relative_attention_num_buckets=8, relative_attention_max_distance=20, decoder_start_token_id=0,
            **common)), scale=0.15)
    version = family.removeprefix("t5_v")
    extra = {} if version == "1.0" else dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    hf = t.T5ForConditionalGeneration(t.T5Config(
        d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=3, relative_attention_num_buckets=8,
        relative_attention_max_distance=20, decoder_start_token_id=0, **extra, **common))
    if version == "1.1":  # v1.1 checkpoints hold their own lm_head; transformers >= 5 ties it on construction
        hf.lm_head.weight = torch.nn.Parameter(hf.shared.weight.detach().clone())
    return _randomize(hf, scale=0.2)


DECODERS = ["llama", "gpt2", "gpt_neox", "bloom", "opt", "qwen2", "qwen3", "gemma", "falcon", "mixtral"]
ENCODER_DECODERS = ["t5_v1.0", "t5_v1.1", "switch"]
FAMILIES = [*DECODERS, *ENCODER_DECODERS]


def _ids(B: int = 2, T: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def _logits(model, src, tgt, hf: bool):
    with torch.no_grad():
        if hf:
            return (model(input_ids=src, decoder_input_ids=tgt) if model.config.is_encoder_decoder else model(src)).logits
        return model(src, tgt) if model.config.arch == "encoder_decoder" else model(src)


@pytest.mark.parametrize("family", FAMILIES)
def test_from_pretrained_a_saved_folder(family, tmp_path):
    hf = _build(family)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    assert ours.config.vocab_size == VOCAB
    src, tgt = _ids(T=14), _ids(T=6, seed=2)
    expected = _logits(hf, src, tgt, hf=True)
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(_logits(ours, src, tgt, hf=False), expected, atol=ATOL, rtol=0)
    assert ours.config.tie_embeddings == (hf.get_output_embeddings().weight is hf.get_input_embeddings().weight)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_equals_transformers(family):
    hf = _build(family)
    ours = from_hf(hf)
    prompt = _ids(B=1, T=5, seed=4)
    if ours.config.arch == "decoder":
        assert_greedy_equal(hf, ours, prompt, 16)
        return
    out = hf.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False, use_cache=True,
        eos_token_id=None, return_dict_in_generate=True, output_logits=True,
    )
    theirs = out.sequences
    assert torch.equal(generate_seq2seq(ours, prompt, 16, greedy=True), theirs)
    with torch.no_grad():
        steps = ours(prompt, theirs[:, :-1])
    # random models tend to repeat one token; every step's logits must agree too
    torch.testing.assert_close(steps, torch.stack(out.logits, 1), atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", DECODERS)
def test_batched_left_padded_generation_equals_transformers(family):
    """Prompts of 7, 4 and 2 tokens in one left-padded batch: the tokens and logits of HF's batched generate."""
    hf = _build(family)
    assert_batched_greedy_equal(hf, from_hf(hf))


@pytest.mark.parametrize("family", ENCODER_DECODERS)
def test_batched_padded_source_generation_equals_transformers(family):
    """Sources of 9, 5 and 2 tokens in one right-padded batch: the tokens and logits of HF's batched generate.

    Each row also equals its source generated alone (the padding changes nothing).
    """
    hf = _build(family)
    ours = from_hf(hf)
    lengths = (9, 5, 2)
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    src = _ids(B=3, T=9, seed=7).masked_fill(mask == 0, 0)
    out = hf.generate(
        src, attention_mask=mask, max_new_tokens=12, do_sample=False, use_cache=True, eos_token_id=None,
        return_dict_in_generate=True, output_logits=True,
    )
    theirs = out.sequences
    assert torch.equal(generate_seq2seq(ours, src, 12, greedy=True, attention_mask=mask), theirs)
    for row, n in enumerate(lengths):
        assert torch.equal(generate_seq2seq(ours, src[row : row + 1, :n], 12, greedy=True)[0], theirs[row])
    with torch.no_grad():
        steps = ours(src, theirs[:, :-1], attention_mask=mask)
    torch.testing.assert_close(steps, torch.stack(out.logits, 1), atol=ATOL, rtol=0)


def test_from_pretrained_missing_folder_or_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_pretrained(tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        from_pretrained(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        from_pretrained(tmp_path / "weights.bin")
    _build("gpt2").config.save_pretrained(tmp_path)  # a config without weights
    with pytest.raises(FileNotFoundError, match="could not load the weights"):
        from_pretrained(tmp_path)


def test_from_pretrained_unsupported_architecture_lists_the_supported(tmp_path):
    transformers.MistralConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"'mistral' model .*supported model types: bloom, falcon, gemma, gpt2, gpt_neox, llama"):
        from_pretrained(tmp_path)


def test_from_pretrained_rejects_an_unsupported_variant_before_loading_weights(tmp_path):
    transformers.OPTConfig(vocab_size=VOCAB, hidden_size=32, word_embed_proj_dim=16, num_attention_heads=2).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "opt"
    # no weights in the folder: a FileNotFoundError would mean it tried to load them first
    with pytest.raises(ValueError, match="word_embed_proj_dim=16 differs from hidden_size=32"):
        from_pretrained(tmp_path)
