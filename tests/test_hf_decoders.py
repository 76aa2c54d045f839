"""Parity of llmcourse.hf.from_hf with Hugging Face decoders built from tiny random configs.

Llama (RMSNorm, SwiGLU, RoPE, grouped-query attention), GPT-NeoX (partial rotary,
parallel residual) and BLOOM (ALiBi with a head count that is not a power of two,
embedding LayerNorm): logits equal within 1e-5, in one pass and with a KV cache.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llmcourse.hf import from_hf  # noqa: E402

ATOL = 1e-5
VOCAB = 97


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name or "ln_" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)  # gains near 1, biases near 0
            else:
                p.copy_(0.08 * noise)
    return model.eval()


def _ids(B: int = 2, T: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def _assert_parity(hf_model: torch.nn.Module, T: int = 12) -> torch.nn.Module:
    ours = from_hf(hf_model)
    ids = _ids(T=T)
    with torch.no_grad():
        expected = hf_model(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    return ours


def _assert_cached_parity(hf_model: torch.nn.Module, ours: torch.nn.Module, prompt: int = 5, T: int = 12) -> None:
    """Our incremental decoding (prompt, then one token at a time) gives HF's full-sequence logits."""
    ids = _ids(T=T)
    with torch.no_grad():
        expected = hf_model(ids).logits
        cache = ours.new_cache()
        steps = [ours(ids[:, :prompt], cache=cache)]
        steps += [ours(ids[:, t : t + 1], cache=cache) for t in range(prompt, T)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=ATOL, rtol=0)


def test_llama_grouped_query_attention():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5,
        attn_implementation="eager",
    )
    hf = _randomize(LlamaForCausalLM(config))
    ours = _assert_parity(hf)
    cfg = ours.config
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.ffn, cfg.norm, cfg.position, cfg.bias) == (6, 2, "swiglu", "rmsnorm", "rope", False)
    assert cfg.rope_theta == 500.0 and not cfg.tie_embeddings
    _assert_cached_parity(hf, ours)


def test_llama_tied_head_and_explicit_head_dim():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=1, head_dim=12, max_position_embeddings=64, tie_word_embeddings=True,
        attn_implementation="eager",
    )
    hf = _randomize(LlamaForCausalLM(config))
    ours = _assert_parity(hf)
    assert ours.config.resolved_head_dim == 12 and ours.config.tie_embeddings


def test_gpt_neox_partial_rotary_parallel_residual():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, rotary_pct=0.25, rotary_emb_base=1000, use_parallel_residual=True,
        attn_implementation="eager",
    )
    hf = _randomize(GPTNeoXForCausalLM(config))
    ours = _assert_parity(hf)
    cfg = ours.config
    assert cfg.resolved_rotary_dim == 4 and cfg.resolved_head_dim == 16  # a quarter of each head rotates
    assert cfg.parallel_residual and not cfg.tie_embeddings and cfg.rope_theta == 1000.0
    _assert_cached_parity(hf, ours)


def test_gpt_neox_sequential_residual():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=64, rotary_pct=0.5, use_parallel_residual=False, attn_implementation="eager",
    )
    ours = _assert_parity(_randomize(GPTNeoXForCausalLM(config)))
    assert not ours.config.parallel_residual


@pytest.mark.parametrize("n_heads", [6, 8])
def test_bloom_alibi(n_heads):
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(vocab_size=VOCAB, hidden_size=8 * n_heads, n_layer=2, n_head=n_heads, attn_implementation="eager")
    hf = _randomize(BloomForCausalLM(config))
    ours = _assert_parity(hf, T=16)
    cfg = ours.config
    assert cfg.position == "alibi" and cfg.embed_norm and cfg.ffn == "gelu_tanh" and cfg.tie_embeddings
    _assert_cached_parity(hf, ours, T=16)


def test_bloom_runs_past_its_context_with_extrapolate():
    """ALiBi has no table: with extrapolate=True the converted model still equals BLOOM past max_seq_len."""
    from transformers import BloomConfig, BloomForCausalLM

    hf = _randomize(BloomForCausalLM(BloomConfig(vocab_size=VOCAB, hidden_size=24, n_layer=1, n_head=3)))
    ours = from_hf(hf)
    ours.config = ours.config.replace(max_seq_len=8)
    ids = _ids(T=20)
    with pytest.raises(ValueError, match="extrapolate=True"):
        ours(ids)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, extrapolate=True), hf(ids).logits, atol=ATOL, rtol=0)


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
