"""Recipes (llmcourse/recipes.py): every tiny recipe builds and trains a step; the closed-form counts are exact."""

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from llmcourse.config import ModelConfig
from llmcourse.counting import count_parameters
from llmcourse.models import build_model
from llmcourse.moe import count_moe_parameters
from llmcourse.recipes import (
    RECIPES, SURVEY_MODELS, active_param_count, describe, forward_flops, human, non_embedding_params,
    param_count, recipe, training_flops, flops_per_token,
)

NAMES = list(RECIPES)
V = 81  # the course corpus's character vocabulary


def _forward(model, cfg, ids):
    if cfg.arch == "encoder_decoder":
        return model(ids, ids[:, : ids.shape[1] // 2])
    if cfg.mask == "prefix":
        return model(ids, prefix_len=ids.shape[1] // 2)
    return model(ids)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_recipe_builds_runs_forward_backward(name):
    cfg = recipe(name, "tiny", vocab_size=V)
    model = build_model(cfg, seed=0)
    ids = torch.randint(0, V, (2, cfg.max_seq_len), generator=torch.Generator().manual_seed(0))
    logits = _forward(model, cfg, ids)
    assert logits.shape[0] == 2 and logits.shape[-1] == V
    assert torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[:, : logits.shape[1]].reshape(-1))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert sum(g is not None for g in grads) > 0.9 * len(grads)  # (unchosen experts may get none)


@pytest.mark.parametrize("name", NAMES)
def test_formula_equals_counted_tiny(name):
    cfg = recipe(name, "tiny", vocab_size=V)
    model = build_model(cfg)
    total, active = count_moe_parameters(model)
    assert param_count(cfg) == count_parameters(model) == total
    assert active_param_count(cfg) == active


def _variation(rng: random.Random, base: ModelConfig) -> ModelConfig:
    n_heads = rng.choice([1, 2, 4])
    changes = dict(
        d_model=rng.choice([16, 32, 48]), n_heads=n_heads, n_layers=rng.randint(1, 3),
        n_kv_heads=rng.choice([d for d in (1, 2, 4) if n_heads % d == 0]),
        head_dim=rng.choice([None, 8]), d_ff=rng.choice([None, 40, 64]), bias=rng.random() < 0.5,
        norm=rng.choice(["layernorm", "rmsnorm"]), norm_bias=rng.choice([None, True, False]),
        ffn=rng.choice(["relu", "gelu", "swiglu", "geglu"]), tie_embeddings=rng.random() < 0.5,
        max_seq_len=rng.choice([16, 32]), embed_norm=rng.random() < 0.3, qk_norm=rng.random() < 0.3,
        vocab_size=rng.choice([11, 81]),
    )
    if base.arch == "encoder_decoder":
        changes.update(n_encoder_layers=rng.randint(1, 3), share_embeddings=rng.random() < 0.5)
    if base.n_experts:
        changes.update(n_experts=rng.choice([2, 3]), top_k=1, expert_d_ff=rng.choice([None, 24]),
                       n_shared_experts=rng.choice([0, 1]), router_bias=rng.random() < 0.5,
                       moe_every=rng.choice([1, 2]), moe_offset=rng.choice([0, 1]))
    placement = rng.choice(["pre", "post", "sandwich", "deepnorm"])
    changes.update(norm_placement=placement, final_norm=rng.choice([None, True, False]),
                   parallel_residual=placement == "pre" and rng.random() < 0.5)
    if base.position_dims == 2 and (changes["head_dim"] or changes["d_model"] // n_heads) % 4:
        changes["head_dim"] = 8
    if base.position == "t5":
        changes.update(rel_num_buckets=rng.choice([8, 32]), rel_max_distance=rng.choice([20, 128]))
    if base.position == "learned" and rng.random() < 0.5:
        changes["position"] = rng.choice(["sinusoidal", "alibi", "none"])
    if changes.get("moe_offset", 0) >= max(changes["n_layers"], changes.get("n_encoder_layers", 0)):
        changes["moe_offset"] = 0  # at least one layer with experts (a config without any is refused)
    return base.replace(**changes)


@pytest.mark.parametrize("name", NAMES)
def test_formula_equals_counted_random_variations(name):
    rng = random.Random(hash(name) % 1000)
    base = recipe(name, "tiny", vocab_size=V)
    for _ in range(6):
        cfg = _variation(rng, base)
        model = build_model(cfg)
        total, active = count_moe_parameters(model)
        assert param_count(cfg) == total, cfg
        assert active_param_count(cfg) == active, cfg


@pytest.mark.parametrize("name", [n for n in NAMES if not RECIPES[n].full.capacity_factor])
def test_forward_flops_equal_flop_counter(name):
    """Dense models and MoE without dropping: the formula equals PyTorch's FlopCounterMode exactly."""
    cfg = recipe(name, "tiny", vocab_size=V)
    model = build_model(cfg, seed=0).eval()
    ids = torch.randint(0, V, (1, cfg.max_seq_len))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        _forward(model, cfg, ids)
    expected = forward_flops(cfg, cfg.max_seq_len // 2, cfg.max_seq_len) if cfg.arch == "encoder_decoder" \
        else forward_flops(cfg)
    assert counter.get_total_flops() == expected


def test_switch_flops_without_capacity_equal_counter():
    cfg = recipe("switch", "tiny", vocab_size=V, capacity_factor=None)
    model = build_model(cfg, seed=0).eval()
    ids = torch.randint(0, V, (1, 64))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids, ids[:, :32])
    assert counter.get_total_flops() == forward_flops(cfg, 32, 64)


def test_flops_per_token_is_2n_plus_attention():
    """Kaplan's C_fwd = 2 N + 4 L T (H Dh), N the matrices a token multiplies through (head included)."""
    cfg = recipe("gpt3", "tiny", vocab_size=V)
    model = build_model(cfg)
    T = cfg.max_seq_len
    matrices = sum(p.numel() for n, p in model.named_parameters()
                   if p.dim() == 2 and not n.startswith("tok_emb") and ".positions." not in n)
    n_matmul = matrices + cfg.vocab_size * cfg.d_model  # the tied head multiplies by the embedding
    attention = 4 * cfg.n_layers * T * cfg.n_heads * cfg.resolved_head_dim
    assert flops_per_token(cfg) == 2 * n_matmul + attention
    assert n_matmul < param_count(cfg) + cfg.vocab_size * cfg.d_model  # biases, norms and positions are not matmuls
    assert training_flops(cfg, 1000) == 3 * 1000 * flops_per_token(cfg)


# --- published sizes --------------------------------------------------------------------------
# Our formula vs the paper's number. Tolerance 3% where the recipe is the published architecture;
# the rows below differ for the reason given (and checked): Gopher and Chinchilla lack Transformer-XL's
# per-layer relative projection (L D^2), GLaM's dense layers are plain GeLU here instead of GeGLU, and
# Switch-Base's "7B" is rounded from a count the paper does not give more precisely.
TOLERANCE = 0.03
KNOWN_GAPS = {"gopher": 0.09, "chinchilla": 0.09, "glam": 0.1, "switch": 0.07}


@pytest.mark.parametrize("name", NAMES)
def test_full_size_formula_near_published(name):
    r = RECIPES[name]
    ours = param_count(r.full)
    assert abs(ours / r.published_params - 1) <= KNOWN_GAPS.get(name, TOLERANCE), (name, human(ours))
    if r.published_active is not None:
        assert abs(active_param_count(r.full) / r.published_active - 1) <= KNOWN_GAPS.get(name, TOLERANCE)


@pytest.mark.parametrize("name", ["gopher", "chinchilla"])
def test_transformer_xl_projection_explains_the_gap(name):
    cfg = RECIPES[name].full
    with_rel = param_count(cfg) + cfg.n_layers * cfg.d_model**2
    assert abs(with_rel / RECIPES[name].published_params - 1) < 0.01


def test_glam_gated_dense_layers_explain_the_gap():
    cfg = RECIPES["glam"].full
    dense_layers = sum(not cfg.is_moe_layer(i) for i in range(cfg.n_layers))
    third_matrix = dense_layers * cfg.d_model * cfg.d_ff  # GeGLU's gate in the dense layers
    assert abs((active_param_count(cfg) + third_matrix) / RECIPES["glam"].published_active - 1) < 0.005
    assert abs((param_count(cfg) + third_matrix) / RECIPES["glam"].published_params - 1) < 0.04  # "1.2T" is rounded


def test_full_recipes_match_the_survey_table():
    for name in SURVEY_MODELS:
        r = RECIPES[name]
        row = dict(zip(("Type", "Size", "Norm", "Position", "Activation", "Bias", "Layers", "Heads", "d_model",
                        "Context"), r.survey))
        ours = describe(r.full)
        for col in ("Type", "Position", "Layers", "Heads", "d_model"):
            assert ours[col] == row[col], (name, col)
        for col in ("Norm", "Activation", "Bias", "Context"):
            assert row[col] == "-" or ours[col] == row[col], (name, col)


def test_recipe_keeps_architecture_at_tiny_size():
    for name in NAMES:
        full, tiny = recipe(name), recipe(name, "tiny")
        for f in ("arch", "mask", "norm", "norm_placement", "ffn", "position", "bias", "parallel_residual",
                  "tie_embeddings", "top_k", "position_dims", "attn_scale"):
            assert getattr(full, f) == getattr(tiny, f), (name, f)
        kind = [(c.resolved_n_kv_heads == 1, c.resolved_n_kv_heads == c.n_heads) for c in (full, tiny)]
        assert kind[0] == kind[1], name  # multi-query, multi-head or grouped-query at both sizes
        assert bool(full.n_experts) == bool(tiny.n_experts)


def test_palm_and_glm_features():
    palm = recipe("palm")
    assert palm.parallel_residual and palm.resolved_n_kv_heads == 1 and palm.ffn == "swiglu"
    assert palm.position == "rope" and not palm.bias and not palm.resolved_norm_bias
    glm = recipe("glm130b")
    assert glm.mask == "prefix" and glm.norm_placement == "deepnorm" and glm.ffn == "geglu" and glm.position == "rope"
    t5, switch = recipe("t5"), recipe("switch")
    assert t5.arch == switch.arch == "encoder_decoder" and t5.position == switch.position == "t5"
    assert switch.n_experts == 128 and switch.top_k == 1 and switch.moe_every == 2


def test_recipe_errors_name_the_choice():
    with pytest.raises(ValueError, match="choose one of"):
        recipe("gpt5")
    with pytest.raises(ValueError, match="size="):
        recipe("palm", size="small")
    with pytest.raises(ValueError, match="n_kv_heads"):
        recipe("palm", "tiny", n_kv_heads=3)


def test_human():
    assert human(175e9) == "175B" and human(1.2e12) == "1.20T" and human(65.2e9) == "65.2B" and human(980) == "980"
