"""The declarative name maps of llmcourse.hf.base: templates, transforms and the loader's checks.

Every converter's rules must consume every HF tensor and fill every course tensor;
a tensor left over or missing is an error that lists its name.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from llmcourse.config import ModelConfig  # noqa: E402
from llmcourse.hf import CONVERTERS, converter, from_hf  # noqa: E402
from llmcourse.hf.base import (  # noqa: E402
    CONV1D, QKV_PER_HEAD, QKV_THIRDS_CONV1D, Rule, course_state_dict, fuse_qkv, offset_rows, split_fused_qkv,
)
from llmcourse.models import build_model  # noqa: E402


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )).eval()


def test_templates_carry_placeholders_both_ways():
    rule = Rule("model.layers.{i}.self_attn.{proj:q_proj|o_proj}.{p}", "decoder.blocks.{i}.attn.{proj}.{p}")
    m = rule.hf_regex.fullmatch("model.layers.11.self_attn.o_proj.bias")
    assert m.groupdict() == {"i": "11", "proj": "o_proj", "p": "bias"}
    assert rule.hf_regex.fullmatch("model.layers.1.self_attn.k_proj.weight") is None  # not in the alternation
    assert rule.hf_regex.fullmatch("model.layers.x.self_attn.q_proj.weight") is None  # {i} is a number
    assert rule.course_regex.fullmatch("decoder.blocks.3.attn.q_proj.weight").groupdict()["i"] == "3"
    with pytest.raises(ValueError, match="only on the course side"):
        Rule("a.{i}.weight", "b.{j}.weight")


@pytest.mark.parametrize("transform", [CONV1D, QKV_PER_HEAD, QKV_THIRDS_CONV1D])
@pytest.mark.parametrize("shape", [(24, 8), (24,)])
def test_transforms_invert(transform, shape):
    cfg = ModelConfig(d_model=8, n_heads=2)
    t = torch.randn(*shape)
    parts = transform.to_course(t, cfg)
    assert torch.equal(transform.to_hf(parts, cfg), t)


def test_offset_rows_drops_and_restores_the_unused_rows():
    t, cfg = torch.randn(10, 4), ModelConfig()
    (course,) = offset_rows(2).to_course(t, cfg)
    assert torch.equal(course, t[2:])
    back = offset_rows(2).to_hf((course,), cfg)
    assert back.shape == t.shape and torch.equal(back[2:], t[2:]) and not back[:2].any()


def test_conv1d_transposes_weights_only():
    w, b = torch.randn(8, 24), torch.randn(24)  # Conv1D (in, out)
    assert CONV1D.to_course(w, ModelConfig())[0].shape == (24, 8)
    assert torch.equal(CONV1D.to_course(b, ModelConfig())[0], b)
    q, k, v = QKV_THIRDS_CONV1D.to_course(w, ModelConfig())
    assert torch.equal(q, w[:, :8].t()) and torch.equal(v, w[:, 16:].t())


def test_fused_qkv_is_grouped_per_head():
    H, Dh, D = 3, 2, 4
    q, k, v = (torch.full((H * Dh, D), float(j)) for j in range(3))
    fused = fuse_qkv(q, k, v, H)  # (H * 3 * Dh, D)
    assert fused[:, 0].tolist() == [0, 0, 1, 1, 2, 2] * H  # head by head: its q rows, k rows, v rows
    assert all(torch.equal(a, b) for a, b in zip(split_fused_qkv(fused, H), (q, k, v)))


def test_every_family_has_rules_that_compile_and_a_config_both_ways():
    for model_type in CONVERTERS:
        conv = converter(model_type)
        assert conv.model_type == model_type and conv.rules
        assert hasattr(transformers, conv.hf_class) and hasattr(transformers, conv.hf_config_class)


def test_loader_lists_leftover_and_missing_tensors():
    hf = _llama()
    conv = converter("llama")
    cfg = conv.model_config(hf.config)
    expected = build_model(cfg).state_dict()
    sd = dict(hf.state_dict())
    assert set(course_state_dict(conv, sd, cfg, expected)) == set(expected)
    extra = dict(sd, **{"model.layers.0.self_attn.q_norm.weight": torch.ones(8)})
    with pytest.raises(ValueError, match=r"HF tensors no rule converts: model\.layers\.0\.self_attn\.q_norm\.weight"):
        course_state_dict(conv, extra, cfg, expected)
    del sd["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match=r"course tensors no HF tensor filled: decoder\.blocks\.1\.ffn\.up_proj\.weight"):
        course_state_dict(conv, sd, cfg, expected)


def test_loader_names_shapes_that_differ():
    hf = _llama()
    conv = converter("llama")
    cfg = conv.model_config(hf.config)
    wrong = build_model(cfg.replace(d_ff=72)).state_dict()  # a config that disagrees with the weights
    with pytest.raises(ValueError, match=r"shapes differ: decoder\.blocks\.0\.ffn\.down_proj\.weight \(32, 64\)"):
        course_state_dict(conv, hf.state_dict(), cfg, wrong)


def test_from_hf_rejects_a_model_without_its_head():
    from transformers import LlamaModel

    with pytest.raises(ValueError, match="LlamaForCausalLM"):
        from_hf(LlamaModel(_llama().config))


def test_unknown_model_type_names_the_supported_ones():
    from transformers import MistralConfig, MistralForCausalLM

    hf = MistralForCausalLM(MistralConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(ValueError, match=r"does not know model_type='mistral'; .*gpt2.*llama"):
        from_hf(hf)


def test_name_map_is_readable_data():
    """A reader can print a family's map: the untied head appears only when the config unties it."""
    conv = converter("gpt2")
    tied = conv.name_map(ModelConfig(tie_embeddings=True))
    assert ("transformer.h.{i}.attn.c_attn.{p}", ("decoder.blocks.{i}.attn.q_proj.{p}", "decoder.blocks.{i}.attn.k_proj.{p}",
            "decoder.blocks.{i}.attn.v_proj.{p}"), QKV_THIRDS_CONV1D.name) in tied
    assert all(hf != "lm_head.weight" for hf, _, _ in tied)
    assert ("lm_head.weight", ("lm_head.weight",), "identity") in conv.name_map(ModelConfig(tie_embeddings=False))


def test_tying_is_read_from_the_weights():
    """An untied GPT-2 converts untied; a head with its own values is untied whatever the config says."""
    from transformers import GPT2Config, GPT2LMHeadModel

    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=16, n_embd=32, n_layer=1, n_head=2,
                                      tie_word_embeddings=False)).eval()
    assert gpt2.lm_head.weight is not gpt2.transformer.wte.weight
    ours = from_hf(gpt2)
    assert not ours.config.tie_embeddings
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), gpt2(ids).logits, atol=1e-5, rtol=0)
    llama = _llama()
    llama.config.tie_word_embeddings = True  # says tied, but the head holds other values
    assert not from_hf(llama).config.tie_embeddings
    llama.lm_head.weight = llama.model.embed_tokens.weight  # tied for real
    assert from_hf(llama).config.tie_embeddings
