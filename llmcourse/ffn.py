"""Activations and feed-forward blocks: the plain two-matrix FFN and the GLU family.

Shape legend: ``D`` d_model, ``F`` d_ff, ``N`` tokens; blocks map ``(..., D) -> (..., D)``.

Plain FFN (Vaswani et al. 2017):  ``FFN(x) = act(x W_up) W_down``
Gated FFN (Shazeer 2020):         ``FFN(x) = (act(x W_gate) * (x W_up)) W_down``

with ``act`` = sigmoid (GLU), ReLU (ReGLU), GeLU (GeGLU), Swish (SwiGLU) or the
identity (bilinear). A gated FFN has three ``D x F`` matrices instead of two, so
at equal ``d_ff`` it holds 50% more parameters and does 50% more matmul work;
:func:`matched_d_ff` gives the width (about ``2/3`` of the plain one) that keeps
the parameter count equal, as Shazeer (2020) and Llama do.

The kinds (``ModelConfig.ffn`` selects one in every model):

============  ===========  =====  ==========================================
kind          activation   gated  used by (survey model-card table and HF)
============  ===========  =====  ==========================================
relu          ReLU         no     original Transformer, T5 v1.0, OPT
gelu          GeLU (erf)   no     BERT, BLOOM, Galactica
gelu_tanh     GeLU (tanh)  no     GPT-2, GPT-3 (``gelu_new``)
swish         Swish/SiLU   no     (Shazeer 2020's baseline row)
glu           sigmoid      yes    Dauphin et al. 2017
reglu         ReLU         yes    Shazeer 2020
geglu         GeLU (erf)   yes    LaMDA, GLM-130B
geglu_tanh    GeLU (tanh)  yes    T5 v1.1 / Flan-T5 (``gated-gelu``)
swiglu        Swish/SiLU   yes    PaLM, LLaMA
bilinear      identity     yes    Shazeer 2020
============  ===========  =====  ==========================================
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from .config import ModelConfig
from .counting import count_parameters  # noqa: F401  (its home is floor 1; kept importable from here)


# --- activations, from their formulas -------------------------------------
def relu(x: torch.Tensor) -> torch.Tensor:
    """``max(0, x)``. Shapes: any, elementwise.

    Written as a ``where`` so the gradient at exactly 0 is 0, as PyTorch's ``F.relu`` defines it.
    """
    return torch.where(x > 0, x, torch.zeros_like(x))


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GeLU, ``x * Phi(x)`` with the normal CDF ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``. Shapes: elementwise."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GeLU's tanh approximation (GPT-2's ``gelu_new``). Shapes: elementwise.

    ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (Hendrycks & Gimpel 2016, sec. 2).
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``1 / (1 + exp(-x))``. Shapes: elementwise.

    Computed by ``torch.sigmoid``: the formula taken literally overflows ``exp(-x)`` for
    large negative ``x`` (its gradient becomes ``inf / inf = nan``); the library kernel
    evaluates the same function in a form that never overflows.
    """
    return torch.sigmoid(x)


def swish(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Swish ``x * sigmoid(beta x)`` (Ramachandran et al. 2017); with ``beta = 1`` it is SiLU. Shapes: elementwise."""
    return x * sigmoid(beta * x)


def identity(x: torch.Tensor) -> torch.Tensor:
    """``x``: the "activation" of the bilinear gated FFN."""
    return x


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "swish": swish,
    "sigmoid": sigmoid,
    "identity": identity,
}

# The same functions computed by PyTorch's single kernels (one pass over memory
# instead of one per elementwise operation); tests prove each equals its formula.
FUSED_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "swish": torch.nn.functional.silu,
    "sigmoid": torch.sigmoid,
    "identity": identity,
}

# ffn kind -> (activation, gated?)
FFN_KINDS: dict[str, tuple[str, bool]] = {
    "relu": ("relu", False),
    "gelu": ("gelu", False),
    "gelu_tanh": ("gelu_tanh", False),
    "swish": ("swish", False),
    "glu": ("sigmoid", True),
    "reglu": ("relu", True),
    "geglu": ("gelu", True),
    "geglu_tanh": ("gelu_tanh", True),
    "swiglu": ("swish", True),
    "bilinear": ("identity", True),
}

# The eight rows of Shazeer (2020), table 1, in the paper's order.
SHAZEER_KINDS: tuple[str, ...] = ("relu", "gelu", "swish", "glu", "bilinear", "reglu", "geglu", "swiglu")


def is_gated(kind: str) -> bool:
    """Whether ``kind`` multiplies an activated gate with a second linear projection."""
    if kind not in FFN_KINDS:
        raise ValueError(f"ffn={kind!r} is not a known feed-forward kind; choose one of {', '.join(FFN_KINDS)}.")
    return FFN_KINDS[kind][1]


def activation_of(kind: str, fused: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function a feed-forward ``kind`` applies (to its gate, for gated kinds).

    ``fused=True`` returns PyTorch's one-kernel version of the same function.
    """
    is_gated(kind)  # raises a clear error for an unknown kind
    return (FUSED_ACTIVATIONS if fused else ACTIVATIONS)[FFN_KINDS[kind][0]]


class FeedForward(nn.Module):
    """Position-wise feed-forward block. Shapes: ``(..., D) -> (..., D)``, hidden ``(..., F)``.

    Projection names follow Llama: ``gate_proj`` (gated kinds only), ``up_proj``, ``down_proj``.
    Dropout, when set, acts on the hidden units (as in T5 and Llama-style blocks).
    """

    def __init__(
        self, d_model: int, d_ff: int, kind: str = "gelu", bias: bool = True, dropout: float = 0.0, fused: bool = False
    ) -> None:
        super().__init__()
        gated = is_gated(kind)  # raises a clear error for an unknown kind
        self.kind = kind
        self.act = activation_of(kind, fused)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        # roles read by blocks.init_weights (GPT-2's scaled residual init, DeepNorm's beta)
        self.up_proj.init_role = "ffn_in"
        if self.gate_proj is not None:
            self.gate_proj.init_role = "ffn_in"
        self.down_proj.init_role = "residual_out"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            hidden = self.act(self.up_proj(x))  # (..., D) -> (..., F)
        else:
            hidden = self.act(self.gate_proj(x)) * self.up_proj(x)  # (..., F): gate * value
        return self.down_proj(self.dropout(hidden))  # (..., F) -> (..., D)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


# --- counting: parameters, sizing, compute ---------------------------------
def ffn_param_count(d_model: int, d_ff: int, kind: str, bias: bool = False) -> int:
    """Parameters of one FFN block, counted from its shapes (equals ``count_parameters(FeedForward(...))``).

    Plain: ``2 D F`` (+ ``F + D`` biases); gated: ``3 D F`` (+ ``2 F + D`` biases).
    """
    n_mats = 3 if is_gated(kind) else 2
    weights = n_mats * d_model * d_ff
    biases = ((n_mats - 1) * d_ff + d_model) if bias else 0
    return weights + biases


def ffn_flops(d_model: int, d_ff: int, kind: str, tokens: int = 1) -> int:
    """Matrix-multiply FLOPs of one forward pass over ``tokens`` positions (a multiply-add counts 2).

    ``2 * n_mats * D * F`` per token: the elementwise activation and gate product
    (a few FLOPs per hidden unit) are left out, as PyTorch's ``FlopCounterMode`` does.
    A backward pass costs twice the forward.
    """
    n_mats = 3 if is_gated(kind) else 2
    return 2 * n_mats * d_model * d_ff * tokens


def matched_d_ff(d_model: int, kind: str, plain_d_ff: int | None = None, multiple_of: int = 1) -> int:
    """The ``d_ff`` that gives ``kind`` about the parameter count of a plain FFN of width ``plain_d_ff``.

    A gated FFN has three ``D x F`` matrices instead of two, so the matched width is
    ``2/3 * plain_d_ff`` (default ``plain_d_ff = 4 D``), then rounded *up* to a multiple of
    ``multiple_of``, exactly as Llama sizes its MLP (``int(2 * 4 D / 3)`` rounded up to
    ``multiple_of = 256``: 11008 for ``D = 4096``). Plain kinds return ``plain_d_ff``.
    The gated count then lies within ``3 D * multiple_of`` of the plain one.
    """
    if multiple_of <= 0:
        raise ValueError(f"multiple_of={multiple_of} must be a positive integer.")
    plain_d_ff = 4 * d_model if plain_d_ff is None else plain_d_ff
    if not is_gated(kind):
        return plain_d_ff
    width = int(2 * plain_d_ff / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


def ffn_variants(
    base: ModelConfig,
    kinds: Iterable[str] = SHAZEER_KINDS,
    sizing: str = "matched",
    multiple_of: int = 1,
) -> dict[str, ModelConfig]:
    """One model config per FFN kind, for a comparison.

    ``sizing='matched'``: gated kinds get :func:`matched_d_ff` of the base width, so every
    variant has (about) the same parameters; ``sizing='equal_width'``: every kind keeps the
    base ``d_ff``, so gated kinds hold 50% more FFN parameters and compute.
    """
    if sizing not in ("matched", "equal_width"):
        raise ValueError(f"sizing={sizing!r} must be 'matched' or 'equal_width'.")
    plain = base.resolved_d_ff
    out = {}
    for kind in kinds:
        d_ff = matched_d_ff(base.d_model, kind, plain, multiple_of) if sizing == "matched" else plain
        out[kind] = base.replace(ffn=kind, d_ff=d_ff)
    return out

