"""Parity of llmcourse.hf.from_hf with Hugging Face decoders built from tiny random configs.

Llama (RMSNorm, SwiGLU, RoPE, grouped-query attention), GPT-NeoX (partial rotary,
parallel residual) and BLOOM (ALiBi with a head count that is not a power of two,
embedding LayerNorm): logits equal within 1e-5, in one pass and with a KV cache.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import ATOL, VOCAB, assert_cached_parity, assert_parity, ids, randomize  # noqa: E402

from llmcourse.hf import from_hf  # noqa: E402


def test_llama_grouped_query_attention():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5,
        attn_implementation="eager",
    )
    hf = randomize(LlamaForCausalLM(config))
    ours = assert_parity(hf)
    cfg = ours.config
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.ffn, cfg.norm, cfg.position, cfg.bias) == (6, 2, "swiglu", "rmsnorm", "rope", False)
    assert cfg.rope_theta == 500.0 and not cfg.tie_embeddings
    assert_cached_parity(hf, ours)


def test_llama_tied_head_and_explicit_head_dim():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=1, head_dim=12, max_position_embeddings=64, tie_word_embeddings=True,
        attn_implementation="eager",
    )
    hf = randomize(LlamaForCausalLM(config))
    ours = assert_parity(hf)
    assert ours.config.resolved_head_dim == 12 and ours.config.tie_embeddings


def test_gpt_neox_partial_rotary_parallel_residual():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, rotary_pct=0.25, rotary_emb_base=1000, use_parallel_residual=True,
        attn_implementation="eager",
    )
    hf = randomize(GPTNeoXForCausalLM(config))
    ours = assert_parity(hf)
    cfg = ours.config
    assert cfg.resolved_rotary_dim == 4 and cfg.resolved_head_dim == 16  # a quarter of each head rotates
    assert cfg.parallel_residual and not cfg.tie_embeddings and cfg.rope_theta == 1000.0
    assert_cached_parity(hf, ours)


def test_gpt_neox_sequential_residual():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, rotary_pct=0.5, use_parallel_residual=False, attn_implementation="eager",
    )
    ours = assert_parity(randomize(GPTNeoXForCausalLM(config)))
    assert not ours.config.parallel_residual


@pytest.mark.parametrize("n_heads", [6, 8])
def test_bloom_alibi(n_heads):
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(vocab_size=VOCAB, hidden_size=8 * n_heads, n_layer=2, n_head=n_heads, attn_implementation="eager")
    hf = randomize(BloomForCausalLM(config))
    ours = assert_parity(hf, T=16)
    cfg = ours.config
    assert cfg.position == "alibi" and cfg.embed_norm and cfg.ffn == "gelu_tanh" and cfg.tie_embeddings
    assert_cached_parity(hf, ours, T=16)


def test_bloom_runs_past_its_context_with_extrapolate():
    """ALiBi has no table: with extrapolate=True the converted model still equals BLOOM past max_seq_len."""
    from transformers import BloomConfig, BloomForCausalLM

    hf = randomize(BloomForCausalLM(BloomConfig(vocab_size=VOCAB, hidden_size=24, n_layer=1, n_head=3)))
    ours = from_hf(hf)
    ours.config = ours.config.replace(max_seq_len=8)
    x = ids(T=20)
    with pytest.raises(ValueError, match="extrapolate=True"):
        ours(x)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, extrapolate=True), hf(x).logits, atol=ATOL, rtol=0)


def test_unsupported_variants_raise_clear_errors():
    from transformers import BloomConfig, BloomForCausalLM, LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        attention_bias=True, mlp_bias=False,
    ))
    with pytest.raises(ValueError, match="mlp_bias"):
        from_hf(llama)
    bloom = BloomForCausalLM(BloomConfig(
        vocab_size=VOCAB, hidden_size=16, n_layer=1, n_head=2, apply_residual_connection_post_layernorm=True,
    ))
    with pytest.raises(ValueError, match="apply_residual_connection_post_layernorm"):
        from_hf(bloom)
