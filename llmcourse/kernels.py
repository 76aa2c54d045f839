"""The one registry of attention kernels, with what each can and cannot do.

Shape legend: ``B`` batch, ``H`` heads, ``T`` query length, ``S`` key length, ``Dh`` head_dim.

Every kernel has the signature of :func:`llmcourse.attention.explicit_attention`::

    kernel(q, k, v, *, bias=None, causal=False, scale, dropout_p=0.0, training=False, **options) -> (B, H, T, Dh)

A :class:`KernelSpec` names where the function lives (imported lazily, so this
floor-1 module depends on nothing) and declares its capabilities, which the
config checks once when it is built and the attention layer reads when it
runs; no other module tests kernel names:

- ``bias``: ``"any"`` (a ``(1|B, 1|H, T, S)`` additive bias: masks, ALiBi, T5
  buckets), ``"keys"`` (only a per-key bias such as padding; Performer never
  forms the ``T x S`` scores) or ``"none"``;
- ``exact``: whether it computes softmax attention exactly (to rounding);
- ``patterns``: the sparse patterns (``ModelConfig.attn_pattern``, and the
  sliding window) that it applies *itself* from the position rule of
  :mod:`llmcourse.masks`, tile by tile or block by block, without a dense
  ``T x S`` bias. For any other pattern the attention layer builds that bias;
- ``options``: kernel keyword arguments and the config fields they come from;
- ``needs_full_blocks``: the kernel needs ``T == S`` and ``T`` a multiple of
  the block (the block-sparse kernels); other calls (cached decoding, ragged
  lengths) fall back to the explicit path with the pattern as a bias.

Register a new kernel (multi-head latent attention, a fused GPU kernel) with
:func:`register_kernel`; ``ModelConfig(attn_impl=...)`` accepts it at once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

BIAS_KINDS = ("any", "keys", "none")
SPARSE_PATTERNS = ("strided", "fixed", "bigbird", "window")


@dataclass(frozen=True)
class KernelSpec:
    """One attention kernel and its capabilities (see the module docstring)."""

    name: str
    target: str  # "module:function", module relative to the llmcourse package
    description: str
    exact: bool = True
    bias: str = "any"
    patterns: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)  # kernel kwarg -> ModelConfig field
    needs_full_blocks: bool = False

    def __post_init__(self) -> None:
        if self.bias not in BIAS_KINDS:
            raise ValueError(f"KernelSpec.bias={self.bias!r} must be one of {', '.join(BIAS_KINDS)}.")

    def function(self) -> Callable:
        """The kernel function (imported on first use)."""
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module, __package__), name)

    def options_from(self, config) -> dict:
        """The kernel's keyword arguments read from a ``ModelConfig``."""
        return {arg: getattr(config, fld) for arg, fld in self.options.items()}


KERNELS: dict[str, KernelSpec] = {}


def register_kernel(spec: KernelSpec) -> KernelSpec:
    """Add (or replace) a kernel in the registry."""
    KERNELS[spec.name] = spec
    return spec


def kernel_spec(name: str) -> KernelSpec:
    """The spec registered under ``name`` (``ModelConfig.attn_impl``)."""
    if name not in KERNELS:
        raise ValueError(f"attn_impl={name!r} is not a known kernel; choose one of {', '.join(KERNELS)}.")
    return KERNELS[name]


register_kernel(KernelSpec(
    "explicit", ".attention:explicit_attention",
    "scores, bias and softmax written out (the reference)",
))
register_kernel(KernelSpec(
    "sdpa", ".attention:sdpa_attention",
    "PyTorch's fused scaled_dot_product_attention",
))
register_kernel(KernelSpec(
    "flash", ".efficient_attention:flash_attention",
    "FlashAttention-style tiling with an online softmax; memory linear in the length",
    patterns=SPARSE_PATTERNS,
))
register_kernel(KernelSpec(
    "performer", ".efficient_attention:performer_attention",
    "FAVOR+ positive random features (approximate); time and memory linear in the length",
    exact=False, bias="keys", options={"n_features": "performer_features"},
))
register_kernel(KernelSpec(
    "sparse", ".efficient_attention:pattern_sparse_attention",
    "block-sparse kernels that compute only the scores a sparse pattern allows",
    bias="none", patterns=SPARSE_PATTERNS, needs_full_blocks=True,
))
