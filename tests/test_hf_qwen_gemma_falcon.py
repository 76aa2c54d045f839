"""Parity of llmcourse.hf.from_hf with Qwen2, Qwen3, Gemma and Falcon built from tiny random configs.

Qwen2: biased q/k/v, unbiased output and FFN (``qkv_bias``), an all-layer sliding window.
Qwen3: QK-norm (RMSNorm per head over Dh, before RoPE) and its own head_dim.
Gemma: GeGLU with the tanh GeLU, RMSNorm times (1 + w), embeddings times sqrt(D), head_dim
apart from D / H, tied head. Falcon: the three block layouts (parallel with one norm,
the new architecture's two norms and grouped-query attention, sequential), multi-query
and multi-head. Odd head counts, several grouped-query ratios, a vocabulary of 97: logits
equal within 1e-5, in one pass and with the KV cache. Variants the course cannot express
raise ValueError naming the HF field (before any weights load, in from_pretrained); a
course config a family cannot express is refused by to_hf naming the course field.
Generation and from_pretrained of saved folders: tests/test_hf_families.py; to_hf round
trips: tests/test_hf_to_hf.py.
"""

import math
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import VOCAB, assert_parity, randomize  # noqa: E402

from llmcourse import ModelConfig, build_model  # noqa: E402
from llmcourse.hf import from_hf, from_pretrained, to_hf  # noqa: E402
from llmcourse.hf.base import QKV_PER_HEAD, QKV_PER_KV_GROUP  # noqa: E402

LLAMA_LIKE = dict(vocab_size=VOCAB, intermediate_size=72, num_hidden_layers=2, max_position_embeddings=64,
                  attn_implementation="eager")


def _qwen2(**kw):
    return randomize(transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**{**LLAMA_LIKE, **kw})))


def _qwen3(**kw):
    return randomize(transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**{**LLAMA_LIKE, **kw})))


def _gemma(**kw):
    return randomize(transformers.GemmaForCausalLM(transformers.GemmaConfig(**{**LLAMA_LIKE, "pad_token_id": None, **kw})))


def _falcon(**kw):
    base = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                max_position_embeddings=64, attn_implementation="eager")
    return randomize(transformers.FalconForCausalLM(transformers.FalconConfig(**{**base, **kw})))


# --- Qwen2 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads, kv", [(5, 1), (6, 2), (4, 4)])
def test_qwen2_biases_on_qkv_only(heads, kv):
    hf = _qwen2(hidden_size=8 * heads, num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=heads == 4)
    ours = assert_parity(hf, cached=True)
    cfg = ours.config
    assert (cfg.bias, cfg.qkv_bias, cfg.n_heads, cfg.resolved_n_kv_heads) == (False, True, heads, kv)
    attn = ours.decoder.blocks[0].attn
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None and ours.decoder.blocks[0].ffn.up_proj.bias is None
    assert cfg.tie_embeddings == (heads == 4)


def test_qwen2_sliding_window_on_every_layer():
    hf = _qwen2(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                sliding_window=5, max_window_layers=0)
    ours = assert_parity(hf, T=14, cached=True)  # 14 > 5: the window cuts
    assert ours.config.sliding_window == 5
    full = from_hf(_qwen2(hidden_size=32, num_attention_heads=4, num_key_value_heads=2))
    assert full.config.sliding_window is None


def test_qwen2_window_on_some_layers_is_refused():
    hf = _qwen2(hidden_size=32, num_attention_heads=4, use_sliding_window=True, sliding_window=5, max_window_layers=1)
    with pytest.raises(ValueError, match=r"max_window_layers=1 .*only max_window_layers=0"):
        from_hf(hf)


# --- Qwen3 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads, kv, head_dim", [(6, 3, 10), (5, 1, 8), (4, 2, 16)])
def test_qwen3_qk_norm(heads, kv, head_dim):
    hf = _qwen3(hidden_size=48, num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim)
    ours = assert_parity(hf, cached=True)
    cfg = ours.config
    assert cfg.qk_norm and not cfg.bias and cfg.resolved_head_dim == head_dim and cfg.resolved_n_kv_heads == kv
    attn = ours.decoder.blocks[1].attn
    torch.testing.assert_close(attn.k_norm.weight, hf.model.layers[1].self_attn.k_norm.weight, atol=0, rtol=0)
    assert attn.q_norm.weight.shape == (head_dim,) and attn.q_norm.eps == hf.config.rms_norm_eps


def test_qwen3_qk_norm_is_needed():
    """The norms' random gains matter: without qk_norm the same weights give other logits."""
    hf = _qwen3(hidden_size=48, num_attention_heads=6, num_key_value_heads=3, head_dim=10)
    ours = from_hf(hf)
    x = torch.randint(0, VOCAB, (1, 9))
    plain = build_model(ours.config.replace(qk_norm=False)).eval()
    plain.load_state_dict({k: v for k, v in ours.state_dict().items() if "q_norm" not in k and "k_norm" not in k})
    with torch.no_grad():
        assert (plain(x) - hf(x).logits).abs().max() > 1e-2


# --- Gemma ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads, kv, head_dim", [(3, 1, 20), (4, 2, 16), (6, 3, 8)])
def test_gemma(heads, kv, head_dim):
    hf = _gemma(hidden_size=48, num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim)
    ours = assert_parity(hf, cached=True)
    cfg = ours.config
    assert (cfg.ffn, cfg.norm, cfg.norm_gain_offset, cfg.bias, cfg.tie_embeddings) == ("geglu_tanh", "rmsnorm", 1.0, False, True)
    assert cfg.embed_scale == math.sqrt(48) and cfg.resolved_head_dim == head_dim
    # the weights load unchanged: the offset lives in the config, not in the tensors
    torch.testing.assert_close(ours.decoder.final_norm.weight, hf.model.norm.weight, atol=0, rtol=0)


def test_gemma_fresh_weights_start_at_gain_one():
    """transformers initialises Gemma's norm weights to 0 (gain 1); so does the course with norm_gain_offset=1."""
    hf = transformers.GemmaForCausalLM(transformers.GemmaConfig(**{**LLAMA_LIKE, "hidden_size": 32,
                                                                     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}))
    ours = build_model(from_hf(hf).config)
    assert not hf.model.norm.weight.any() and not ours.decoder.final_norm.weight.any()


# --- Falcon --------------------------------------------------------------------------------------
FALCON_LAYOUTS = {
    # name: (HF kwargs, course (n_kv_heads, parallel_residual, parallel_shared_norm))
    "7b_parallel_multi_query": (dict(), (1, True, True)),
    "40b_new_architecture": (dict(new_decoder_architecture=True, num_kv_heads=2, bias=True), (2, True, False)),
    "new_architecture_one_norm": (dict(new_decoder_architecture=True, num_kv_heads=3, num_ln_in_parallel_attn=1),
                                  (3, True, True)),
    "new_architecture_mha": (dict(new_decoder_architecture=True, num_kv_heads=6), (6, True, False)),
    "sequential_multi_head": (dict(parallel_attn=False, multi_query=False, bias=True), (6, False, False)),
    "sequential_multi_query": (dict(parallel_attn=False, activation="gelu_pytorch_tanh"), (1, False, False)),
}


@pytest.mark.parametrize("layout", list(FALCON_LAYOUTS))
def test_falcon_layouts(layout):
    kw, (kv, parallel, shared) = FALCON_LAYOUTS[layout]
    ours = assert_parity(_falcon(**kw), cached=True)
    cfg = ours.config
    assert (cfg.resolved_n_kv_heads, cfg.parallel_residual, cfg.parallel_shared_norm) == (kv, parallel, shared)
    assert cfg.bias == kw.get("bias", False) and cfg.resolved_norm_bias and cfg.tie_embeddings
    assert (ours.decoder.blocks[0].ffn_norm is None) == shared


def test_falcon_fused_qkv_layout():
    """Grouped per kv head (K, H/K + 2, Dh); with K = H it is BLOOM's and NeoX's (H, 3, Dh)."""
    H, Dh = 6, 2
    for K in (1, 2, 3, 6):
        cfg = ModelConfig(d_model=H * Dh, n_heads=H, n_kv_heads=K)
        fused = torch.randn((H + 2 * K) * Dh, 5)
        q, k, v = QKV_PER_KV_GROUP.to_course(fused, cfg)
        assert (q.shape[0], k.shape[0], v.shape[0]) == (H * Dh, K * Dh, K * Dh)
        assert torch.equal(QKV_PER_KV_GROUP.to_hf((q, k, v), cfg), fused)
        groups = fused.reshape(K, H // K + 2, Dh, 5)
        assert torch.equal(k.reshape(K, Dh, 5), groups[:, -2]) and torch.equal(q.reshape(K, H // K, Dh, 5), groups[:, :-2])
    mha = ModelConfig(d_model=H * Dh, n_heads=H)
    fused = torch.randn(3 * H * Dh)
    assert all(torch.equal(a, b) for a, b in zip(QKV_PER_KV_GROUP.to_course(fused, mha), QKV_PER_HEAD.to_course(fused, mha)))


# --- what does not convert -----------------------------------------------------------------------
@pytest.mark.parametrize("build, kw, field", [
    (_qwen3, dict(hidden_size=32, num_attention_heads=4, head_dim=8, attention_bias=True), "attention_bias=True"),
    (_gemma, dict(hidden_size=32, num_attention_heads=4, head_dim=8, attention_bias=True), "attention_bias=True"),
    (_gemma, dict(hidden_size=32, num_attention_heads=4, head_dim=8, use_bidirectional_attention=True),
     "use_bidirectional_attention=True"),
    (_qwen2, dict(hidden_size=32, num_attention_heads=4, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                          "rope_theta": 1e4}), "rope_type='linear'"),
    (_falcon, dict(alibi=True), "alibi=True"),
    (_falcon, dict(activation="quick_gelu"), "activation='quick_gelu'"),
])
def test_unsupported_variants_name_the_hf_field(build, kw, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        from_hf(build(**kw))


@pytest.mark.parametrize("kw, field", [
    (dict(new_decoder_architecture=True, parallel_attn=False), "new_decoder_architecture=True with parallel_attn=False"),
    (dict(parallel_attn=True, num_ln_in_parallel_attn=2), "num_ln_in_parallel_attn=2 with new_decoder_architecture=False"),
])
def test_falcon_layouts_transformers_cannot_run_are_refused(kw, field):
    """These configs build modules their forward does not use; the converter names the fields instead of failing later."""
    config = transformers.FalconConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=1, num_attention_heads=6, **kw)
    from llmcourse.hf.falcon import model_config

    with pytest.raises(ValueError, match=re.escape(field)):
        model_config(config)


def test_from_pretrained_refuses_a_variant_before_the_weights_and_names_missing_weights(tmp_path):
    transformers.FalconConfig(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, alibi=True).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="alibi=True"):  # no weights in the folder: it did not try to load them
        from_pretrained(tmp_path)
    transformers.Qwen3Config(vocab_size=VOCAB, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                             head_dim=8).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="could not load the weights"):
        from_pretrained(tmp_path)


def test_to_hf_names_the_course_field_a_family_cannot_express():
    base = ModelConfig(vocab_size=VOCAB, d_model=32, n_heads=4, n_layers=1, norm="rmsnorm", ffn="swiglu",
                       position="rope", bias=False)
    cases = [
        (base, "qwen3", r"Qwen3ForCausalLM cannot express qk_norm=False; it needs qk_norm=True"),
        (base, "qwen2", r"Qwen2ForCausalLM cannot express qkv_bias=False; it needs qkv_bias=True"),
        (base, "gemma", r"GemmaForCausalLM cannot express ffn='swiglu'|norm_gain_offset=0.0"),
        (base.replace(ffn="geglu_tanh", norm_gain_offset=1.0, embed_scale=2.0), "gemma",
         r"cannot express embed_scale=2.0; it needs embed_scale=sqrt\(d_model\) = 5.65"),
        (base.replace(qk_norm=True), "llama", r"LlamaForCausalLM cannot express qk_norm=True"),
        (base.replace(qkv_bias=True), "llama", r"LlamaForCausalLM cannot express qkv_bias=True; it needs qkv_bias=bias"),
        (base.replace(norm="layernorm", norm_bias=True, ffn="gelu", n_kv_heads=2), "falcon",
         r"FalconForCausalLM cannot express n_kv_heads=2; it needs n_kv_heads=1 or n_heads \(4\)"),
        (base.replace(norm="layernorm", ffn="gelu", parallel_residual=True, parallel_shared_norm=True), "gpt_neox",
         r"GPTNeoXForCausalLM cannot express parallel_shared_norm=True"),
    ]
    for config, family, message in cases:
        with pytest.raises(ValueError, match=message):
            to_hf(build_model(config), family)
    # by default each lands in the one family that expresses it
    assert type(to_hf(build_model(base.replace(qkv_bias=True)))).__name__ == "Qwen2ForCausalLM"
    assert type(to_hf(build_model(base.replace(qk_norm=True)))).__name__ == "Qwen3ForCausalLM"
    shared = base.replace(norm="layernorm", norm_bias=True, ffn="gelu", parallel_residual=True, parallel_shared_norm=True,
                          n_kv_heads=1)
    assert type(to_hf(build_model(shared))).__name__ == "FalconForCausalLM"
