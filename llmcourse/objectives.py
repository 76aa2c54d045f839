"""Pre-training objectives. Shape legend: ``B`` batch, ``T`` length, ``V`` vocab.

A *batch* is a dict: the model's keyword inputs (``input_ids``, and per objective
``prefix_len``, ``decoder_input_ids``, ``attention_mask``) plus ``targets``
``(B, T)`` with :data:`IGNORE` where no loss is taken. :func:`lm_loss` works for
every objective, because an objective is fully described by its batches:

- language modelling: targets are the inputs shifted by one, loss everywhere
  (``L_LM(x) = sum_i log P(x_i | x_<i)``);
- prefix language modelling: the same, with targets inside the prefix ignored;
- denoising (span corruption): the encoder reads corrupted text, the decoder
  predicts the removed spans.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # target id that takes no loss (PyTorch's cross_entropy default)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch without its targets: what the model is called with."""
    return {k: v for k, v in batch.items() if k != "targets"}


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over non-ignored targets. Shapes: ``(B, T, V)``, ``(B, T)`` -> scalar."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Call the model on the batch's inputs and score its ``targets``."""
    if "targets" not in batch:
        raise ValueError("a training batch needs 'targets' (B, T) next to the model inputs.")
    return cross_entropy(model(**model_inputs(batch)), batch["targets"])
