"""One declarative name map per model family, and the one loader that applies it in both directions.

Shape legend: ``D`` d_model, ``H`` heads, ``Dh`` head_dim, ``F`` d_ff, ``V`` vocab.

A :class:`Converter` describes a ``transformers`` family as data:

- ``model_config(hf_config) -> ModelConfig``: the course config, raising
  ``ValueError`` that names the HF field the course cannot express;
- ``hf_config(config) -> dict``: the reverse, the keyword arguments of the HF
  config class, raising ``ValueError`` that names the course field;
- ``rules``: :class:`Rule` s pairing a HF parameter name with the course's, as
  templates (``"model.layers.{i}.self_attn.{proj:q_proj|k_proj|v_proj|o_proj}.{p}"``
  <-> ``"decoder.blocks.{i}.attn.{proj}.{p}"``), with an optional
  :class:`Transform` for tensors stored differently (GPT-2's transposed
  ``Conv1D``, a fused query-key-value, OPT's two extra position rows);
- where the token embedding and the output head live, for tied embeddings.

:func:`course_state_dict` and :func:`hf_state_dict` apply the rules one way or
the other, and fail with the full list of names when a tensor is left over or
missing, so a wrong rule never loads silently. The same rules, read backwards,
are what :func:`llmcourse.hf.to_hf` uses, once :func:`check_round_trip` has read the
HF config back and found every field that decides the model intact.

Placeholders in templates: ``{i}`` is a layer number, ``{p}`` is ``weight`` or
``bias``, ``{name:a|b|c}`` is one of the listed words; a placeholder carries its
value from one side to the other.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..config import ModelConfig

Tensors = tuple[torch.Tensor, ...]


# --- tensor transforms ---------------------------------------------------------
@dataclass(frozen=True)
class Transform:
    """How one HF tensor becomes one or more course tensors (``to_course``), and back (``to_hf``).

    Both functions also receive the course :class:`ModelConfig` (for head counts).
    """

    name: str
    to_course: Callable[[torch.Tensor, ModelConfig], Tensors]
    to_hf: Callable[[Tensors, ModelConfig], torch.Tensor]


IDENTITY = Transform("identity", lambda t, cfg: (t,), lambda ts, cfg: ts[0])


def _conv1d(t: torch.Tensor) -> torch.Tensor:
    return t.t() if t.dim() == 2 else t  # Conv1D (in, out) <-> Linear (out, in); biases unchanged


CONV1D = Transform("conv1d (transposed weight)", lambda t, cfg: (_conv1d(t),), lambda ts, cfg: _conv1d(ts[0]))
"""GPT-2's ``Conv1D`` stores a weight as ``(in, out)``, the transpose of ``nn.Linear``'s ``(out, in)``."""


def split_fused_qkv(tensor: torch.Tensor, n_heads: int) -> Tensors:
    """A fused weight or bias grouped per head as ``(H, 3, Dh)`` (GPT-NeoX, BLOOM), split into queries, keys, values.

    Shapes: ``(3 D, ...) -> 3 x (D, ...)`` with ``D = H * Dh``.
    """
    rest = tensor.shape[1:]
    per_head = tensor.reshape(n_heads, 3, -1, *rest)  # (H, 3, Dh, ...)
    return tuple(per_head[:, j].reshape(-1, *rest) for j in range(3))  # each (H * Dh, ...)


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of :func:`split_fused_qkv`: three projections fused and grouped per head ``(H, 3, Dh)``.

    Shapes: ``3 x (D, ...) -> (3 D, ...)``.
    """
    rest = q.shape[1:]
    heads = [t.reshape(n_heads, 1, -1, *rest) for t in (q, k, v)]  # each (H, 1, Dh, ...)
    return torch.cat(heads, dim=1).reshape(-1, *rest)  # (H * 3 * Dh, ...)


QKV_PER_HEAD = Transform(
    "fused qkv, grouped per head (H, 3, Dh)",
    lambda t, cfg: split_fused_qkv(t, cfg.n_heads),
    lambda ts, cfg: fuse_qkv(*ts, cfg.n_heads),
)

def split_qkv_per_kv_group(tensor: torch.Tensor, n_heads: int, n_kv_heads: int) -> Tensors:
    """A fused weight or bias grouped per kv head as ``(K, H/K + 2, Dh)``: each group's queries, then its key and value.

    Falcon's layout (its new decoder architecture; multi-query is ``K = 1``, and
    ``K = H`` is :func:`split_fused_qkv`'s ``(H, 3, Dh)``). Shapes:
    ``((H + 2 K) Dh, ...) -> (H Dh, ...), (K Dh, ...), (K Dh, ...)``.
    """
    rest = tensor.shape[1:]
    groups = tensor.reshape(n_kv_heads, n_heads // n_kv_heads + 2, -1, *rest)  # (K, H/K + 2, Dh, ...)
    q = groups[:, :-2].reshape(-1, *rest)  # query head k * H/K + j: group k, as repeat_kv shares keys
    return q, groups[:, -2].reshape(-1, *rest), groups[:, -1].reshape(-1, *rest)


def fuse_qkv_per_kv_group(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """The inverse of :func:`split_qkv_per_kv_group`. Shapes: ``(H Dh, ...), (K Dh, ...) x 2 -> ((H + 2 K) Dh, ...)``."""
    rest = q.shape[1:]
    parts = [q.reshape(n_kv_heads, -1, k.shape[0] // n_kv_heads, *rest)]  # (K, H/K, Dh, ...)
    parts += [t.reshape(n_kv_heads, 1, -1, *rest) for t in (k, v)]  # each (K, 1, Dh, ...)
    return torch.cat(parts, dim=1).reshape(-1, *rest)


QKV_PER_KV_GROUP = Transform(
    "fused qkv, grouped per kv head (K, H/K + 2, Dh)",
    lambda t, cfg: split_qkv_per_kv_group(t, cfg.n_heads, cfg.resolved_n_kv_heads),
    lambda ts, cfg: fuse_qkv_per_kv_group(*ts, cfg.resolved_n_kv_heads),
)

QKV_THIRDS_CONV1D = Transform(
    "fused qkv in three blocks (3, D), Conv1D",
    lambda t, cfg: tuple(_conv1d(t).chunk(3, dim=0)),  # (D, 3D) -> 3 x (D, D); bias (3D,) -> 3 x (D,)
    lambda ts, cfg: _conv1d(torch.cat(ts, dim=0)),
)
"""GPT-2's ``c_attn``: a ``Conv1D`` of width ``3 D``, queries then keys then values."""


def offset_rows(n: int) -> Transform:
    """A table with ``n`` unused leading rows (OPT's learned positions start at row 2)."""
    return Transform(
        f"drop the first {n} rows",
        lambda t, cfg: (t[n:],),
        lambda ts, cfg: torch.cat([ts[0].new_zeros(n, *ts[0].shape[1:]), ts[0]]),  # rows HF never reads unpadded
    )


# --- name rules ------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\{(\w+)(?::([^}]*))?\}")
_DEFAULT_PATTERNS = {"i": r"\d+", "p": r"weight|bias"}


def _compile(template: str, patterns: dict[str, str]) -> re.Pattern:
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>{patterns[m.group(1)]})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def _format(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Rule:
    """One HF tensor name <-> one or more course tensor names (see the module docstring for placeholders).

    ``when(config)`` limits the rule to some course configs (a gated FFN, an untied
    head); the rule must cover every name it matches.
    """

    hf: str
    course: str | tuple[str, ...]
    transform: Transform = IDENTITY
    when: Callable[[ModelConfig], bool] | None = None
    hf_regex: re.Pattern = field(init=False, repr=False, compare=False)
    course_regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        course = (self.course,) if isinstance(self.course, str) else tuple(self.course)
        object.__setattr__(self, "course", course)
        patterns = dict(_DEFAULT_PATTERNS)
        for m in _PLACEHOLDER.finditer(self.hf):
            if m.group(2):
                patterns[m.group(1)] = m.group(2)
        used = {m.group(1) for t in course for m in _PLACEHOLDER.finditer(t)}
        unknown = used - {m.group(1) for m in _PLACEHOLDER.finditer(self.hf)}
        if unknown:
            raise ValueError(f"rule {self.hf!r} -> {course}: placeholder(s) {sorted(unknown)} appear only on the course side.")
        object.__setattr__(self, "hf_regex", _compile(self.hf, patterns))
        object.__setattr__(self, "course_regex", _compile(_PLACEHOLDER.sub(lambda m: "{" + m.group(1) + "}", course[0]), patterns))

    def active(self, config: ModelConfig) -> bool:
        return self.when is None or bool(self.when(config))


# --- converters --------------------------------------------------------------------
@dataclass(frozen=True)
class Converter:
    """A ``transformers`` model family described as data (see the module docstring)."""

    model_type: str  # config.model_type in transformers
    hf_class: str  # the model class from_hf accepts and to_hf builds, e.g. "LlamaForCausalLM"
    hf_config_class: str  # e.g. "LlamaConfig"
    model_config: Callable[[Any], ModelConfig]  # HF config -> ModelConfig; ValueError names the HF field
    hf_config: Callable[[ModelConfig], dict]  # ModelConfig -> HF config kwargs; ValueError names the course field
    rules: tuple[Rule, ...]
    embedding: str  # HF name of the token embedding
    head: str = "lm_head.weight"  # HF name of the output projection (a copy of `embedding` when tied)
    aliases: tuple[str, ...] = ()  # further HF names that hold the embedding (T5's per-stack embed_tokens)

    def all_rules(self, config: ModelConfig) -> list[Rule]:
        """The rules that apply to ``config``, the untied output head included."""
        head = Rule(self.head, "lm_head.weight", when=lambda c: not c.tie_embeddings)
        return [r for r in (*self.rules, head) if r.active(config)]

    def name_map(self, config: ModelConfig) -> list[tuple[str, tuple[str, ...], str]]:
        """``(hf template, course templates, transform)`` for every rule that applies to ``config``; for reading."""
        return [(r.hf, r.course, r.transform.name) for r in self.all_rules(config)]


def _names(names, limit: int = 12) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


def is_tied(sd: dict[str, torch.Tensor], converter: Converter, config_says_tied: bool) -> bool:
    """Whether the HF output head is the token embedding.

    Tied when the head is absent (a checkpoint saves tied tensors once), is the
    same storage, or the config says tied and the values agree. A config that
    says tied over a head with other values is untied, as ``transformers``
    itself loads such a checkpoint.
    """
    head, emb = sd.get(converter.head), sd[converter.embedding]
    if head is None or head.data_ptr() == emb.data_ptr():
        return True
    return config_says_tied and head.shape == emb.shape and torch.equal(head, emb)


def course_state_dict(
    converter: Converter, hf_sd: dict[str, torch.Tensor], config: ModelConfig, expected: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """HF tensors renamed (and transformed) into the course's names, checked against ``expected``.

    ``expected`` is the state dict of the course model that will load them. Raises
    ``ValueError`` listing every HF tensor no rule consumed, every course tensor
    no rule filled, and every shape that differs.
    """
    skip = set(converter.aliases) | ({converter.head} if config.tie_embeddings else set())
    rules = converter.all_rules(config)
    out: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    unconsumed = []
    for name, tensor in hf_sd.items():
        if name in skip:
            continue
        matches = [(r, m) for r in rules if (m := r.hf_regex.fullmatch(name))]
        if not matches:
            unconsumed.append(name)
            continue
        if len(matches) > 1:
            raise RuntimeError(f"{converter.model_type}: HF tensor {name} matches {len(matches)} rules; each name needs one.")
        rule, m = matches[0]
        produced = rule.transform.to_course(tensor.detach(), config)
        for template, t in zip(rule.course, produced, strict=True):
            ours = _format(template, m.groupdict())
            if ours in out:
                raise RuntimeError(f"{converter.model_type}: {ours} is filled from both {source[ours]} and {name}.")
            out[ours], source[ours] = t.contiguous(), name
    missing = set(expected) - set(out)
    unexpected = set(out) - set(expected)
    problems = []
    if unconsumed:
        problems.append(f"HF tensors no rule converts: {_names(unconsumed)}")
    if unexpected:
        problems.append(f"converted tensors the course model does not have: {_names(f'{n} (from {source[n]})' for n in unexpected)}")
    if missing:
        problems.append(f"course tensors no HF tensor filled: {_names(missing)}")
    shapes = [
        f"{n} {tuple(out[n].shape)} from {source[n]}, expected {tuple(expected[n].shape)}"
        for n in sorted(set(out) & set(expected)) if out[n].shape != expected[n].shape
    ]
    if shapes:
        problems.append(f"shapes differ: {_names(shapes, 6)}")
    if problems:
        raise ValueError(
            f"the {converter.model_type} checkpoint does not fit the course model its config describes ("
            + "; ".join(problems)
            + f"). The config may set an option the {converter.model_type} converter does not read; "
            f"compare with converter.name_map(config) in llmcourse.hf.{converter.model_type}."
        )
    return out


def hf_state_dict(
    converter: Converter, course_sd: dict[str, torch.Tensor], config: ModelConfig, expected: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Course tensors renamed (and transformed) into HF names: the rules read backwards, checked like :func:`course_state_dict`."""
    rules = converter.all_rules(config)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for name in course_sd:
        for rule in rules:
            m = rule.course_regex.fullmatch(name)
            if m is None:
                continue
            values = m.groupdict()
            sources = [_format(t, values) for t in rule.course]
            absent = [s for s in sources if s not in course_sd]
            if absent:
                raise ValueError(f"{converter.model_type}: {name} needs {_names(absent)} as well to build {_format(rule.hf, values)}.")
            theirs = _format(rule.hf, values)
            out[theirs] = rule.transform.to_hf(tuple(course_sd[s].detach() for s in sources), config).contiguous()
            used.update(sources)
            break
    for alias in (*converter.aliases, *([converter.head] if config.tie_embeddings else [])):
        if alias in expected:
            out[alias] = out[converter.embedding]
    unused = set(course_sd) - used
    missing = set(expected) - set(out)
    problems = []
    if unused:
        problems.append(f"course tensors no rule converts: {_names(unused)}")
    if missing:
        problems.append(f"HF tensors no course tensor filled: {_names(missing)}")
    shapes = [f"{n} {tuple(out[n].shape)}, expected {tuple(expected[n].shape)}" for n in sorted(set(out) & set(expected))
              if out[n].shape != expected[n].shape]
    if shapes:
        problems.append(f"shapes differ: {_names(shapes, 6)}")
    if problems:
        raise ValueError(f"the course model does not fit {converter.hf_class} (" + "; ".join(problems) + ").")
    return {k: v for k, v in out.items() if k in expected}


# --- checks of a course config against what a HF class can express ----------------------
@dataclass(frozen=True)
class Needs:
    """A condition on one config value, with the words an error message uses for it."""

    test: Callable[[Any], bool]
    text: str


def require(config: ModelConfig, hf_class: str, **allowed: Any) -> None:
    """Raise ``ValueError`` naming the first config field whose value ``hf_class`` cannot express.

    Each keyword is a field (resolved where the config derives a default:
    ``final_norm``, ``norm_bias``, ``head_dim``, ``n_kv_heads``, ``rotary_dim``,
    ``attn_scale``, ``d_ff``, ``qkv_bias``) and what the class needs: a value, a tuple of
    values, or a :class:`Needs`. Floats compare to a relative 1e-6.
    """
    for name, want in allowed.items():
        value = _resolved(config, name)
        if isinstance(want, Needs):
            ok, shown = bool(want.test(value)), want.text
        elif isinstance(want, tuple):
            ok, shown = value in want, " or ".join(repr(w) for w in want)
        elif isinstance(want, float):
            ok, shown = value is not None and math.isclose(value, want, rel_tol=1e-6), repr(want)
        else:
            ok, shown = value == want, repr(want)
        if not ok:
            raise ValueError(f"{hf_class} cannot express {name}={value!r}; it needs {name}={shown}.")


def _resolved(config: ModelConfig, name: str) -> Any:
    derived = {
        "final_norm": "resolved_final_norm", "norm_bias": "resolved_norm_bias", "head_dim": "resolved_head_dim",
        "n_kv_heads": "resolved_n_kv_heads", "rotary_dim": "resolved_rotary_dim", "attn_scale": "resolved_attn_scale",
        "d_ff": "resolved_d_ff", "n_encoder_layers": "resolved_n_encoder_layers", "qkv_bias": "resolved_qkv_bias",
    }
    if name in derived:
        return getattr(config, derived[name])
    return getattr(config, name, None)  # a field this version of ModelConfig lacks reads as None


def plain(config: ModelConfig) -> dict[str, Any]:
    """The options a converted model leaves at their plain value unless its family has them.

    A family that has one overrides its entry (``{**plain(config), "qk_norm": True}``).
    """
    return dict(
        qkv_bias=Needs(lambda v: v == config.bias, f"bias ({config.bias}): q/k/v biased like the other layers"),
        norm_gain_offset=0.0,
        embed_scale=1.0,
        parallel_shared_norm=(False, None),  # None: a ModelConfig without the field
        mask="causal",
        attn_pattern="full",
        sliding_window=None,
        n_experts=0,
        position_dims=1,
        qk_norm=(False, None),  # None: a ModelConfig without the field
        attn_scale=1.0 / math.sqrt(config.resolved_head_dim),
        logit_scale=1.0,
    )


def special_tokens(config: ModelConfig) -> dict[str, Any]:
    """A decoder's HF special-token ids: the course's padding id, no BOS/EOS (HF's config defaults would invent them)."""
    return dict(pad_token_id=config.pad_token_id, bos_token_id=None, eos_token_id=None)


def untie(module: nn.Module, attr: str = "weight") -> None:
    """Give ``module.<attr>`` its own storage (a HF class may tie its head on construction)."""
    setattr(module, attr, nn.Parameter(getattr(module, attr).detach().clone()))


# --- the two directions ----------------------------------------------------------------
def _check_class(converter: Converter, hf_model: nn.Module) -> None:
    names = [cls.__name__ for cls in type(hf_model).__mro__]
    if converter.hf_class not in names:
        raise ValueError(
            f"for model_type={converter.model_type!r} from_hf converts {converter.hf_class} (with its LM head), "
            f"got {type(hf_model).__name__}; load the checkpoint with that class, or with "
            "llmcourse.hf.from_pretrained."
        )


def _decoder_start(config: ModelConfig, hf_model: nn.Module) -> ModelConfig:
    """An encoder-decoder starts from ``decoder_start_token_id``; newer transformers keep it in the generation config."""
    if config.arch != "encoder_decoder":
        return config
    for source in (hf_model.config, getattr(hf_model, "generation_config", None)):
        value = getattr(source, "decoder_start_token_id", None)
        if value is not None:
            return dataclasses.replace(config, decoder_start_token_id=int(value))
    return config


def convert_from_hf(converter: Converter, hf_model: nn.Module) -> nn.Module:
    """The course model with the weights of ``hf_model``: config, tying, rules, then ``load_state_dict(strict=True)``."""
    from ..models import build_model

    _check_class(converter, hf_model)
    config = _decoder_start(converter.model_config(hf_model.config), hf_model)
    sd = hf_model.state_dict()
    if converter.embedding not in sd:  # a tied tensor may be listed under one of its names only
        sd[converter.embedding] = hf_model.get_parameter(converter.embedding).detach()
    tied = is_tied(sd, converter, config.tie_embeddings)
    if tied != config.tie_embeddings:
        config = dataclasses.replace(config, tie_embeddings=tied)
    model = build_model(config)
    model.load_state_dict(course_state_dict(converter, sd, config, model.state_dict()), strict=True)
    return model.eval()


# Fields that do not change what a trained model computes in eval mode, or that HF keeps elsewhere.
_NOT_ARCHITECTURE = {
    "dropout", "init_std", "scaled_residual_init", "fused_kernels", "attn_impl", "extra", "pad_token_id",
    "router_jitter", "balance_loss_coef", "router_z_loss_coef", "moe_dispatch",
}
# Fields that only matter for some values of another field.
_ONLY_WHEN = {
    "rope_theta": ("position", "rope"), "rope_pairing": ("position", "rope"), "rotary_dim": ("position", "rope"),
    "rel_num_buckets": ("position", "t5"), "rel_max_distance": ("position", "t5"),
    "sinusoidal_scale": ("position", "sinusoidal"), "decoder_start_token_id": ("arch", "encoder_decoder"),
    "n_encoder_layers": ("arch", "encoder_decoder"), "share_embeddings": ("arch", "encoder_decoder"),
    "attn_block": ("attn_pattern", "not full"), "attn_global_blocks": ("attn_pattern", "not full"),
    "attn_random_blocks": ("attn_pattern", "not full"), "performer_features": ("attn_impl", "performer"),
}


def effective_fields(config: ModelConfig) -> dict[str, Any]:
    """The fields of ``config`` that decide what the model computes, with derived defaults filled in."""
    out = {}
    for f in dataclasses.fields(config):
        name = f.name
        if name in _NOT_ARCHITECTURE or name.startswith(("router_", "capacity_", "expert_", "moe_")) and not config.n_experts:
            continue
        if name in _ONLY_WHEN:
            other, value = _ONLY_WHEN[name]
            current = getattr(config, other)
            if (current == "full") if value == "not full" else (current != value):
                continue
        value = _resolved(config, name)
        out[name] = round(value, 9) if isinstance(value, float) else value
    return out


def check_round_trip(converter: Converter, config: ModelConfig, hf_config: Any) -> None:
    """Raise ``ValueError`` naming every field of ``config`` that ``hf_config`` would not carry.

    The HF config is read back with ``converter.model_config``; a field that
    comes back different (a course option the HF class has no setting for, a
    field newer than this converter) would make the HF model compute something
    else. Tying is left out: the weights decide it.
    """
    back = dataclasses.replace(converter.model_config(hf_config), tie_embeddings=config.tie_embeddings)
    ours, theirs = effective_fields(config), effective_fields(back)
    lost = [f"{k}={ours[k]!r} (would read back as {theirs.get(k)!r})" for k in ours if theirs.get(k) != ours[k]]
    if lost:
        raise ValueError(
            f"{converter.hf_class} cannot carry {', '.join(lost)}; the HF model would compute something else. "
            "Change those fields, or pick another model_type."
        )


def convert_to_hf(converter: Converter, model: nn.Module) -> nn.Module:
    """The ``transformers`` model (``converter.hf_class``) with the weights of the course ``model``.

    Checks first that the HF config reads back as ``model.config`` (:func:`check_round_trip`),
    then maps the weights with the converter's rules read backwards and loads them strictly.
    """
    import transformers

    config = model.config
    hf_config = getattr(transformers, converter.hf_config_class)(**converter.hf_config(config))
    check_round_trip(converter, config, hf_config)
    hf_model = getattr(transformers, converter.hf_class)(hf_config)
    if not config.tie_embeddings:
        head_module, _, attr = converter.head.rpartition(".")
        head, emb = hf_model.get_parameter(converter.head), hf_model.get_parameter(converter.embedding)
        if head.data_ptr() == emb.data_ptr():  # the HF class ties on construction (T5 in transformers >= 5)
            untie(hf_model.get_submodule(head_module), attr)
    expected = hf_model.state_dict()
    hf_model.load_state_dict(hf_state_dict(converter, model.state_dict(), config, expected), strict=True)
    dtype = next(model.parameters()).dtype
    return hf_model.to(dtype).eval()
