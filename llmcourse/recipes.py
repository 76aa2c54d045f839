"""The survey's model cards as configs: every model of its table at its published size and at a tiny size.

Shape legend: ``B`` batch, ``T`` length, ``S`` source length, ``D`` d_model, ``H`` heads, ``K`` kv heads,
``Dh`` head_dim, ``F`` d_ff, ``V`` vocab, ``E`` experts, ``L`` layers.

A recipe is a :class:`~llmcourse.config.ModelConfig`, never a model class:
``recipe("palm")`` is PaLM 540B as published (build it only if you have a terabyte
to spare), ``recipe("palm", size="tiny", vocab_size=81)`` the same architecture at
``d_model`` 64 that trains on a CPU in seconds. Everything that is not a size
(norm, placement, FFN kind, position encoding, biases, multi-query attention,
parallel layers, prefix mask, experts) is the same at both sizes. Where a
published model has a feature the package does not implement, the recipe's
``note`` says so, and the config uses the closest thing the package has.

Counting, in closed form from the config alone:

- :func:`param_count` equals ``count_parameters(build_model(config))`` exactly
  (``tests/test_recipes.py`` checks every tiny recipe and random variations);
- :func:`active_param_count`: what one token uses (``top_k`` of ``E`` experts);
- :func:`forward_flops`: the matrix-multiply FLOPs of one forward pass over one
  sequence, equal to what ``torch.utils.flop_counter.FlopCounterMode`` counts
  for dense models (a multiply-add counts 2; elementwise work, norms and softmax
  are left out). Per token this is the usual ``2 N`` plus the attention term
  (Kaplan et al. 2020): ``C_fwd = 2 N_active + 4 L T (H Dh)`` for a decoder whose
  ``N_active`` counts the matrices a token multiplies through (the output head
  included, the embedding lookup, norms, biases and position tables not), and
  ``T`` the keys each query attends to. Training costs about three forward passes
  (the backward pass twice the forward): :func:`training_flops`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .config import ModelConfig
from .ffn import ffn_param_count, is_gated

# The survey's model-card table (Zhao et al., Chinese v10 table 3 / English table 5), one row per model,
# as the survey prints it ("-": the survey gives none). Switch, GLaM and Mixtral are not in it.
SURVEY_COLUMNS = ("Type", "Size", "Norm", "Position", "Activation", "Bias", "Layers", "Heads", "d_model", "Context")


@dataclass(frozen=True)
class Recipe:
    """One model card: its published configuration, its tiny twin, and what the package cannot express.

    ``published_params`` (and ``published_active`` for mixtures of experts) are the sizes
    the model's paper reports; ``source`` says where the recipe's numbers come from;
    ``note`` what differs from the published model and why.
    """

    name: str
    title: str
    cite: str  # key in book/references.bib
    published_params: float
    full: ModelConfig
    tiny: dict[str, Any]  # the fields that change for the tiny size (sizes only)
    source: str
    note: str
    published_active: float | None = None
    survey: tuple[str, ...] | None = None  # the survey table's row (SURVEY_COLUMNS), None when absent
    features: tuple[str, ...] = field(default=())  # what sets the recipe apart, in words


def _cfg(**kw: Any) -> ModelConfig:
    return ModelConfig(**kw)


# Sizes shared by every tiny recipe: a 2-layer model, d_model 64, 4 heads of 16, context 64 (COURSE.md sizing).
TINY_BASE = dict(d_model=64, n_heads=4, head_dim=None, n_layers=2, max_seq_len=64, dropout=0.0)

_RECIPES: list[Recipe] = [
    Recipe(
        "t5", "T5-11B", "raffel2020exploring", 11e9,
        _cfg(arch="encoder_decoder", vocab_size=32128, d_model=1024, n_heads=128, head_dim=128, d_ff=65536,
             n_layers=24, n_encoder_layers=24, max_seq_len=512, norm="rmsnorm", norm_eps=1e-6, ffn="relu",
             position="t5", attn_scale=1.0, bias=False, tie_embeddings=True, share_embeddings=True,
             logit_scale=1024**-0.5, dropout=0.1),
        dict(n_encoder_layers=2, d_ff=256, head_dim=16, logit_scale=64**-0.5),
        "T5 paper, sec. 3.7 (11B: d_model 1024, d_ff 65536, 128 heads of 128, 24+24 layers); vocabulary "
        "32,128 as in the released checkpoints",
        "Pre-norm with T5's RMS LayerNorm, relative buckets shared by the layers of a stack, no 1/sqrt(d) in "
        "attention, tied embeddings with the output scaled by d_model^-0.5 (T5 v1.0). The tiny size keeps "
        "d_ff = 4 d_model instead of 11B's 64 d_model.",
        survey=("ED", "11B", "Pre RMS", "Relative", "ReLU", "no", "24", "128", "1024", "512"),
        features=("encoder-decoder", "relative buckets", "no attention scaling"),
    ),
    Recipe(
        "gpt3", "GPT-3 175B", "brown2020language", 175e9,
        _cfg(vocab_size=50257, d_model=12288, n_heads=96, d_ff=49152, n_layers=96, max_seq_len=2048,
             norm="layernorm", ffn="gelu_tanh", position="learned", bias=True, tie_embeddings=True),
        dict(d_ff=256),
        "GPT-3 paper, table 2.1; GPT-2's vocabulary of 50,257 BPE tokens",
        "GPT-3 alternates dense and locally banded sparse attention layers (Sparse Transformer); the "
        "package applies one attn_pattern to every layer, so the recipe is dense throughout (the "
        "parameter count is the same either way). GeLU in GPT-2's tanh form.",
        survey=("CD", "175B", "Pre LN", "Learned", "GeLU", "yes", "96", "96", "12288", "2048"),
        features=("learned positions", "GeLU", "biases"),
    ),
    Recipe(
        "pangu_alpha", "PanGu-alpha 207B", "zeng2021pangu", 207e9,
        _cfg(vocab_size=40000, d_model=16384, n_heads=128, d_ff=65536, n_layers=64, max_seq_len=1024,
             norm="layernorm", ffn="gelu", position="learned", bias=True, tie_embeddings=True),
        dict(d_ff=256),
        "PanGu-alpha paper (207B: 64 layers, d_model 16384, d_ff 65536, 128 heads); vocabulary 40,000",
        "PanGu-alpha's last layer is a 'query layer' whose attention query is a learned position "
        "embedding; the package has no such layer, so the recipe makes it an ordinary block (one "
        "context x d_model table fewer).",
        survey=("CD", "207B", "Pre LN", "Learned", "GeLU", "yes", "64", "128", "16384", "1024"),
        features=("learned positions", "GeLU", "biases"),
    ),
    Recipe(
        "opt", "OPT-175B", "zhang2022opt", 175e9,
        _cfg(vocab_size=50272, d_model=12288, n_heads=96, d_ff=49152, n_layers=96, max_seq_len=2048,
             norm="layernorm", ffn="relu", position="learned", bias=True, tie_embeddings=True),
        dict(d_ff=256),
        "OPT paper, table 1; vocabulary 50,272 as in the released checkpoints",
        "OPT's learned position table has two extra rows (positions start at offset 2, a fairseq "
        "legacy); the recipe's table has exactly max_seq_len rows (the converter drops the two).",
        survey=("CD", "175B", "Pre LN", "Learned", "ReLU", "yes", "96", "96", "12288", "2048"),
        features=("learned positions", "ReLU", "biases"),
    ),
    Recipe(
        "palm", "PaLM 540B", "chowdhery2022palm", 540.35e9,
        _cfg(vocab_size=256000, d_model=18432, n_heads=48, head_dim=256, n_kv_heads=1, d_ff=73728,
             n_layers=118, max_seq_len=2048, norm="layernorm", ffn="swiglu", position="rope", bias=False,
             parallel_residual=True, tie_embeddings=True),
        dict(head_dim=16, d_ff=256),
        "PaLM paper, table 1 (540B: 118 layers, d_model 18432, 48 heads of 256, d_ff = 4 d_model); "
        "vocabulary 256k",
        "Parallel attention and FFN, multi-query attention (one key/value head), SwiGLU with d_ff = 4 "
        "d_model, RoPE, no biases (LayerNorm without beta), shared input-output embeddings. PaLM's "
        "parallel block reads one LayerNorm; the package's parallel block has one per branch (D more "
        "parameters a layer). PaLM also initialises the embeddings N(0, 1) and scales the logits by "
        "d_model^-0.5; the package has one init_std for every matrix, so the recipe keeps the default.",
        survey=("CD", "540B", "Pre LN", "RoPE", "SwiGLU", "no", "118", "48", "18432", "2048"),
        features=("parallel layers", "multi-query", "SwiGLU", "RoPE", "no biases"),
    ),
    Recipe(
        "bloom", "BLOOM 176B", "scao2022bloom", 176.247e9,
        _cfg(vocab_size=250880, d_model=14336, n_heads=112, d_ff=57344, n_layers=70, max_seq_len=2048,
             norm="layernorm", ffn="gelu_tanh", position="alibi", bias=True, embed_norm=True,
             tie_embeddings=True),
        dict(d_ff=256),
        "BLOOM paper (176B: 70 layers, d_model 14336, 112 heads); vocabulary 250,880 as in the released "
        "checkpoint",
        "ALiBi instead of position embeddings, a LayerNorm right after the token embedding, GeLU in its "
        "tanh form.",
        survey=("CD", "176B", "Pre LN", "ALiBi", "GeLU", "yes", "70", "112", "14336", "2048"),
        features=("ALiBi", "embedding LayerNorm", "GeLU"),
    ),
    Recipe(
        "gopher", "Gopher 280B", "rae2021gopher", 280e9,
        _cfg(vocab_size=32000, d_model=16384, n_heads=128, head_dim=128, d_ff=65536, n_layers=80,
             max_seq_len=2048, norm="rmsnorm", norm_eps=1e-6, ffn="gelu", position="t5", bias=False,
             tie_embeddings=True),
        dict(head_dim=16, d_ff=256),
        "Gopher paper, table 1 (280B: 80 layers, 128 heads of 128, d_model 16384); vocabulary 32,000",
        "Gopher uses Transformer-XL's relative position encoding, which projects sinusoidal relative "
        "embeddings with a learned D x D matrix in every layer; the package's relative scheme is T5's "
        "bucketed bias (a few numbers per head), so the recipe uses that, and its count lacks those "
        "matrices (about L D^2). The survey gives no activation or bias: the recipe assumes GeLU and "
        "no biases.",
        survey=("CD", "280B", "Pre RMS", "Relative", "-", "-", "80", "128", "16384", "2048"),
        features=("RMSNorm", "relative positions"),
    ),
    Recipe(
        "chinchilla", "Chinchilla 70B", "hoffmann2022chinchilla", 70e9,
        _cfg(vocab_size=32000, d_model=8192, n_heads=64, head_dim=128, d_ff=32768, n_layers=80,
             max_seq_len=2048, norm="rmsnorm", norm_eps=1e-6, ffn="gelu", position="t5", bias=False,
             tie_embeddings=True),
        dict(head_dim=16, d_ff=256),
        "Chinchilla paper (70B: 80 layers, 64 heads of 128, d_model 8192); Gopher's architecture",
        "Gopher's architecture at a quarter of the size, trained on four times the tokens; the same "
        "substitution of T5 buckets for Transformer-XL relative positions (about L D^2 parameters fewer).",
        survey=("CD", "70B", "Pre RMS", "Relative", "-", "-", "80", "64", "8192", "-"),
        features=("RMSNorm", "relative positions"),
    ),
    Recipe(
        "galactica", "Galactica 120B", "taylor2022galactica", 120e9,
        _cfg(vocab_size=50000, d_model=10240, n_heads=80, d_ff=40960, n_layers=96, max_seq_len=2048,
             norm="layernorm", ffn="gelu", position="learned", bias=False, tie_embeddings=True),
        dict(d_ff=256),
        "Galactica paper (120B: 96 layers, d_model 10240, 80 heads); vocabulary 50,000",
        "OPT-style decoder without any bias, in the linear layers or the LayerNorms.",
        survey=("CD", "120B", "Pre LN", "Learned", "GeLU", "no", "96", "80", "10240", "2048"),
        features=("learned positions", "GeLU", "no biases"),
    ),
    Recipe(
        "lamda", "LaMDA 137B", "thoppilan2022lamda", 137e9,
        _cfg(vocab_size=32000, d_model=8192, n_heads=128, head_dim=128, d_ff=65536, n_layers=64,
             max_seq_len=2048, norm="rmsnorm", norm_eps=1e-6, ffn="geglu", position="t5", bias=False,
             tie_embeddings=True),
        dict(head_dim=16, d_ff=512),
        "LaMDA paper (137B: 64 layers, d_model 8192, d_ff 65536, 128 heads of 128); vocabulary 32k",
        "A decoder-only T5-style model: relative attention buckets and gated-GeLU. The survey gives no "
        "norm and no context; the recipe assumes T5's pre-norm RMSNorm, no biases, and a context of 2048 "
        "(relative positions set no hard limit). The tiny size keeps d_ff = 8 d_model.",
        survey=("CD", "137B", "-", "Relative", "GeGLU", "-", "64", "128", "8192", "-"),
        features=("GeGLU", "relative positions"),
    ),
    Recipe(
        "llama", "LLaMA 65B", "touvron2023llama", 65.2e9,
        _cfg(vocab_size=32000, d_model=8192, n_heads=64, d_ff=22016, n_layers=80, max_seq_len=2048,
             norm="rmsnorm", norm_eps=1e-6, ffn="swiglu", position="rope", bias=False, tie_embeddings=False),
        dict(d_ff=172),
        "LLaMA paper, table 2 (65.2B: 80 layers, d_model 8192, 64 heads); d_ff 22016 = 2/3 of 4 d_model "
        "rounded up to 256, vocabulary 32,000",
        "Pre-norm RMSNorm, SwiGLU at 2/3 of the usual width, RoPE, no biases, separate input and output "
        "embeddings. The tiny d_ff is 2/3 of 4 x 64 rounded up to a multiple of 4.",
        survey=("CD", "65B", "Pre RMS", "RoPE", "SwiGLU", "no", "80", "64", "8192", "2048"),
        features=("RMSNorm", "SwiGLU", "RoPE", "untied head"),
    ),
    Recipe(
        "glm130b", "GLM-130B", "zeng2022glm130b", 130e9,
        _cfg(vocab_size=150528, d_model=12288, n_heads=96, d_ff=32768, n_layers=70, max_seq_len=2048,
             mask="prefix", norm="layernorm", norm_placement="deepnorm", final_norm=True, ffn="geglu",
             position="rope", position_dims=2, bias=True, tie_embeddings=True),
        dict(d_ff=172),
        "GLM-130B paper, sec. 2 and appendix (70 layers, d_model 12288, 96 heads, d_ff 32768); "
        "vocabulary 150,528 (icetk)",
        "A prefix decoder (bidirectional over the context, causal over the blanks it fills), Post-LN with "
        "DeepNorm's residual scale and init, GeGLU at 8/3 d_model, rotary positions with GLM's two "
        "position ids (each turns half of the rotary dimensions), and a final LayerNorm.",
        survey=("PD", "130B", "Post DeepNorm", "RoPE", "GeGLU", "yes", "70", "96", "12288", "2048"),
        features=("prefix decoder", "DeepNorm", "GeGLU", "2D RoPE"),
    ),
    Recipe(
        "switch", "Switch-Base (128 experts)", "fedus2021switch", 7e9,
        _cfg(arch="encoder_decoder", vocab_size=32128, d_model=768, n_heads=12, head_dim=64, d_ff=3072,
             n_layers=12, n_encoder_layers=12, max_seq_len=512, norm="rmsnorm", norm_eps=1e-6, ffn="relu",
             position="t5", attn_scale=1.0, bias=False, tie_embeddings=True, share_embeddings=True,
             logit_scale=768**-0.5, dropout=0.1, n_experts=128, top_k=1, capacity_factor=1.25,
             router_jitter=0.01, balance_loss_coef=0.01, router_z_loss_coef=0.0, moe_every=2, moe_offset=1),
        dict(n_encoder_layers=2, d_ff=256, head_dim=16, n_experts=4, logit_scale=64**-0.5),
        "Switch paper, table 9 (Switch-Base: 7B parameters, 128 experts, every other layer); the widths "
        "of the released switch-base-128 checkpoint (T5-Base: d_model 768, d_ff 3072, 12+12 layers)",
        "T5-Base with every other feed-forward block replaced by 128 experts, top-1 routing, capacity "
        "factor 1.25, router jitter 0.01 and the load-balancing loss at 0.01 (no router z-loss, which "
        "came with ST-MoE). The tiny size has 4 experts in layer 1 of each stack.",
        features=("encoder-decoder", "mixture of experts, top-1", "capacity factor"),
    ),
    Recipe(
        "glam", "GLaM (64B/64E)", "du2022glam", 1.2e12,
        _cfg(vocab_size=256000, d_model=8192, n_heads=128, head_dim=128, d_ff=32768, n_layers=64,
             max_seq_len=1024, norm="layernorm", ffn="gelu", position="t5", bias=False, tie_embeddings=True,
             n_experts=64, top_k=2, capacity_factor=2.0, moe_every=2, moe_offset=1),
        dict(head_dim=16, d_ff=256, n_experts=4),
        "GLaM paper, table 4 (64B/64E: 64 layers, d_model 8192, d_ff 32768, 128 heads of 128, 64 experts "
        "every other layer, top-2; 1.2T parameters, 96.6B active); vocabulary 256k",
        "GLaM uses GeGLU in its dense feed-forward layers and Transformer-XL relative positions. The "
        "package gives one FFN kind to dense and expert layers alike, so the recipe uses plain GeLU for "
        "both (the experts hold 95% of the parameters), and T5 buckets for the positions. The published "
        "totals are consistent with gated dense layers and plain-GeLU experts; the recipe's count is "
        "lower by the dense layers' third matrix. Capacity factor 2 for top-2 as in GShard.",
        published_active=96.6e9,
        features=("mixture of experts, top-2", "every other layer"),
    ),
    Recipe(
        "mixtral", "Mixtral 8x7B", "jiang2024mixtral", 46.7e9,
        _cfg(vocab_size=32000, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336, n_layers=32,
             max_seq_len=32768, norm="rmsnorm", norm_eps=1e-5, ffn="swiglu", position="rope",
             rope_theta=1e6, bias=False, tie_embeddings=False, n_experts=8, top_k=2, capacity_factor=None,
             router_renormalize=True),
        dict(n_kv_heads=2, d_ff=172, n_experts=4),
        "Mixtral paper, table 1 (d_model 4096, 32 layers, 32 heads, 8 kv heads, d_ff 14336, 8 experts, "
        "top-2; 46.7B parameters, 12.9B active); vocabulary 32,000",
        "Mistral 7B's decoder (grouped-query attention, RoPE, RMSNorm, SwiGLU) with 8 SwiGLU experts in "
        "every layer, top-2 with the two gates renormalised, no capacity limit. The tiny size has one "
        "kv head per two query heads (grouped-query still; one per four would be multi-query at 4 heads).",
        published_active=12.9e9,
        features=("mixture of experts, top-2", "grouped-query", "SwiGLU", "RoPE"),
    ),
]

RECIPES: dict[str, Recipe] = {r.name: r for r in _RECIPES}
SURVEY_MODELS = tuple(r.name for r in _RECIPES if r.survey is not None)
SIZES = ("full", "tiny")


def recipe(name: str, size: str = "full", vocab_size: int | None = None, **changes: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a model card at ``size`` ``"full"`` (as published) or ``"tiny"``.

    ``vocab_size`` replaces the published vocabulary (a tiny model trains on the
    course's character vocabulary); ``changes`` replace any other field, validated
    as usual. The tiny size is ``d_model`` 64, 4 heads, 2 layers (2 + 2 for an
    encoder-decoder), context 64, and keeps every architectural choice.
    """
    if name not in RECIPES:
        raise ValueError(f"recipe {name!r} is not known; choose one of {', '.join(RECIPES)}.")
    if size not in SIZES:
        raise ValueError(f"size={size!r} must be 'full' (as published) or 'tiny' (d_model 64, 2 layers).")
    r = RECIPES[name]
    config = r.full
    if size == "tiny":
        config = config.replace(**{**TINY_BASE, **r.tiny})
    if vocab_size is not None:
        config = config.replace(vocab_size=vocab_size)
    return config.replace(**changes) if changes else config


# --- counting in closed form -----------------------------------------------------------------
def norm_params(config: ModelConfig) -> int:
    """One norm: the gain ``D``, plus the bias ``D`` for a LayerNorm with ``norm_bias``."""
    D = config.d_model
    return D + (D if config.norm == "layernorm" and config.resolved_norm_bias else 0)


def attention_params(config: ModelConfig) -> int:
    """One attention sublayer: ``D (H + 2K) Dh + H Dh D`` weights (+ biases), + ``2 Dh`` with QK-norm."""
    D, H, K, Dh = config.d_model, config.n_heads, config.resolved_n_kv_heads, config.resolved_head_dim
    weights = D * (H + 2 * K) * Dh + H * Dh * D
    biases = ((H + 2 * K) * Dh + D) if config.bias else 0
    return weights + biases + (2 * Dh if config.qk_norm else 0)


def _expert_d_ff(config: ModelConfig) -> int:
    return config.expert_d_ff or config.resolved_d_ff


def ffn_params(config: ModelConfig, layer: int, active: bool = False) -> int:
    """The feed-forward slot of block ``layer``: dense, or router + experts (+ shared experts).

    ``active``: only the ``top_k`` routed experts one token uses.
    """
    D = config.d_model
    if not config.is_moe_layer(layer):
        return ffn_param_count(D, config.resolved_d_ff, config.ffn, config.bias)
    one = ffn_param_count(D, _expert_d_ff(config), config.ffn, config.bias)
    router = D * config.n_experts + (config.n_experts if config.router_bias else 0)
    shared = ffn_param_count(D, config.n_shared_experts * _expert_d_ff(config), config.ffn, config.bias) \
        if config.n_shared_experts else 0
    return router + (config.top_k if active else config.n_experts) * one + shared


def block_params(config: ModelConfig, layer: int, cross_attention: bool = False, active: bool = False) -> int:
    """One block: norms (two, three with cross-attention; twice that for sandwich), attention(s), FFN."""
    n_sub = 3 if cross_attention else 2
    norms = n_sub * norm_params(config) * (2 if config.placement.post_norms else 1)
    attn = attention_params(config) * (2 if cross_attention else 1)
    return norms + attn + ffn_params(config, layer, active)


def stack_params(config: ModelConfig, n_layers: int, cross_attention: bool, active: bool = False) -> int:
    """Positions, optional embedding norm, ``n_layers`` blocks, optional final norm."""
    D, pos = config.d_model, config.position
    positions = {"learned": config.max_seq_len * D * config.position_dims,
                 "t5": config.rel_num_buckets * config.n_heads}.get(pos, 0)  # sinusoidal, alibi, rope: none
    norms = norm_params(config) * (int(config.embed_norm) + int(config.resolved_final_norm))
    blocks = sum(block_params(config, i, cross_attention, active) for i in range(n_layers))
    return positions + norms + blocks


def param_count(config: ModelConfig, active: bool = False) -> int:
    """Trainable parameters of ``build_model(config)``, from the config alone (shared tensors once).

    ``V D`` token embedding (a second one for an encoder-decoder with
    ``share_embeddings=False``), ``V D`` more for an untied head, and the stacks
    (:func:`stack_params`). ``active=True``: per token, counting ``top_k`` of the
    ``n_experts`` routed experts (:func:`llmcourse.moe.count_moe_parameters`).
    """
    V, D = config.vocab_size, config.d_model
    embeddings = V * D
    if config.arch == "encoder_decoder" and not config.share_embeddings:
        embeddings += V * D
    head = 0 if config.tie_embeddings else V * D
    total = embeddings + head + stack_params(config, config.n_layers, config.arch == "encoder_decoder", active)
    if config.arch == "encoder_decoder":
        total += stack_params(config, config.resolved_n_encoder_layers, False, active)
    return total


def active_param_count(config: ModelConfig) -> int:
    """Parameters one token uses: :func:`param_count` with ``top_k`` of the routed experts."""
    return param_count(config, active=True)


def non_embedding_params(config: ModelConfig, active: bool = False) -> int:
    """:func:`param_count` without token embeddings, head and position tables (Kaplan et al.'s ``N``)."""
    V, D = config.vocab_size, config.d_model
    emb = V * D * (1 + (config.arch == "encoder_decoder" and not config.share_embeddings) + (not config.tie_embeddings))
    n_stacks = 2 if config.arch == "encoder_decoder" else 1
    pos = {"learned": config.max_seq_len * D * config.position_dims,
           "t5": config.rel_num_buckets * config.n_heads}.get(config.position, 0) * n_stacks
    return param_count(config, active) - emb - pos


# --- FLOPs -------------------------------------------------------------------------------------
def _attention_matmul_flops(config: ModelConfig, T: int, S: int, kv_from_other: bool = False) -> int:
    """Projections and the two score matmuls of one attention sublayer: ``T`` queries over ``S`` keys."""
    D, H, K, Dh = config.d_model, config.n_heads, config.resolved_n_kv_heads, config.resolved_head_dim
    q_o = 2 * T * D * H * Dh * 2  # q_proj and o_proj on the T query positions
    kv = 2 * S * D * 2 * K * Dh  # k_proj and v_proj on the S key positions (the context's, for cross-attention)
    scores = 2 * 2 * H * T * S * Dh  # q k^T and weights @ v, every (query, key) pair
    return q_o + kv + scores


def _ffn_matmul_flops(config: ModelConfig, layer: int, T: int) -> int:
    D = config.d_model
    n_mats = 3 if is_gated(config.ffn) else 2
    if not config.is_moe_layer(layer):
        return 2 * n_mats * D * config.resolved_d_ff * T
    router = 2 * D * config.n_experts * T
    routed = 2 * n_mats * D * _expert_d_ff(config) * config.top_k * T  # no token dropped
    shared = 2 * n_mats * D * config.n_shared_experts * _expert_d_ff(config) * T
    return router + routed + shared


def forward_flops(config: ModelConfig, seq_len: int | None = None, src_len: int | None = None) -> int:
    """Matrix-multiply FLOPs of one forward pass over one sequence (a multiply-add counts 2).

    Decoder: ``seq_len`` tokens (default ``max_seq_len``), every query against
    every key (the explicit kernels compute the masked half too, and
    ``FlopCounterMode`` counts it). Encoder-decoder: ``src_len`` encoder tokens
    (default ``max_seq_len``) and ``seq_len`` decoder tokens. Mixture-of-experts
    layers count ``top_k`` experts per token (none dropped). Left out: the
    embedding lookup, norms, activations, softmax, biases and residual adds.
    """
    T = config.max_seq_len if seq_len is None else seq_len
    total = 2 * T * config.d_model * config.vocab_size  # the output head
    for i in range(config.n_layers):
        total += _attention_matmul_flops(config, T, T) + _ffn_matmul_flops(config, i, T)
    if config.arch == "encoder_decoder":
        S = config.max_seq_len if src_len is None else src_len
        for i in range(config.resolved_n_encoder_layers):
            total += _attention_matmul_flops(config, S, S) + _ffn_matmul_flops(config, i, S)
        total += config.n_layers * _attention_matmul_flops(config, T, S)  # cross-attention
    return total


def flops_per_token(config: ModelConfig, seq_len: int | None = None) -> float:
    """Forward FLOPs per token of a decoder at context ``seq_len``: ``2 N_matmul + 4 L T H Dh`` (Kaplan's ``C_fwd``)."""
    T = config.max_seq_len if seq_len is None else seq_len
    return forward_flops(config, T) / T


def training_flops(config: ModelConfig, tokens: int, seq_len: int | None = None) -> float:
    """About ``3 x`` the forward FLOPs (backward = 2 x forward): ``~ 6 N D`` for ``D`` training tokens."""
    return 3 * flops_per_token(config, seq_len) * tokens


def describe(config: ModelConfig) -> dict[str, str]:
    """The survey table's columns for a config, in words (Type, Norm, Position, Activation, Bias, sizes)."""
    kind = "ED" if config.arch == "encoder_decoder" else ("PD" if config.mask == "prefix" else "CD")
    placement = {"pre": "Pre", "post": "Post", "sandwich": "Sandwich", "deepnorm": "Post DeepNorm"}[config.norm_placement]
    norm = placement if config.norm_placement == "deepnorm" else f"{placement} {'RMS' if config.norm == 'rmsnorm' else 'LN'}"
    position = {"learned": "Learned", "sinusoidal": "Sinusoidal", "t5": "Relative", "alibi": "ALiBi",
                "rope": "RoPE", "none": "None"}[config.position]
    act = {"relu": "ReLU", "gelu": "GeLU", "gelu_tanh": "GeLU", "swish": "Swish", "glu": "GLU", "reglu": "ReGLU",
           "geglu": "GeGLU", "geglu_tanh": "GeGLU", "swiglu": "SwiGLU", "bilinear": "Bilinear"}[config.ffn]
    return {"Type": kind, "Norm": norm, "Position": position, "Activation": act,
            "Bias": "yes" if config.bias else "no", "Layers": str(config.n_layers), "Heads": str(config.n_heads),
            "d_model": str(config.d_model), "Context": str(config.max_seq_len)}


def human(n: float) -> str:
    """``175.0B``, ``1.2T``, ``98.3K``: a parameter count in three significant figures."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.{max(0, 2 - int(math.log10(n / scale)))}f}{unit}"
    return str(int(n))


__all__ = [
    "Recipe", "RECIPES", "SURVEY_MODELS", "SURVEY_COLUMNS", "TINY_BASE", "recipe", "param_count",
    "active_param_count", "non_embedding_params", "norm_params", "attention_params", "ffn_params",
    "block_params", "stack_params", "forward_flops", "flops_per_token", "training_flops", "describe", "human",
]
