"""Counting a module's parameters (floor 1: every chapter and module may use it).

Shape legend: ``D`` d_model, ``F`` d_ff, ``E`` experts.

Shared tensors (tied embeddings) count once. Mixture-of-experts models have a
second number, the parameters *active* per token; :mod:`llmcourse.moe` counts it.
"""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of distinct parameters (shared tensors once), trainable ones only by default."""
    seen: dict[int, int] = {}
    for p in module.parameters():
        if trainable_only and not p.requires_grad:
            continue
        seen[id(p)] = p.numel()
    return sum(seen.values())
