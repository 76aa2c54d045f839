"""Activations and feed-forward blocks: the plain two-matrix FFN and the GLU family.

Shape legend: ``D`` d_model, ``F`` d_ff; blocks map ``(..., D) -> (..., D)``.

Plain FFN (Vaswani et al. 2017):  ``FFN(x) = act(x W_up + b) W_down``
Gated FFN (Shazeer 2020):         ``FFN(x) = (act(x W_gate) * (x W_up)) W_down``
with ``act`` = sigmoid (GLU), ReLU (ReGLU), GeLU (GeGLU), Swish (SwiGLU) or the
identity (bilinear). A gated FFN has three matrices instead of two, so at equal
``d_ff`` it holds 50% more parameters; :func:`matched_d_ff` gives the width that
keeps the parameter count equal to a plain FFN.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


# --- activations, from their formulas -------------------------------------
def relu(x: torch.Tensor) -> torch.Tensor:
    """``max(0, x)``."""
    return torch.clamp_min(x, 0.0)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GeLU, ``x * Phi(x)`` with the normal CDF ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GeLU's tanh approximation (GPT-2's ``gelu_new``): ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def swish(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Swish ``x * sigmoid(beta x)``; with ``beta = 1`` it is SiLU."""
    return x * torch.sigmoid(beta * x)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "swish": swish,
    "sigmoid": torch.sigmoid,
    "identity": identity,
}

# ffn name -> (activation, gated?)
FFN_KINDS: dict[str, tuple[str, bool]] = {
    "relu": ("relu", False),
    "gelu": ("gelu", False),
    "gelu_tanh": ("gelu_tanh", False),
    "swish": ("swish", False),
    "glu": ("sigmoid", True),
    "reglu": ("relu", True),
    "geglu": ("gelu", True),
    "swiglu": ("swish", True),
    "bilinear": ("identity", True),
    "geglu_tanh": ("gelu_tanh", True),  # T5 v1.1's "gated-gelu" (HF: gelu_new)
}


def is_gated(kind: str) -> bool:
    if kind not in FFN_KINDS:
        raise ValueError(f"ffn={kind!r} is not a known feed-forward kind; choose one of {', '.join(FFN_KINDS)}.")
    return FFN_KINDS[kind][1]


class FeedForward(nn.Module):
    """Position-wise feed-forward block. Shapes: ``(..., D) -> (..., D)``, hidden ``(..., F)``.

    Projection names follow Llama: ``gate_proj`` (gated kinds only), ``up_proj``, ``down_proj``.
    """

    def __init__(self, d_model: int, d_ff: int, kind: str = "gelu", bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        gated = is_gated(kind)  # raises a clear error for an unknown kind
        act_name = FFN_KINDS[kind][0]
        self.kind = kind
        self.act = ACTIVATIONS[act_name]
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            hidden = self.act(self.up_proj(x))  # (..., F)
        else:
            hidden = self.act(self.gate_proj(x)) * self.up_proj(x)  # (..., F)
        return self.down_proj(self.dropout(hidden))  # (..., D)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def ffn_param_count(d_model: int, d_ff: int, kind: str, bias: bool = False) -> int:
    """Parameters of one FFN block, counted from its shapes (equals ``count_parameters(FeedForward(...))``)."""
    n_mats = 3 if is_gated(kind) else 2
    weights = n_mats * d_model * d_ff
    biases = ((n_mats - 1) * d_ff + d_model) if bias else 0
    return weights + biases


def matched_d_ff(d_model: int, kind: str, plain_d_ff: int | None = None, multiple_of: int = 1) -> int:
    """The ``d_ff`` that gives ``kind`` the parameter count of a plain FFN of width ``plain_d_ff``.

    A gated FFN has three ``D x F`` matrices instead of two, so the matched width is
    ``2/3 * plain_d_ff`` (Shazeer 2020 kept T5-base's parameters this way; Llama uses
    ``2/3 * 4 * D`` rounded up to a multiple). Plain kinds return ``plain_d_ff``.
    """
    plain_d_ff = 4 * d_model if plain_d_ff is None else plain_d_ff
    if not is_gated(kind):
        return plain_d_ff
    width = 2 * plain_d_ff / 3
    return int(multiple_of * math.ceil(width / multiple_of))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; shared tensors are counted once."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
