"""llmcourse.hf.to_hf: course models out to the matching transformers class, and back.

For each family a course model with random weights (norm gains and biases too)
becomes its HF class with equal logits (1e-5), survives save_pretrained ->
AutoModel*.from_pretrained (safetensors) with equal logits, generates greedily
token for token as llmcourse.generate does, and converts back with from_hf to the
same weights and config; the saved decoders also generate batched, prompts of
different lengths left-padded, as llmcourse.generate does. A config no HF class
expresses is a ValueError naming the field.
"""

import dataclasses
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import assert_batched_greedy_equal  # noqa: E402
from llmcourse import generate, generate_seq2seq  # noqa: E402
from llmcourse.config import ModelConfig  # noqa: E402
from llmcourse.hf import from_hf, to_hf  # noqa: E402
from llmcourse.models import build_model  # noqa: E402

ATOL = 1e-5
VOCAB = 97

CONFIGS = {
    "llama": ModelConfig(
        vocab_size=VOCAB, d_model=48, n_heads=6, n_kv_heads=2, d_ff=80, n_layers=2, max_seq_len=64, norm="rmsnorm",
        norm_eps=1e-6, ffn="swiglu", position="rope", rope_theta=500.0, bias=False, tie_embeddings=False,
    ),
    "llama_tied_head_dim": ModelConfig(
        vocab_size=VOCAB, d_model=32, n_heads=4, n_kv_heads=1, head_dim=12, d_ff=64, n_layers=1, max_seq_len=64,
        norm="rmsnorm", ffn="geglu", position="rope", bias=False, tie_embeddings=True,
    ),
    "gpt2": ModelConfig(vocab_size=VOCAB, d_model=48, n_heads=4, n_layers=3, max_seq_len=40, ffn="gelu_tanh"),
    "gpt2_relu_untied": ModelConfig(
        vocab_size=VOCAB, d_model=32, n_heads=2, d_ff=80, n_layers=2, max_seq_len=40, ffn="relu", norm_eps=1e-6,
        tie_embeddings=False,
    ),
    "t5_v1_0": ModelConfig(
        arch="encoder_decoder", vocab_size=VOCAB, d_model=32, n_heads=4, head_dim=12, d_ff=48, n_layers=3,
        n_encoder_layers=2, norm="rmsnorm", norm_eps=1e-6, ffn="relu", position="t5", rel_num_buckets=8,
        rel_max_distance=20, attn_scale=1.0, bias=False, tie_embeddings=True, logit_scale=32**-0.5,
    ),
    "t5_v1_1": ModelConfig(
        arch="encoder_decoder", vocab_size=VOCAB, d_model=32, n_heads=4, head_dim=12, d_ff=48, n_layers=2,
        norm="rmsnorm", norm_eps=1e-6, ffn="geglu_tanh", position="t5", rel_num_buckets=8, rel_max_distance=20,
        attn_scale=1.0, bias=False, tie_embeddings=False, decoder_start_token_id=3,
    ),
    "gpt_neox": ModelConfig(
        vocab_size=VOCAB, d_model=64, n_heads=4, d_ff=96, n_layers=2, max_seq_len=64, position="rope", rotary_dim=4,
        rope_theta=1000.0, parallel_residual=True, tie_embeddings=False,
    ),
    "bloom": ModelConfig(vocab_size=VOCAB, d_model=48, n_heads=6, n_layers=2, embed_norm=True, ffn="gelu_tanh", position="alibi"),
    "opt_post_ln": ModelConfig(
        vocab_size=VOCAB, d_model=48, n_heads=4, d_ff=80, n_layers=2, max_seq_len=32, ffn="relu", norm_placement="post",
    ),
    "opt_no_linear_bias": ModelConfig(
        vocab_size=VOCAB, d_model=48, n_heads=4, d_ff=80, n_layers=2, max_seq_len=32, ffn="relu", bias=False,
        norm_bias=True,
    ),
    "qwen2": ModelConfig(
        vocab_size=VOCAB, d_model=40, n_heads=5, n_kv_heads=1, d_ff=72, n_layers=2, max_seq_len=64, norm="rmsnorm",
        norm_eps=1e-6, ffn="swiglu", position="rope", rope_theta=1e6, bias=False, qkv_bias=True, tie_embeddings=False,
    ),
    "qwen2_window": ModelConfig(
        vocab_size=VOCAB, d_model=32, n_heads=4, n_kv_heads=2, head_dim=12, d_ff=64, n_layers=2, max_seq_len=64,
        norm="rmsnorm", ffn="swiglu", position="rope", bias=False, qkv_bias=True, sliding_window=5,
    ),
    "qwen3": ModelConfig(
        vocab_size=VOCAB, d_model=48, n_heads=6, n_kv_heads=3, head_dim=10, d_ff=72, n_layers=2, max_seq_len=64,
        norm="rmsnorm", norm_eps=1e-6, ffn="swiglu", position="rope", bias=False, qk_norm=True, tie_embeddings=False,
    ),
    "gemma": ModelConfig(
        vocab_size=VOCAB, d_model=48, n_heads=3, n_kv_heads=1, head_dim=20, d_ff=72, n_layers=2, max_seq_len=64,
        norm="rmsnorm", norm_eps=1e-6, ffn="geglu_tanh", position="rope", bias=False, norm_gain_offset=1.0,
        embed_scale=48**0.5,
    ),
    "falcon_7b": ModelConfig(
        vocab_size=VOCAB, d_model=48, n_heads=6, n_kv_heads=1, n_layers=2, max_seq_len=64, ffn="gelu", position="rope",
        parallel_residual=True, parallel_shared_norm=True, bias=False, norm_bias=True,
    ),
    "falcon_40b": ModelConfig(
        vocab_size=VOCAB, d_model=48, n_heads=6, n_kv_heads=2, n_layers=2, max_seq_len=64, ffn="gelu", position="rope",
        parallel_residual=True, bias=True, tie_embeddings=False,
    ),
    "falcon_sequential": ModelConfig(
        vocab_size=VOCAB, d_model=48, n_heads=6, n_layers=2, max_seq_len=64, ffn="gelu_tanh", position="rope",
        bias=False, norm_bias=True,
    ),
    "mixtral": ModelConfig(
        vocab_size=VOCAB, d_model=36, n_heads=3, n_kv_heads=1, head_dim=14, d_ff=40, n_layers=2, max_seq_len=64,
        norm="rmsnorm", norm_eps=1e-5, ffn="swiglu", position="rope", bias=False, tie_embeddings=False, n_experts=3,
        top_k=2, capacity_factor=None, router_renormalize=True, router_z_loss_coef=0.0,  # Mixtral has no z-loss
    ),
    "switch": ModelConfig(
        arch="encoder_decoder", vocab_size=VOCAB, d_model=32, n_heads=3, head_dim=10, d_ff=40, n_layers=4,
        max_seq_len=512, norm="rmsnorm", norm_eps=1e-6, ffn="relu", position="t5", rel_num_buckets=8, rel_max_distance=20,
        attn_scale=1.0, bias=False, tie_embeddings=True, share_embeddings=True, logit_scale=32**-0.5, n_experts=4,
        top_k=1, capacity_factor=None, expert_capacity=64, moe_capacity_scope="sequence", moe_every=2,
        moe_offset=1,
    ),
}
# the HF class each config must land in (by default: the first family that expresses it)
EXPECTED = {
    "llama": ("LlamaForCausalLM", None), "llama_tied_head_dim": ("LlamaForCausalLM", None),
    "gpt2": ("GPT2LMHeadModel", None), "gpt2_relu_untied": ("GPT2LMHeadModel", None),
    "t5_v1_0": ("T5ForConditionalGeneration", None), "t5_v1_1": ("T5ForConditionalGeneration", None),
    "gpt_neox": ("GPTNeoXForCausalLM", None), "bloom": ("BloomForCausalLM", None),
    "opt_post_ln": ("OPTForCausalLM", None), "opt_no_linear_bias": ("OPTForCausalLM", "opt"),
    "qwen2": ("Qwen2ForCausalLM", None), "qwen2_window": ("Qwen2ForCausalLM", None), "qwen3": ("Qwen3ForCausalLM", None),
    "gemma": ("GemmaForCausalLM", None), "falcon_7b": ("FalconForCausalLM", None),
    "falcon_40b": ("FalconForCausalLM", "falcon"), "falcon_sequential": ("FalconForCausalLM", "falcon"),
    "mixtral": ("MixtralForCausalLM", None),
    "switch": ("SwitchTransformersForConditionalGeneration", None),
}


def _course(name: str, **changes) -> torch.nn.Module:
    """A course model whose every weight matters: norm gains near 1, biases and the rest random."""
    model = build_model(CONFIGS[name].replace(**changes), seed=0)
    g = torch.Generator().manual_seed(1)
    scale = 0.3 if model.config.logit_scale != 1.0 else 0.12  # T5 v1.0 shrinks its logits by d_model**-0.5
    with torch.no_grad():
        for pname, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_gain = "norm" in pname and pname.endswith("weight")
            p.copy_((1.0 if is_gain else 0.0) + (0.2 if is_gain else scale) * noise)
    return model.eval()


def _ids(B: int = 2, T: int = 12, seed: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def _logits(model, hf: bool, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    encdec = (model.config.is_encoder_decoder if hf else model.config.arch == "encoder_decoder")
    with torch.no_grad():
        if hf:
            return (model(input_ids=src, decoder_input_ids=tgt) if encdec else model(src)).logits
        return model(src, tgt) if encdec else model(src)


def _resolved(config: ModelConfig) -> dict:
    """A config as its values in effect (None fields replaced by what they resolve to)."""
    d = dataclasses.asdict(config)
    for name in ("head_dim", "n_kv_heads", "d_ff", "n_encoder_layers", "final_norm", "norm_bias", "rotary_dim", "attn_scale",
                 "qkv_bias"):
        d[name] = getattr(config, f"resolved_{name}")
    d["attn_scale"] = round(d["attn_scale"], 9)
    d.pop("extra", None)
    return d


@pytest.mark.parametrize("name", list(CONFIGS))
def test_to_hf_equal_logits_save_load_and_back(name, tmp_path):
    ours = _course(name)
    hf_class, model_type = EXPECTED[name]
    hf = to_hf(ours, model_type)
    assert type(hf).__name__ == hf_class
    src, tgt = _ids(T=12), _ids(T=7, seed=3)
    expected = _logits(ours, False, src, tgt)
    scale = float(expected.abs().max())
    assert scale > 0.5  # large enough that the tolerance means something
    # the two implementations sum in different orders; T5 v1.0's unscaled attention (no 1/sqrt(Dh)) makes its
    # softmax the most sensitive to that: 1.5e-5 at a logit scale of 1.07 under the Makefile's AVX2 pin
    tol = 2 * ATOL * max(1.0, scale)
    torch.testing.assert_close(_logits(hf, True, src, tgt), expected, atol=tol, rtol=0)

    hf.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / "model.safetensors")
    auto = transformers.AutoModelForSeq2SeqLM if hf.config.is_encoder_decoder else transformers.AutoModelForCausalLM
    reloaded = auto.from_pretrained(tmp_path).eval()
    assert type(reloaded).__name__ == hf_class
    torch.testing.assert_close(_logits(reloaded, True, src, tgt), expected, atol=tol, rtol=0)

    back = from_hf(reloaded)
    assert _resolved(back.config) == _resolved(ours.config)
    sd, back_sd = ours.state_dict(), back.state_dict()
    assert set(sd) == set(back_sd)
    for key in sd:
        torch.testing.assert_close(back_sd[key], sd[key], atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("name", ["llama", "gpt2", "t5_v1_0", "t5_v1_1", "gpt_neox", "bloom", "opt_post_ln", "qwen2",
                                  "qwen3", "gemma", "falcon_7b", "falcon_40b", "mixtral", "switch"])
def test_hf_generate_on_a_saved_course_model_equals_ours(name, tmp_path):
    # transformers' encoder-decoder cache sizes itself by the encoder: equal stacks for generate
    ours = _course(name, n_encoder_layers=None) if name.startswith(("t5", "switch")) else _course(name)
    to_hf(ours, EXPECTED[name][1]).save_pretrained(tmp_path)
    prompt = _ids(B=1, T=6, seed=5)
    kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False, use_cache=True,
              return_dict_in_generate=True, output_logits=True)
    if ours.config.arch == "encoder_decoder":
        hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
        out = hf.generate(prompt, **kw)
        assert torch.equal(generate_seq2seq(ours, prompt, 12, greedy=True), out.sequences)
        with torch.no_grad():
            steps = ours(prompt, out.sequences[:, :-1])
    else:
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        out = hf.generate(prompt, **kw)
        assert torch.equal(generate(ours, prompt, 12, greedy=True), out.sequences)
        with torch.no_grad():
            steps = ours(out.sequences[:, :-1])[:, prompt.shape[1] - 1 :]
        assert_batched_greedy_equal(hf, ours)  # left-padded prompts of 7, 4 and 2 tokens in one batch
    # random models often repeat one token: compare every step's logits as well
    torch.testing.assert_close(steps, torch.stack(out.logits, 1), atol=ATOL, rtol=0)


def test_a_config_no_hf_class_expresses_names_its_field():
    sinusoidal = build_model(ModelConfig(vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=1, position="sinusoidal"))
    with pytest.raises(ValueError, match=r"no transformers class.*gpt2: GPT2LMHeadModel cannot express position='sinusoidal'"):
        to_hf(sinusoidal)
    gpt2_like = build_model(CONFIGS["gpt2"])
    with pytest.raises(ValueError, match=r"LlamaForCausalLM cannot express norm='layernorm'; it needs norm='rmsnorm'"):
        to_hf(gpt2_like, "llama")
    with pytest.raises(ValueError, match=r"T5ForConditionalGeneration cannot express arch='decoder'"):
        to_hf(gpt2_like, "t5")
    sandwich = build_model(CONFIGS["gpt2"].replace(norm_placement="sandwich"))
    with pytest.raises(ValueError, match="norm_placement='sandwich'"):
        to_hf(sandwich)
    prefix = build_model(CONFIGS["llama"].replace(mask="prefix"))
    with pytest.raises(ValueError, match="LlamaForCausalLM cannot express mask='prefix'"):
        to_hf(prefix, "llama")
    with pytest.raises(ValueError, match="does not know model_type='mistral'"):
        to_hf(gpt2_like, "mistral")
    with pytest.raises(ValueError, match="llmcourse model"):
        to_hf(torch.nn.Linear(2, 2))


def test_gpt2_and_opt_share_a_config_and_the_first_wins():
    """A learned-position ReLU LayerNorm decoder fits GPT-2 and OPT; by default GPT-2, on request OPT."""
    ours = build_model(CONFIGS["opt_no_linear_bias"].replace(bias=True, norm_bias=None)).eval()
    assert type(to_hf(ours)).__name__ == "GPT2LMHeadModel"
    assert type(to_hf(ours, "opt")).__name__ == "OPTForCausalLM"


def test_a_field_the_hf_config_would_not_carry_is_named():
    """to_hf reads the HF config back; a converter that drops or changes a field is caught by name."""
    from llmcourse.hf import converter
    from llmcourse.hf.base import convert_to_hf

    llama = converter("llama")
    forgetful = dataclasses.replace(llama, hf_config=lambda c: {**llama.hf_config(c), "rms_norm_eps": 1e-3})
    with pytest.raises(ValueError, match=r"cannot carry norm_eps=1e-06 \(would read back as 0.001\)"):
        convert_to_hf(forgetful, _course("llama"))
    short = dataclasses.replace(llama, hf_config=lambda c: {**llama.hf_config(c), "max_position_embeddings": 16})
    with pytest.raises(ValueError, match=r"max_seq_len=64 \(would read back as 16\)"):
        convert_to_hf(short, _course("llama"))
