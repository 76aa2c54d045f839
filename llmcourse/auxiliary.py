"""Auxiliary losses and statistics: a side channel from any component to the training loop.

Some components have something to say besides their output: a mixture-of-experts
layer has a load-balancing loss and a router z-loss that must join the training
loss, and statistics (expert loads, dropped tokens) worth logging. Threading
them through every block's and model's return value would change every
signature in the course; instead a component *reports* them, and whoever runs
the forward pass *collects* them::

    with collect() as aux:
        logits = model(input_ids)          # components call add_loss / add_stat
    loss = objective(logits) + aux.total()  # None-safe: 0 when nothing was added
    aux.losses   # {"moe.balance": tensor(...), ...}, summed over layers
    aux.stats    # {"moe.dropped": 0.03, ...}, averaged over layers

Outside a :func:`collect` block the reports are dropped, so evaluation,
generation and a notebook that just calls the model pay nothing and see
nothing. The :class:`~llmcourse.train.Trainer` collects around every training
step, adds :meth:`AuxiliaryOutputs.total` to the loss it differentiates, and
logs each loss and statistic in its ``History`` by name.

Losses keep their graph (they are differentiated); statistics are detached and
turned into Python numbers (or lists of numbers for a vector such as expert
loads). A component is responsible for scaling its loss by its own coefficient
(e.g. ``ModelConfig.balance_loss_coef``) before it reports it.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch

_ACTIVE: contextvars.ContextVar[tuple["AuxiliaryOutputs", ...]] = contextvars.ContextVar(
    "llmcourse_auxiliary", default=()
)


class AuxiliaryOutputs:
    """What the components reported during one forward pass (or several, e.g. micro-batches)."""

    def __init__(self) -> None:
        self.losses: dict[str, torch.Tensor] = {}
        self._stat_sums: dict[str, torch.Tensor] = {}
        self._stat_counts: dict[str, int] = {}

    def add_loss(self, name: str, value: torch.Tensor) -> None:
        if not torch.is_tensor(value) or value.dim() != 0:
            raise ValueError(f"auxiliary loss {name!r} must be a scalar tensor, got {type(value).__name__}.")
        self.losses[name] = self.losses[name] + value if name in self.losses else value

    def add_stat(self, name: str, value: torch.Tensor | float) -> None:
        value = torch.as_tensor(value).detach().float().cpu()
        if name in self._stat_sums:
            if self._stat_sums[name].shape != value.shape:
                raise ValueError(
                    f"statistic {name!r} changed shape from {tuple(self._stat_sums[name].shape)} to "
                    f"{tuple(value.shape)}; report one shape per name (or use distinct names)."
                )
            self._stat_sums[name] = self._stat_sums[name] + value
            self._stat_counts[name] += 1
        else:
            self._stat_sums[name], self._stat_counts[name] = value, 1

    @property
    def stats(self) -> dict[str, float | list[float]]:
        """Each statistic averaged over its reports: a float, or a list for a vector statistic."""
        out: dict[str, float | list[float]] = {}
        for name, total in self._stat_sums.items():
            mean = total / self._stat_counts[name]
            out[name] = mean.item() if mean.dim() == 0 else mean.tolist()
        return out

    def total(self) -> torch.Tensor | float:
        """The sum of every auxiliary loss (``0.0`` when none was reported)."""
        total: torch.Tensor | float = 0.0
        for value in self.losses.values():
            total = total + value
        return total

    def __repr__(self) -> str:
        losses = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in self.losses.items())
        return f"AuxiliaryOutputs(losses: {losses or 'none'}; stats: {', '.join(self._stat_sums) or 'none'})"


@contextlib.contextmanager
def collect() -> Iterator[AuxiliaryOutputs]:
    """Collect what components report inside the ``with`` block. Blocks nest; the innermost collects."""
    outputs = AuxiliaryOutputs()
    token = _ACTIVE.set(_ACTIVE.get() + (outputs,))
    try:
        yield outputs
    finally:
        _ACTIVE.reset(token)


def collecting() -> bool:
    """Whether a :func:`collect` block is open (a component may skip computing what nobody reads)."""
    return bool(_ACTIVE.get())


def add_loss(name: str, value: torch.Tensor) -> None:
    """Report an auxiliary loss (a scalar tensor, already scaled by its coefficient). Dropped outside :func:`collect`."""
    stack = _ACTIVE.get()
    if stack:
        stack[-1].add_loss(name, value)


def add_stat(name: str, value: torch.Tensor | float) -> None:
    """Report a statistic (a number or a vector, e.g. per-expert loads). Dropped outside :func:`collect`."""
    stack = _ACTIVE.get()
    if stack:
        stack[-1].add_stat(name, value)
