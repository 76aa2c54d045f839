"""Normalization layers, written from their formulas.

Shape legend: ``D`` d_model; the norms act on the last dimension of any tensor
``(..., D)``.

LayerNorm (Ba et al. 2016):  ``y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta``
RMSNorm (Zhang & Sennrich 2019): ``y = x / sqrt(mean(x^2) + eps) * gamma``

Both compute in float32 whatever the input dtype (as Llama does), then cast back.

With ``fused=True`` the same function is computed by PyTorch's single-kernel
implementation (``F.layer_norm``, ``F.rms_norm``) instead of a chain of
elementwise operations; tests prove the two paths equal. Models use the fused
path by default (``ModelConfig.fused_kernels``) because on a CPU the chain of
elementwise operations, each reading and writing the whole tensor, costs more
time than the matmuls around it; chapter 02 measures the difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    """Layer normalization with an optional bias (``beta``). Shapes: ``(..., D) -> (..., D)``."""

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True, fused: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if self.fused:
            return F.layer_norm(x.float(), self.weight.shape, self.weight, self.bias, self.eps).to(dtype)
        x = x.float()
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)  # biased variance, as in the paper
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """Root-mean-square normalization: no centring, no bias. Shapes: ``(..., D) -> (..., D)``."""

    def __init__(self, d_model: int, eps: float = 1e-6, fused: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if self.fused:
            return F.rms_norm(x.float(), self.weight.shape, self.weight, self.eps).to(dtype)
        x = x.float()
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, d_model: int, eps: float, bias: bool = True, fused: bool = False) -> nn.Module:
    """Build the norm named by ``ModelConfig.norm`` (``fused`` picks PyTorch's one-kernel path)."""
    if kind == "layernorm":
        return LayerNorm(d_model, eps=eps, bias=bias, fused=fused)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=eps, fused=fused)
    raise ValueError(f"norm={kind!r} is not a known norm; choose 'layernorm' or 'rmsnorm'.")
