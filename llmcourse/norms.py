"""Normalization layers, written from their formulas.

Shape legend: ``D`` d_model; the norms act on the last dimension of any tensor
``(..., D)``.

LayerNorm (Ba et al. 2016):  ``y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta``
RMSNorm (Zhang & Sennrich 2019): ``y = x / sqrt(mean(x^2) + eps) * gamma``

Both compute in at least float32 (as Llama does: half-precision inputs are
upcast) and never narrower than the input (float64 stays float64), then cast
back to the input's dtype (:func:`compute_dtype`).

``gain_offset`` (``ModelConfig.norm_gain_offset``) makes the gain
``gain_offset + weight``: Gemma stores ``gamma - 1`` and computes ``x_hat * (1 + w)``
(``gain_offset=1.0``); the default 0 is the formulas above.

With ``fused=True`` the same function is computed by PyTorch's own
implementation (``F.layer_norm``, ``F.rms_norm``) instead of a chain of
elementwise operations; tests prove the two paths equal. Models use it by
default (``ModelConfig.fused_kernels``). ``F.layer_norm`` is one kernel, forward
and backward, on a CPU too. ``F.rms_norm`` has no fused CPU kernel (torch 2.13):
there it is decomposed into the same elementwise chain as the formula, so on a
CPU it is no faster. Chapter 02 (notebook 4) measures this and
what closes the gap:

- :func:`rms_norm_analytic`: the formula forward with a hand-derived backward
  (:class:`RMSNormFunction`), fewer passes over memory, no compilation;
- :func:`compiled_rms_norm`: :func:`rms_norm` through ``torch.compile``, which
  fuses the chain into generated C++ loops (costs seconds of compilation per shape).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """LayerNorm written from its formula, on the last dimension. Shapes: ``(..., D)``, ``(D,)`` -> ``(..., D)``."""
    mean = x.mean(-1, keepdim=True)  # (..., 1)
    var = (x - mean).pow(2).mean(-1, keepdim=True)  # (..., 1); biased variance, as in the paper
    y = (x - mean) * torch.rsqrt(var + eps) * weight
    return y + bias if bias is not None else y


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm written from its formula, on the last dimension. Shapes: ``(..., D)``, ``(D,)`` -> ``(..., D)``."""
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # mean(x^2): (..., 1)
    return y * weight


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm with its backward derived by hand, so autograd does not replay the elementwise chain.

    With ``r = 1 / sqrt(mean(x^2) + eps)``, ``y = x r gamma`` and upstream gradient ``g``
    (per row of length ``D``):

    - ``dL/dgamma = sum over rows of g * x * r``
    - ``dL/dx = r * (g gamma) - x * r^3 * <g gamma, x> / D``

    Only ``x`` and ``r`` (one number per row) are saved, and each pass over the
    ``(N, D)`` data is a single kernel (a norm, a dot product, a fused multiply-add),
    so it reads and writes the big tensors fewer times than autograd's replay of
    ``pow, mean, add, rsqrt, mul, mul``. Shapes: ``x (..., D)``, ``weight (D,)``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        D = x.shape[-1]
        x2 = x.reshape(-1, D)  # (N, D)
        r = torch.linalg.vector_norm(x2, dim=-1, keepdim=True).square_().div_(D).add_(eps).rsqrt_()  # (N, 1)
        y = torch.mul(x2, r).mul_(weight)  # (N, D)
        ctx.save_for_backward(x2, weight, r)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, weight, r = ctx.saved_tensors
        N, D = x2.shape
        g = grad.reshape(N, D)
        g_gamma = g * weight  # (N, D)
        dx = dweight = None
        if ctx.needs_input_grad[1]:
            dweight = torch.mul(g, x2).T.mv(r.squeeze(-1))  # (D,) = sum_n g[n] * x[n] * r[n]
        if ctx.needs_input_grad[0]:
            coef = torch.linalg.vecdot(g_gamma, x2).unsqueeze(-1).mul_(r.pow(3)).div_(-D)  # (N, 1)
            dx = g_gamma.mul_(r).addcmul_(x2, coef).view(grad.shape)  # r g gamma - x r^3 <g gamma, x> / D
        return dx, dweight, None


def rms_norm_analytic(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`rms_norm` computed through :class:`RMSNormFunction` (same values, hand-derived backward)."""
    return RMSNormFunction.apply(x, weight, eps)


@functools.lru_cache(maxsize=None)
def compiled_rms_norm() -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """:func:`rms_norm` through ``torch.compile`` (built once; each new input shape compiles again).

    Inductor fuses the elementwise chain into generated C++ loops, one for the
    forward and a few for the backward. Compiling needs a C++ compiler and takes
    seconds, so nothing in the package calls this unless asked.
    """
    return torch.compile(rms_norm, dynamic=False)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a norm computes in: float32 for half precision, the input's own dtype when it is wider."""
    return torch.promote_types(dtype, torch.float32)


class _Gain:
    """The gain a norm multiplies by: ``weight``, or ``gain_offset + weight`` (Gemma); weights start at gain 1."""

    gain_offset: float
    weight: nn.Parameter

    def _init_gain(self, d_model: int, gain_offset: float) -> None:
        self.gain_offset = float(gain_offset)
        self.weight = nn.Parameter(torch.full((d_model,), 1.0 - self.gain_offset))

    def gain(self, dtype: torch.dtype) -> torch.Tensor:
        weight = self.weight.to(dtype)
        return weight + self.gain_offset if self.gain_offset else weight

    def _offset_repr(self) -> str:
        return f", gain_offset={self.gain_offset}" if self.gain_offset else ""


class LayerNorm(_Gain, nn.Module):
    """Layer normalization with an optional bias (``beta``). Shapes: ``(..., D) -> (..., D)``."""

    init_role = "norm"  # blocks.init_weights: gain 1, bias 0

    def __init__(
        self, d_model: int, eps: float = 1e-5, bias: bool = True, fused: bool = False, gain_offset: float = 0.0
    ) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self._init_gain(d_model, gain_offset)
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(compute_dtype(dtype))
        weight = self.gain(x.dtype)
        if self.fused:
            bias = self.bias.to(x.dtype) if self.bias is not None else None
            return F.layer_norm(x, self.weight.shape, weight, bias, self.eps).to(dtype)
        return layer_norm(x, weight, self.bias, self.eps).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}{self._offset_repr()}"


class RMSNorm(_Gain, nn.Module):
    """Root-mean-square normalization: no centring, no bias. Shapes: ``(..., D) -> (..., D)``."""

    init_role = "norm"  # blocks.init_weights: gain 1

    def __init__(self, d_model: int, eps: float = 1e-6, fused: bool = False, gain_offset: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self._init_gain(d_model, gain_offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(compute_dtype(dtype))
        weight = self.gain(x.dtype)
        if self.fused:
            return F.rms_norm(x, self.weight.shape, weight, self.eps).to(dtype)
        return rms_norm(x, weight, self.eps).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}{self._offset_repr()}"


def make_norm(
    kind: str, d_model: int, eps: float, bias: bool = True, fused: bool = False, gain_offset: float = 0.0
) -> nn.Module:
    """Build the norm named by ``ModelConfig.norm`` (``fused`` picks PyTorch's one-kernel path).

    ``gain_offset``: ``ModelConfig.norm_gain_offset`` (the gain is ``gain_offset + weight``).
    """
    if kind == "layernorm":
        return LayerNorm(d_model, eps=eps, bias=bias, fused=fused, gain_offset=gain_offset)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=eps, fused=fused, gain_offset=gain_offset)
    raise ValueError(f"norm={kind!r} is not a known norm; choose 'layernorm' or 'rmsnorm'.")
