"""Parity of llmcourse.hf.from_hf with OPT built from tiny random configs (no downloads).

OPT: learned positions read two rows further down the table (offset 2), ReLU,
biases everywhere, tied head; pre-LN, or post-LN without a final norm (the 350m
layout); enable_bias=False keeps the LayerNorm biases. Logits equal within 1e-5,
in one pass and with a KV cache; greedy generations identical.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hf_parity import VOCAB, assert_greedy_equal, assert_parity, ids, randomize  # noqa: E402

from llmcourse.hf import from_hf  # noqa: E402


def _opt(**kw):
    from transformers import OPTConfig, OPTForCausalLM

    base = dict(
        vocab_size=VOCAB, hidden_size=48, ffn_dim=80, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, word_embed_proj_dim=48, attn_implementation="eager",
    )
    return randomize(OPTForCausalLM(OPTConfig(**{**base, **kw})), scale=0.1)


def _assert_parity(hf, T: int = 12):
    return assert_parity(hf, T=T, cached=True)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_opt_pre_ln(n_layers):
    hf = _opt(num_hidden_layers=n_layers)
    ours = _assert_parity(hf)
    cfg = ours.config
    assert (cfg.position, cfg.norm, cfg.norm_placement, cfg.ffn, cfg.bias, cfg.tie_embeddings) == (
        "learned", "layernorm", "pre", "relu", True, True)
    assert cfg.n_layers == n_layers and cfg.resolved_final_norm and cfg.max_seq_len == 32
    # the course's table is HF's without its first two rows
    torch.testing.assert_close(ours.decoder.positions.weight, hf.model.decoder.embed_positions.weight[2:], atol=0, rtol=0)


def test_opt_whole_position_table_is_used():
    """The last position reads the table's last row: an off-by-two would fail or shift every position."""
    _assert_parity(_opt(num_hidden_layers=1), T=32)


def test_opt_post_ln_350m_layout():
    hf = _opt(do_layer_norm_before=False)
    assert hf.model.decoder.final_layer_norm is None
    ours = _assert_parity(hf)
    assert ours.config.norm_placement == "post" and not ours.config.resolved_final_norm


def test_opt_without_linear_biases_keeps_norm_biases():
    hf = _opt(enable_bias=False)
    ours = _assert_parity(hf)
    assert not ours.config.bias and ours.config.resolved_norm_bias


def test_opt_untied_head_and_removed_final_norm():
    from transformers import OPTConfig, OPTForCausalLM

    hf = OPTForCausalLM(OPTConfig(
        vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=32, word_embed_proj_dim=32, tie_word_embeddings=False, _remove_final_layer_norm=True,
        activation_function="gelu", attn_implementation="eager",
    ))
    ours = _assert_parity(randomize(hf, scale=0.1))
    assert not ours.config.tie_embeddings and not ours.config.resolved_final_norm and ours.config.ffn == "gelu"


def test_opt_greedy_generation():
    hf = _opt()
    assert_greedy_equal(hf, from_hf(hf), ids(B=1, T=5, seed=3), 20)


def test_opt_unsupported_variants_are_named():
    with pytest.raises(ValueError, match=r"word_embed_proj_dim=24 differs from hidden_size=48.*project_in"):
        from_hf(_opt(word_embed_proj_dim=24))
    with pytest.raises(ValueError, match="layer_norm_elementwise_affine=False"):
        from_hf(_opt(layer_norm_elementwise_affine=False))
    with pytest.raises(ValueError, match="activation_function='quick_gelu'"):
        from_hf(_opt(activation_function="quick_gelu"))
