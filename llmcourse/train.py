"""The training loop: AdamW, warmup then cosine decay, gradient clipping, evaluation, checkpoints.

Shape legend: ``B`` batch, ``T`` sequence length.

A :class:`Trainer` is deterministic under ``TrainConfig.seed``: the batch
order comes from its own ``torch.Generator``, dropout from the global RNG,
and both are saved in checkpoints, so a run resumed from a checkpoint ends
with exactly the weights of an uninterrupted run. Metrics come back as a
:class:`History` of plain lists, ready to plot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .objectives import lm_loss
from .progress import progress_bar

Batch = dict[str, torch.Tensor]
BatchFn = Callable[[torch.Generator], Batch]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]

EVAL_SEED = 1234  # validation batches are the same for every run, so runs compare on equal terms


@dataclass
class TrainConfig:
    """Everything about optimisation (the model has its own :class:`~llmcourse.config.ModelConfig`)."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int = 100
    weight_decay: float = 0.1  # applied to matrices only (tensors with dim >= 2)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    eval_every: int = 100
    eval_batches: int = 8
    seed: int = 0
    progress: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batches"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}={v!r} must be a positive integer.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0.")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be positive.")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr={self.min_lr} must lie in [0, lr={self.lr}].")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip={self.grad_clip} must be positive, or None to disable clipping.")

    @property
    def resolved_min_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.resolved_min_lr + 0.5 * (cfg.lr - cfg.resolved_min_lr) * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (``dim >= 2``: linear weights, embeddings); none on biases and norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    unique = list({id(p): p for p in params}.values())
    return [
        {"params": [p for p in unique if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in unique if p.dim() < 2], "weight_decay": 0.0},
    ]


@dataclass
class History:
    """Metrics of a run as plain lists (``step`` counts from 1)."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> "History":
        return cls(**data)

    @property
    def final_val_loss(self) -> float:
        if not self.val_loss:
            raise ValueError("this run has no validation loss; give the Trainer val_batches.")
        return self.val_loss[-1]


class Trainer:
    """Train ``model`` on batches from ``train_batches(generator)`` with ``loss_fn(model, batch)``."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        train_batches: BatchFn,
        val_batches: BatchFn | None = None,
        loss_fn: LossFn = lm_loss,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.train_batches = train_batches
        self.loss_fn = loss_fn
        self.step = 0
        self.history = History()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # dropout and any other global randomness
        self.optimizer = torch.optim.AdamW(
            param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False
        )
        eval_gen = torch.Generator().manual_seed(EVAL_SEED)
        self.val_set = [val_batches(eval_gen) for _ in range(cfg.eval_batches)] if val_batches is not None else []

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed validation batches."""
        was_training = self.model.training
        self.model.eval()
        losses = [float(self.loss_fn(self.model, batch)) for batch in self.val_set]
        self.model.train(was_training)
        return sum(losses) / len(losses)

    def train_step(self, batch: Batch) -> tuple[float, float]:
        lr = lr_at(self.step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.loss_fn(self.model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the loss became {float(loss.detach())} at step {self.step + 1}; training diverged. Lower the learning rate, "
                "add warmup or gradient clipping (and save checkpoints to resume from)."
            )
        loss.backward()
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(loss.detach()), grad_norm

    def train(self, until: int | None = None, stop_on_divergence: bool = False) -> History:
        """Train up to step ``until`` (default ``cfg.steps``) and return the history so far.

        With ``stop_on_divergence=True`` a non-finite loss ends the run quietly
        (the history shows where), which is what a stability experiment wants.
        """
        until = self.cfg.steps if until is None else until
        self.model.train()
        bar = progress_bar(until, self.cfg.desc, self.cfg.progress)
        bar.update(self.step)
        h = self.history
        try:
            while self.step < until:
                batch = self.train_batches(self.generator)
                try:
                    loss, grad_norm = self.train_step(batch)
                except FloatingPointError:
                    if not stop_on_divergence:
                        raise
                    h.step.append(self.step + 1)
                    h.train_loss.append(float("nan"))
                    h.lr.append(lr_at(self.step, self.cfg))
                    h.grad_norm.append(float("nan"))
                    break
                h.step.append(self.step)
                h.train_loss.append(loss)
                h.lr.append(lr_at(self.step - 1, self.cfg))
                h.grad_norm.append(grad_norm)
                if self.val_set and (self.step % self.cfg.eval_every == 0 or self.step == self.cfg.steps):
                    h.eval_step.append(self.step)
                    h.val_loss.append(self.evaluate())
                postfix = f"loss {loss:.3f}" + (f" val {h.val_loss[-1]:.3f}" if h.val_loss else "")
                bar.set_postfix_str(postfix, refresh=False)
                bar.update(1)
        finally:
            bar.close()
        return h

    # --- checkpoints --------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Model, optimizer, RNG states, step and history in one atomic checkpoint file."""
        opt = self.optimizer.state_dict()
        tensors = {"rng.torch": torch.get_rng_state(), "rng.batches": self.generator.get_state()}
        for idx, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"optim.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        groups = [{k: v for k, v in g.items()} for g in opt["param_groups"]]
        trainer = {
            "step": self.step,
            "history": self.history.to_dict(),
            "train_config": asdict(self.cfg),
            "param_groups": groups,
        }
        return save_checkpoint(path, self.model, tensors=tensors, trainer=trainer)

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save`, so training continues exactly where it stopped."""
        ckpt = load_checkpoint(path)
        if "step" not in ckpt.trainer:
            raise CheckpointError(f"checkpoint {str(path)!r} holds weights only, no trainer state; load it with load_model.")
        load_weights(self.model, ckpt)
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in ckpt.tensors.items():
            if name.startswith("optim."):
                _, idx, key = name.split(".", 2)
                state.setdefault(int(idx), {})[key] = value
        groups = ckpt.trainer["param_groups"]
        for g in groups:
            g["betas"] = tuple(g["betas"])
        try:
            self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r}: optimizer state does not fit this model ({e}).") from None
        torch.set_rng_state(ckpt.tensors["rng.torch"])
        self.generator.set_state(ckpt.tensors["rng.batches"])
        self.step = int(ckpt.trainer["step"])
        self.history = History.from_dict(ckpt.trainer["history"])
