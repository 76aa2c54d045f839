"""One configuration that selects every variant of every model in the course.

Shape legend (used in every module): ``B`` batch, ``T`` query length, ``S`` key
length, ``D`` d_model, ``H`` heads, ``K`` kv heads, ``Dh`` head_dim, ``F`` d_ff,
``V`` vocab, ``E`` experts, ``N = B*T`` tokens.

A :class:`ModelConfig` validates itself when it is built (and again on
:func:`dataclasses.replace`): an impossible combination raises ``ValueError``
naming the field and the fix, so a mistake never turns into a silently wrong
model. Later chapters add variants as new *values* of these fields, never as
new model classes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .kernels import KERNELS, kernel_spec

# The names each option accepts. Components register their implementations
# under exactly these names; the config is the single place that lists them.
ARCHS = ("decoder", "encoder_decoder")
MASKS = ("causal", "prefix")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post", "sandwich", "deepnorm")
FFNS = ("relu", "gelu", "gelu_tanh", "swish", "glu", "reglu", "geglu", "swiglu", "bilinear",
        "geglu_tanh")  # geglu_tanh: GeGLU with the tanh GeLU (T5 v1.1, "gated-gelu")
POSITIONS = ("learned", "sinusoidal", "t5", "alibi", "rope", "none")
ROPE_PAIRINGS = ("half", "interleaved")
ATTN_IMPLS = tuple(KERNELS)  # the kernel registry (llmcourse.kernels) is the one list
ATTN_PATTERNS = ("full", "strided", "fixed", "bigbird", "window")
MOE_DISPATCHES = ("sorted", "reference")
MOE_CAPACITY_SCOPES = ("batch", "sequence")
_MISSING = object()


def revalidating_setattr(obj: Any, name: str, value: Any) -> None:
    """``obj.name = value`` for a config validated in ``__post_init__``: once ``obj`` is
    validated (it sets ``_validated``), the checks run again and an invalid assignment
    is undone before the error propagates (``cfg.n_heads = 3`` cannot leave a broken config).
    """
    if not obj.__dict__.get("_validated", False):
        object.__setattr__(obj, name, value)
        return
    old = obj.__dict__.get(name, _MISSING)
    object.__setattr__(obj, name, value)
    try:
        obj.__post_init__()
    except Exception:
        if old is _MISSING:
            object.__delattr__(obj, name)
        else:
            object.__setattr__(obj, name, old)
        raise


@dataclass(frozen=True)
class Placement:
    """What a norm placement implies, in one table (the blocks apply it; nothing else tests the name).

    ``final_norm``: the default of ``ModelConfig.final_norm`` (a pre-norm stack ends un-normalised);
    ``post_norms``: a second norm on each sublayer's output (sandwich);
    ``deepnorm``: DeepNet's residual scale alpha and init gain beta;
    ``parallel``: whether ``parallel_residual`` is defined for it.
    """

    final_norm: bool
    post_norms: bool = False
    deepnorm: bool = False
    parallel: bool = False


PLACEMENTS = {
    "pre": Placement(final_norm=True, parallel=True),
    "post": Placement(final_norm=False),
    "sandwich": Placement(final_norm=True, post_norms=True),
    "deepnorm": Placement(final_norm=False, deepnorm=True),
}


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not a known option; choose one of {', '.join(allowed)}.")


def _positive(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer.")


def _non_negative(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} must be a non-negative integer.")


def _flag(name: str, value: Any, allow_none: bool = False) -> None:
    """A bool field: ``bias='no'`` is truthy, so anything but True/False (or None where allowed) is refused."""
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise ValueError(
            f"{name}={value!r} must be True or False{' (or None for the default)' if allow_none else ''}, "
            f"not a {type(value).__name__}."
        )


def _real(name: str, value: Any, *, positive: bool = True, allow_none: bool = False, hint: str = "") -> None:
    """A float field: a finite real number (NaN passes every ``<=`` test, so it is refused here), positive or >= 0."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ValueError(
            f"{name}={value!r} must be a finite number {'> 0' if positive else '>= 0'}"
            f"{' or None' if allow_none else ''}{hint}."
        )


@dataclass
class ModelConfig:
    """Every architectural choice of a model, validated on construction.

    Sizes follow the course's vocabulary (``d_model n_heads n_kv_heads head_dim
    d_ff n_layers vocab_size max_seq_len dropout bias norm_eps rope_theta
    n_experts top_k``). ``None`` means "derive the usual default", documented
    per field; :meth:`resolved` fills those in.

    Fields that let one architecture express a converted family's details (each
    usable by any model, and validated like the others):

    - ``qkv_bias``: biases on the query, key and value projections only, apart
      from ``bias`` (which then covers the output projection and the
      feed-forward); Qwen2 is ``bias=False, qkv_bias=True``. ``None``: as ``bias``.
    - ``norm_gain_offset``: every norm multiplies by ``norm_gain_offset + weight``;
      Gemma stores its RMSNorm gains as ``gamma - 1`` (``1.0``), so its weights
      start at 0. The weights are initialised to ``1 - norm_gain_offset`` (gain 1).
    - ``embed_scale``: the token embeddings are multiplied by it before the first
      block (Gemma: ``sqrt(d_model)``); a tied output head reads the unscaled table.
    - ``parallel_shared_norm``: with ``parallel_residual``, one norm feeds both
      branches, ``x + attn(LN(x)) + ffn(LN(x))`` (GPT-J, Falcon-7B); the block
      then has no ``ffn_norm``.
    - ``qk_norm``: RMSNorm over each head's queries and keys (over ``head_dim``,
      one gain per dimension shared by the heads), after the projections and
      before RoPE (Qwen3, OLMo 2).
    """

    # --- sizes -----------------------------------------------------------
    vocab_size: int = 256
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: n_heads (multi-head); 1: multi-query; else grouped-query
    head_dim: int | None = None  # None: d_model // n_heads
    d_ff: int | None = None  # None: 4 * d_model
    n_layers: int = 4  # decoder layers (or the only stack of a decoder-only model)
    n_encoder_layers: int | None = None  # encoder-decoder only; None: n_layers
    max_seq_len: int = 64  # training context; positions beyond it need extrapolate=True
    dropout: float = 0.0
    # --- architecture ----------------------------------------------------
    arch: str = "decoder"  # decoder | encoder_decoder
    mask: str = "causal"  # decoder self-attention: causal | prefix (bidirectional over a prefix)
    # --- normalization ---------------------------------------------------
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_bias: bool | None = None  # LayerNorm's beta; None: same as `bias`
    norm_eps: float = 1e-5
    norm_placement: str = "pre"  # pre | post | sandwich | deepnorm
    norm_gain_offset: float = 0.0  # norms multiply by (offset + weight); Gemma: 1.0 (weights start at 1 - offset)
    embed_norm: bool = False  # an extra norm right after the embedding (BLOOM)
    final_norm: bool | None = None  # None: True for pre/sandwich, False for post/deepnorm
    # --- kernels -----------------------------------------------------------
    fused_kernels: bool = True  # norms and activations through PyTorch's one-kernel versions (same function, faster)
    # --- feed-forward ----------------------------------------------------
    ffn: str = "gelu"  # relu gelu gelu_tanh swish glu reglu geglu swiglu bilinear
    # --- positions -------------------------------------------------------
    position: str = "learned"  # learned sinusoidal t5 alibi rope none
    rope_theta: float = 10000.0
    rope_pairing: str = "half"  # half (Llama/GPT-NeoX) | interleaved (RoFormer paper)
    rotary_dim: int | None = None  # None: the whole head (GPT-NeoX rotates part of it)
    sinusoidal_scale: float | None = None  # amplitude of the sinusoids; None: init_std (the paper's token-to-position ratio)
    rel_num_buckets: int = 32  # T5 relative buckets
    rel_max_distance: int = 128
    position_dims: int = 1  # 2: two position ids per token (GLM's blank infilling), position_ids (B|1, T, 2)
    # --- attention -------------------------------------------------------
    attn_impl: str = "explicit"  # explicit | sdpa | flash | performer
    attn_pattern: str = "full"  # full | strided | fixed | bigbird | window (sparse patterns)
    attn_block: int = 16  # block size / stride / window of sparse patterns
    attn_global_blocks: int = 1  # BigBird global blocks
    attn_random_blocks: int = 1  # BigBird random blocks per query block
    performer_features: int = 64  # random features of FAVOR+
    attn_scale: float | None = None  # None: 1/sqrt(head_dim); T5 uses 1.0
    sliding_window: int | None = None  # each query sees the last W keys (Mistral); the KV cache keeps only W
    qk_norm: bool = False  # RMSNorm on each head's queries and keys before RoPE (Qwen3, OLMo 2)
    bias: bool = True  # biases in every linear layer (and norms unless norm_bias says otherwise)
    qkv_bias: bool | None = None  # biases of the q/k/v projections alone; None: same as `bias` (Qwen2: True, bias False)
    # --- residual wiring and head ---------------------------------------
    parallel_residual: bool = False  # x + attn(norm(x)) + ffn(norm(x)) (GPT-J, GPT-NeoX, PaLM)
    parallel_shared_norm: bool = False  # parallel_residual with one norm for both branches (GPT-J, Falcon-7B)
    embed_scale: float = 1.0  # token embeddings times this before the first block (Gemma: sqrt(d_model))
    tie_embeddings: bool = True  # output projection shares the token embedding
    share_embeddings: bool = True  # encoder-decoder: one token embedding for both stacks
    logit_scale: float = 1.0  # multiply hidden states before the head (T5 v1.0 tied: d_model**-0.5)
    # --- initialisation --------------------------------------------------
    init_std: float = 0.02
    scaled_residual_init: bool = True  # GPT-2: residual projections scaled by 1/sqrt(2 * n_layers)
    # --- mixture of experts (chapter 06; llmcourse.moe) ---------------------
    n_experts: int = 0  # 0: dense feed-forward
    top_k: int = 1  # experts per token: 1 (Switch), 2 (GShard, GLaM, Mixtral)
    capacity_factor: float | None = None  # expert capacity ceil(cf * tokens * top_k / n_experts); None: no dropping
    expert_capacity: int | None = None  # an absolute capacity per expert (overrides capacity_factor)
    router_jitter: float = 0.0  # multiplicative noise on router inputs while training (Switch: 0.01)
    router_bias: bool = False  # a bias in the router's linear gate
    balance_loss_coef: float = 0.01  # Switch load-balancing loss E * sum_i f_i P_i
    router_z_loss_coef: float = 1e-3  # ST-MoE router z-loss mean(logsumexp(logits)^2)
    n_shared_experts: int = 0  # experts every token uses besides the routed ones (DeepSeekMoE)
    expert_d_ff: int | None = None  # hidden width of one expert; None: d_ff
    moe_every: int = 1  # layer i is MoE when i >= moe_offset and (i - moe_offset) % moe_every == 0
    moe_offset: int = 0
    moe_dispatch: str = "sorted"  # sorted (grouped by expert) | reference (loop over experts with masks)
    moe_capacity_scope: str = "batch"  # tokens competing for capacity: all B*T ("batch") | each row (HF Switch)
    router_renormalize: bool | None = None  # None: renormalise top-k gates when k > 1; True: always (Mixtral)
    # --- special tokens (encoder-decoder and padding) ---------------------
    pad_token_id: int | None = None
    decoder_start_token_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes; never read by models

    def __setattr__(self, name: str, value: Any) -> None:
        revalidating_setattr(self, name, value)

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "max_seq_len",
                     "rel_num_buckets", "rel_max_distance", "attn_block", "performer_features"):
            _positive(name, getattr(self, name))
        for name in ("n_kv_heads", "head_dim", "d_ff", "n_encoder_layers", "rotary_dim"):
            _positive(name, getattr(self, name), allow_none=True)
        _choice("arch", self.arch, ARCHS)
        _choice("mask", self.mask, MASKS)
        _choice("norm", self.norm, NORMS)
        _choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        _choice("ffn", self.ffn, FFNS)
        _choice("position", self.position, POSITIONS)
        _choice("rope_pairing", self.rope_pairing, ROPE_PAIRINGS)
        kernel_spec(self.attn_impl)  # raises for a name the registry does not know
        _choice("attn_pattern", self.attn_pattern, ATTN_PATTERNS)
        if self.head_dim is None and self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                f"choose n_heads among the divisors of d_model "
                f"({', '.join(str(h) for h in _divisors(self.d_model))}) or set head_dim explicitly."
            )
        kv = self.n_heads if self.n_kv_heads is None else self.n_kv_heads
        if self.n_heads % kv != 0:
            raise ValueError(
                f"n_kv_heads={kv} must divide n_heads={self.n_heads} (each kv head serves a group of "
                f"query heads); choose one of {', '.join(str(h) for h in _divisors(self.n_heads))}."
            )
        hd = self.resolved_head_dim
        if self.rotary_dim is not None:
            if self.rotary_dim > hd or self.rotary_dim % 2:
                raise ValueError(
                    f"rotary_dim={self.rotary_dim} must be even and at most head_dim={hd}; "
                    "rotary embeddings rotate pairs of dimensions within one head."
                )
        if self.position == "rope" and hd % 2:
            raise ValueError(f"position='rope' needs an even head_dim, got head_dim={hd}; change d_model or n_heads.")
        if not 0.0 <= self.dropout < 1.0:  # NaN fails this test too
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps={self.norm_eps} must be positive.")
        if self.sinusoidal_scale is not None and not self.sinusoidal_scale > 0:
            raise ValueError(
                f"sinusoidal_scale={self.sinusoidal_scale} must be positive (1.0 is the paper's unit table; "
                "None matches it to the token embeddings' init_std)."
            )
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta={self.rope_theta} must be positive.")
        if self.arch == "encoder_decoder" and self.mask != "causal":
            raise ValueError(
                "mask='prefix' applies to decoder-only models; an encoder-decoder already encodes its "
                "input bidirectionally. Use arch='decoder' with mask='prefix', or mask='causal'."
            )
        if self.parallel_residual and not PLACEMENTS[self.norm_placement].parallel:
            raise ValueError(
                f"parallel_residual=True is defined for norm_placement='pre' (GPT-J, GPT-NeoX, PaLM), "
                f"not {self.norm_placement!r}; set norm_placement='pre' or parallel_residual=False."
            )
        if self.parallel_shared_norm and not self.parallel_residual:
            raise ValueError(
                "parallel_shared_norm=True shares one norm between the two branches of parallel_residual; set "
                "parallel_residual=True as well, or parallel_shared_norm=False."
            )
        if self.position_dims not in (1, 2):
            raise ValueError(f"position_dims={self.position_dims} must be 1 or 2 (GLM's two position ids).")
        if self.position_dims == 2 and self.position not in ("learned", "sinusoidal", "rope"):
            raise ValueError(
                f"position_dims=2 (GLM's two position ids) works with position 'learned', 'sinusoidal' or 'rope' "
                f"(each id gets its own table, sinusoid or half of the rotary dimensions), not {self.position!r}."
            )
        if self.position_dims == 2 and self.position == "rope" and self.resolved_rotary_dim % 4:
            raise ValueError(
                f"position_dims=2 with RoPE rotates half of the rotary dimensions by each position id, so "
                f"rotary_dim={self.resolved_rotary_dim} must be a multiple of 4; change head_dim or rotary_dim."
            )
        _positive("sliding_window", self.sliding_window, allow_none=True)
        if self.sliding_window is not None and self.attn_pattern != "full":
            raise ValueError(
                f"sliding_window={self.sliding_window} is itself a sparse pattern; it cannot be combined with "
                f"attn_pattern={self.attn_pattern!r}. Use one of them (attn_pattern='window' with attn_block=W "
                "is the same restriction without the KV cache trimming)."
            )
        if self.attn_pattern != "full" and self.attn_block >= self.max_seq_len:
            raise ValueError(
                f"attn_block={self.attn_block} is not below max_seq_len={self.max_seq_len}, so "
                f"attn_pattern={self.attn_pattern!r} would be dense attention; choose attn_block < max_seq_len "
                "(about sqrt(max_seq_len) for strided/fixed) or attn_pattern='full'."
            )
        if self.position == "t5" and (self.rel_num_buckets < 4 or self.rel_max_distance <= self.rel_num_buckets // 2):
            raise ValueError(
                f"position='t5' needs rel_num_buckets >= 4 and rel_max_distance > rel_num_buckets // 2 (the exact "
                f"buckets), got rel_num_buckets={self.rel_num_buckets}, rel_max_distance={self.rel_max_distance}; "
                "T5 uses 32 and 128."
            )
        self._check_kernel()
        self._check_moe()
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id} must be a token id below vocab_size={self.vocab_size}.")
        if not 0 <= self.decoder_start_token_id < self.vocab_size:
            raise ValueError(
                f"decoder_start_token_id={self.decoder_start_token_id} must be below vocab_size={self.vocab_size}."
            )
        object.__setattr__(self, "_validated", True)

    def _check_types(self) -> None:
        """Types and finiteness of the fields the value checks below do not cover."""
        for name in ("embed_norm", "fused_kernels", "qk_norm", "bias", "parallel_residual", "tie_embeddings",
                     "share_embeddings", "scaled_residual_init", "router_bias", "parallel_shared_norm"):
            _flag(name, getattr(self, name))
        for name in ("norm_bias", "final_norm", "qkv_bias"):
            _flag(name, getattr(self, name), allow_none=True)
        for name in ("arch", "mask", "norm", "norm_placement", "ffn", "position", "rope_pairing", "attn_impl",
                     "attn_pattern", "moe_dispatch", "moe_capacity_scope"):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise ValueError(f"{name}={v!r} must be a string naming an option, not a {type(v).__name__}.")
        _real("dropout", self.dropout, positive=False, hint=" below 1")
        _real("norm_eps", self.norm_eps, hint=" (1e-5 LayerNorm, 1e-6 RMSNorm)")
        _real("rope_theta", self.rope_theta, hint=" (10000 in RoFormer and Llama)")
        _real("sinusoidal_scale", self.sinusoidal_scale, allow_none=True)
        _real("attn_scale", self.attn_scale, allow_none=True, hint=" (None: 1/sqrt(head_dim); T5 uses 1.0)")
        _real("logit_scale", self.logit_scale, hint=" (1.0 unless tied T5 v1.0: d_model**-0.5)")
        _real("embed_scale", self.embed_scale, hint=" (1.0, or sqrt(d_model) as Gemma)")
        _real("norm_gain_offset", self.norm_gain_offset, positive=False,
              hint=" (0.0: the weight is the gain; Gemma's 1.0: the gain is 1 + weight)")
        _real("init_std", self.init_std, hint=" (GPT-2 uses 0.02)")
        _real("capacity_factor", self.capacity_factor, allow_none=True, hint=" (Switch uses 1.0-1.25; None drops no tokens)")
        for name in ("n_experts", "attn_global_blocks", "attn_random_blocks", "decoder_start_token_id"):
            _non_negative(name, getattr(self, name))
        _positive("top_k", self.top_k)
        if self.pad_token_id is not None:
            _non_negative("pad_token_id", self.pad_token_id)
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra={self.extra!r} must be a dict of JSON-able notes, not a {type(self.extra).__name__}.")
        try:
            json.dumps(self.extra, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"extra must be JSON-able (str keys; str, number, bool, None, list or dict values, finite numbers) "
                f"so that checkpoints can store it: {e}."
            ) from None

    def _check_kernel(self) -> None:
        spec = kernel_spec(self.attn_impl)
        pattern = "window" if self.sliding_window is not None else self.attn_pattern
        if spec.bias != "any":
            needs = []
            if pattern != "full" and pattern not in spec.patterns:
                needs.append(f"attn_pattern={pattern!r}")
            if self.position in ("t5", "alibi"):
                needs.append(f"position={self.position!r}")
            if self.mask == "prefix":
                needs.append("mask='prefix'")
            if needs:
                exact = ", ".join(repr(n) for n, k in KERNELS.items() if k.bias == "any")
                raise ValueError(
                    f"attn_impl={self.attn_impl!r} cannot apply a bias that depends on both query and key "
                    f"({spec.description}), which {', '.join(needs)} needs; use attn_impl {exact} for those."
                )
        if spec.needs_full_blocks and pattern == "full":
            raise ValueError(
                f"attn_impl={self.attn_impl!r} computes a sparse pattern; set attn_pattern (strided, fixed, "
                "bigbird, window) or sliding_window, or use attn_impl='explicit', 'sdpa' or 'flash'."
            )

    def _check_moe(self) -> None:
        if self.n_experts < 0 or (self.n_experts and not 1 <= self.top_k <= self.n_experts):
            raise ValueError(
                f"top_k={self.top_k} must be between 1 and n_experts={self.n_experts}; n_experts=0 means dense."
            )
        if self.capacity_factor is not None and not self.capacity_factor > 0:
            raise ValueError(
                f"capacity_factor={self.capacity_factor} must be positive (Switch uses 1.0-1.25), or None to drop "
                "no tokens."
            )
        _positive("expert_capacity", self.expert_capacity, allow_none=True)
        _positive("expert_d_ff", self.expert_d_ff, allow_none=True)
        _positive("moe_every", self.moe_every)
        for name in ("n_shared_experts", "moe_offset"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}={v!r} must be a non-negative integer.")
        depth = max(self.n_layers, self.resolved_n_encoder_layers if self.arch == "encoder_decoder" else 0)
        if self.n_experts and not any(self.is_moe_layer(i) for i in range(depth)):
            raise ValueError(
                f"n_experts={self.n_experts}, but no layer would get experts: the first MoE layer is "
                f"moe_offset={self.moe_offset} and the model has {depth} layer(s). Lower moe_offset, add layers, "
                "or set n_experts=0 for a dense model."
            )
        for name in ("router_jitter", "balance_loss_coef", "router_z_loss_coef"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}={v!r} must be a finite number >= 0.")
        _choice("moe_dispatch", self.moe_dispatch, MOE_DISPATCHES)
        _choice("moe_capacity_scope", self.moe_capacity_scope, MOE_CAPACITY_SCOPES)
        _flag("router_renormalize", self.router_renormalize, allow_none=True)

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block ``layer`` (0-based) has a mixture of experts in its feed-forward slot."""
        return bool(self.n_experts) and layer >= self.moe_offset and (layer - self.moe_offset) % self.moe_every == 0

    @property
    def placement(self) -> Placement:
        """What ``norm_placement`` implies (:data:`PLACEMENTS`)."""
        return PLACEMENTS[self.norm_placement]

    # --- derived values ----------------------------------------------------
    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def resolved_n_kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def resolved_d_ff(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def resolved_n_encoder_layers(self) -> int:
        return self.n_encoder_layers if self.n_encoder_layers is not None else self.n_layers

    @property
    def resolved_final_norm(self) -> bool:
        if self.final_norm is not None:
            return self.final_norm
        return self.placement.final_norm

    @property
    def resolved_norm_bias(self) -> bool:
        return self.bias if self.norm_bias is None else self.norm_bias

    @property
    def resolved_qkv_bias(self) -> bool:
        return self.bias if self.qkv_bias is None else self.qkv_bias

    @property
    def resolved_rotary_dim(self) -> int:
        return self.rotary_dim if self.rotary_dim is not None else self.resolved_head_dim

    @property
    def resolved_attn_scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else 1.0 / math.sqrt(self.resolved_head_dim)

    def deepnorm_constants(self, stack: str = "decoder") -> tuple[float, float]:
        """DeepNet's ``(alpha, beta)`` for this architecture (Wang et al. 2022, table 1).

        ``alpha`` multiplies the residual, ``beta`` scales the initial weights of
        the value and output projections and of the feed-forward layers.

        - decoder-only, N layers: alpha = (2N)^(1/4), beta = (8N)^(-1/4)
        - encoder-decoder, N encoder and M decoder layers:
          encoder alpha = 0.81 (N^4 M)^(1/16), beta = 0.87 (N^4 M)^(-1/16);
          decoder alpha = (3M)^(1/4), beta = (12M)^(-1/4)
        """
        m = self.n_layers
        if self.arch == "decoder":
            return (2 * m) ** 0.25, (8 * m) ** -0.25
        n = self.resolved_n_encoder_layers
        if stack == "encoder":
            return 0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)
        if stack == "decoder":
            return (3 * m) ** 0.25, (12 * m) ** -0.25
        raise ValueError(f"stack={stack!r} must be 'encoder' or 'decoder'.")

    # --- (de)serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig field(s) {', '.join(unknown)}; known fields are {', '.join(sorted(known))}."
            )
        return cls(**data)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
