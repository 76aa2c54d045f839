"""The training loop: AdamW, warmup then cosine decay, gradient clipping, evaluation, checkpoints.

Shape legend: ``B`` batch, ``T`` sequence length.

A :class:`Trainer` is deterministic under ``TrainConfig.seed`` and keeps its
randomness to itself:

- the batch order comes from its own ``torch.Generator`` (:attr:`Trainer.generator`);
- dropout (and anything else that draws from torch's global RNG during a
  training step) uses the trainer's own RNG state, swapped in around each
  step and swapped out after it, so the caller's global random state is the
  same after constructing or running a trainer as before. On one process the
  sequence is exactly the one ``torch.manual_seed(cfg.seed)`` would give;
  rank ``r > 0`` of a distributed run uses ``cfg.seed + r``, so ranks drop
  different units.

Both states are saved in checkpoints, so a run resumed from a checkpoint ends
with exactly the weights of an uninterrupted run.

It scales from a notebook to several accelerators without changing those
numbers: ``TrainConfig.batch_size`` is the *global* batch; each step draws it
from the generator, the rank keeps its rows, and splits them into
``grad_accum_steps`` micro-batches; ``TrainConfig.device`` and
``autocast_dtype`` choose the hardware and precision; ``Trainer(wrap=...)``
wraps the model (DDP, FSDP) for forward and backward while
:attr:`Trainer.model` stays the plain module that is saved and loaded.

Components can report auxiliary losses and statistics
(:mod:`llmcourse.auxiliary`): the trainer collects them around every forward
pass, adds the losses to what it differentiates, and logs both by name. Metrics
come back as a :class:`History` of plain lists, ready to plot.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from . import auxiliary
from .blocks import Block
from .checkpoint import CheckpointError, check_weights, load_checkpoint, load_weights, save_checkpoint
from .config import revalidating_setattr
from .objectives import lm_loss
from .progress import progress_bar

Batch = dict[str, torch.Tensor]
BatchFn = Callable[[torch.Generator], Batch]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
WrapFn = Callable[[nn.Module], nn.Module]

EVAL_SEED = 1234  # validation batches are the same for every run, so runs compare on equal terms
AUTOCAST_DTYPES = ("bfloat16", "float16")
ADAMW_IMPLS = ("plain", "foreach", "fused")  # one parameter at a time | multi-tensor ops | one fused kernel per step


@dataclass
class TrainConfig:
    """Everything about optimisation (the model has its own :class:`~llmcourse.config.ModelConfig`).

    ``batch_size`` is the global batch: the rows one optimizer step sees, summed
    over ranks and micro-batches; it must be divisible by
    ``world_size * grad_accum_steps``.
    """

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float | None = None  # None: lr / 10
    warmup_steps: int | None = None  # None: min(100, steps)
    weight_decay: float = 0.1  # applied to matrices only (tensors with dim >= 2)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = 1.0  # max global gradient norm; None disables clipping
    eval_every: int = 100
    eval_batches: int = 8
    seed: int = 0
    progress: bool = True
    desc: str = "train"
    grad_accum_steps: int = 1  # micro-batches per step (each rank); gradients add up before the update
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "mps"...: the model and every batch move there
    autocast_dtype: str | None = None  # None (float32), "bfloat16" or "float16" (float16 adds a gradient scaler)
    adamw_impl: str = "plain"  # plain | foreach | fused: the same AdamW update, computed by different kernels
    activation_checkpointing: bool = False  # keep only each block's input; recompute the block in backward
    compile: bool = False  # torch.compile the (wrapped) model: fused kernels generated for this model

    def __setattr__(self, name: str, value: Any) -> None:
        # validated on construction; an assignment afterwards (trainer.cfg.lr = nan) is validated again and
        # undone if it is invalid, as ModelConfig does
        revalidating_setattr(self, name, value)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "grad_accum_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}={v!r} must be a positive integer.")
        if self.warmup_steps is not None:
            if not isinstance(self.warmup_steps, int) or isinstance(self.warmup_steps, bool) or self.warmup_steps < 0:
                raise ValueError(f"warmup_steps={self.warmup_steps!r} must be an integer >= 0, or None for min(100, steps).")
            if self.warmup_steps > self.steps:
                raise ValueError(
                    f"warmup_steps={self.warmup_steps} is more than steps={self.steps}: the learning rate would never "
                    f"reach lr={self.lr}. Use warmup_steps <= steps (a tenth of the steps is usual), or None for "
                    "min(100, steps)."
                )
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                raise ValueError(f"{name}={v!r} must be a finite number, not a {type(v).__name__}.")
            if v is not None and name not in ("lr", "grad_clip") and not math.isfinite(v):
                raise ValueError(f"{name}={v!r} must be a finite number.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0 (0 disables it; 0.1 is usual).")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name}={v} must lie in [0, 1) (Adam's moment decay; 0.9 and 0.95 are usual).")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r} must be an integer.")
        for name in ("progress", "activation_checkpointing", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False.")
        if self.adamw_impl not in ADAMW_IMPLS:
            raise ValueError(f"adamw_impl={self.adamw_impl!r} is not known; use {', '.join(repr(a) for a in ADAMW_IMPLS)}.")
        if not isinstance(self.desc, str):
            raise ValueError(f"desc={self.desc!r} must be a string (the progress bar's label).")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be a positive, finite number.")
        if self.min_lr is not None and not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr={self.min_lr} must lie in [0, lr={self.lr}].")
        if self.grad_clip is not None and (not math.isfinite(self.grad_clip) or self.grad_clip <= 0):
            raise ValueError(
                f"grad_clip={self.grad_clip} must be a positive, finite number, or None to disable clipping."
            )
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by grad_accum_steps={self.grad_accum_steps}; "
                "every micro-batch needs the same number of rows. Choose a divisor of the batch size."
            )
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device={self.device!r} is not a torch device ({e}); use 'cpu', 'cuda', 'cuda:0'...") from None
        if self.autocast_dtype is not None and self.autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(
                f"autocast_dtype={self.autocast_dtype!r} is not supported; use None (float32), "
                f"{' or '.join(repr(d) for d in AUTOCAST_DTYPES)}."
            )
        object.__setattr__(self, "_validated", True)

    @property
    def resolved_warmup_steps(self) -> int:
        """The warmup length used: ``warmup_steps``, or ``min(100, steps)`` when it is None."""
        return min(100, self.steps) if self.warmup_steps is None else self.warmup_steps

    @property
    def resolved_min_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of step ``step`` (counted from 0): linear warmup, then cosine decay to ``min_lr``.

    Warmup convention: step ``s < warmup_steps`` uses ``lr * (s + 1) / warmup_steps``,
    so the *first* step already moves, at ``lr / warmup_steps`` (not 0), and step
    ``warmup_steps - 1`` is the first at the full ``lr``. From there a cosine
    falls to ``min_lr``, which it reaches at step ``steps`` and keeps after.
    With ``warmup_steps = 0`` the first step runs at ``lr``; ``None`` warms up
    over ``min(100, steps)`` steps.
    """
    warmup = cfg.resolved_warmup_steps
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    span = max(1, cfg.steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return cfg.resolved_min_lr + 0.5 * (cfg.lr - cfg.resolved_min_lr) * (1 + math.cos(math.pi * progress))


def _check_loss(loss: Any, loss_fn: Callable) -> None:
    """The loss function must return one differentiable number."""
    name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"the loss function {name} returned {shape}, not a scalar tensor; reduce it (e.g. .mean()) "
                         "so that one number is differentiated.")
    if not loss.requires_grad:
        raise ValueError(f"the loss from {name} does not depend on any trainable parameter (no grad_fn); compute it "
                         "from the model's output, not under torch.no_grad() or from detached tensors.")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (``dim >= 2``: linear weights, embeddings); none on biases and norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    unique = list({id(p): p for p in params}.values())
    return [
        {"params": [p for p in unique if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in unique if p.dim() < 2], "weight_decay": 0.0},
    ]


# --- gradient clipping --------------------------------------------------------
def _grads(parameters: Iterable[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    if torch.is_tensor(parameters):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _by_device_and_dtype(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())


@torch.no_grad()
def grad_norm(parameters: Iterable[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """The global L2 norm of the existing gradients, ``sqrt(sum_p ||g_p||^2)``, as one scalar tensor.

    Computed as torch does: each gradient's norm, then the norm of those norms.
    Parameters without a gradient are skipped; ``tensor(0.)`` when none has one.

    Shapes: any parameters -> scalar.
    """
    grads = _grads(parameters)
    if not grads:
        return torch.tensor(0.0)
    first_device = grads[0].device
    norms = [torch.linalg.vector_norm(g) for group in _by_device_and_dtype(grads) for g in group]
    return torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]))


@torch.no_grad()
def scale_grads_to_norm(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float, total_norm: torch.Tensor) -> None:
    """Multiply every gradient by ``min(1, max_norm / (total_norm + 1e-6))`` in place (Pascanu et al. 2013)."""
    coef = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for group in _by_device_and_dtype(_grads(parameters)):
        coef_here = coef.to(group[0].device)
        for g in group:
            g.mul_(coef_here)


def clip_grad_norm(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Clip the existing gradients to a global L2 norm of at most ``max_norm``; return the norm before clipping.

    ``g <- g * min(1, max_norm / (||g|| + 1e-6))`` for every gradient, with
    ``||g||`` the norm of all gradients together (:func:`grad_norm`). The same
    numbers as ``torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=False)``.
    ``max_norm=None`` only measures. A non-finite norm is returned as it is
    (the gradients are then scaled by ``nan`` or 0, as torch does); the
    :class:`Trainer` checks the norm before it clips.
    """
    parameters = [parameters] if torch.is_tensor(parameters) else list(parameters)
    total = grad_norm(parameters)
    if max_norm is not None:
        scale_grads_to_norm(parameters, float(max_norm), total)
    return total


# --- history ------------------------------------------------------------------
@dataclass
class History:
    """Metrics of a run as plain lists (``step`` counts from 1).

    ``train_loss`` is the objective's loss (``loss_fn``) of each step, *without*
    the auxiliary losses; the step differentiated ``train_loss`` plus the sum of
    ``aux_losses``. ``aux_losses[name]`` and ``stats[name]`` hold one entry per
    entry of ``step`` (``nan`` / ``None`` where that name was not reported), so
    ``plt.plot(h.step, h.aux_losses["moe.balance"])`` works. A step that
    diverged under ``stop_on_divergence`` is logged with ``train_loss = nan``.
    Histories saved before these fields existed load with them empty.
    """

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    aux_losses: dict[str, list[float]] = field(default_factory=dict)
    stats: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        return cls(**data)

    @property
    def final_val_loss(self) -> float:
        if not self.val_loss:
            raise ValueError("this run has no validation loss; give the Trainer val_batches.")
        return self.val_loss[-1]

    def log_step(
        self,
        step: int,
        train_loss: float,
        lr: float,
        grad_norm: float,
        aux_losses: dict[str, float] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> None:
        """Append one step, keeping every named series as long as ``step``."""
        n = len(self.step)
        for series, values, missing in ((self.aux_losses, aux_losses or {}, math.nan), (self.stats, stats or {}, None)):
            for name in values:
                series.setdefault(name, [missing] * n)
            for name, column in series.items():
                column.append(values.get(name, missing))
        self.step.append(step)
        self.train_loss.append(train_loss)
        self.lr.append(lr)
        self.grad_norm.append(grad_norm)


# --- the trainer --------------------------------------------------------------
def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_mean(values: list[float], device: torch.device) -> list[float]:
    """The mean of each value over ranks (the values themselves on one process)."""
    if not _distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return (t / torch.distributed.get_world_size()).tolist()


def _rows(batch: Batch, keys: list[str], start: int, stop: int) -> Batch:
    return {k: (v[start:stop] if k in keys else v) for k, v in batch.items()}


class Trainer:
    """Train ``model`` on batches from ``train_batches(generator)`` with ``loss_fn(model, batch)``.

    ``wrap(model) -> module``, when given, wraps the model after it moves to
    ``cfg.device`` (``DistributedDataParallel``, ``FSDP``): forward and backward
    go through the wrapped module (:attr:`wrapped`), the optimizer holds its
    parameters, and :attr:`model` stays the plain module for saving and loading.
    Assigning ``trainer.model = other`` moves and wraps ``other``; it must share
    the parameters the optimizer holds (as :func:`~llmcourse.models.to_prefix_decoder`
    does). ``rank`` and ``world_size`` default to those of ``torch.distributed``
    when a process group is initialised, else 0 and 1.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        train_batches: BatchFn,
        val_batches: BatchFn | None = None,
        loss_fn: LossFn = lm_loss,
        *,
        wrap: WrapFn | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if world_size is None:
            world_size = torch.distributed.get_world_size() if _distributed() else 1
        if rank is None:
            rank = torch.distributed.get_rank() if _distributed() else 0
        if not isinstance(world_size, int) or world_size < 1 or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank!r}, world_size={world_size!r}: need integers with 0 <= rank < world_size.")
        shards = world_size * cfg.grad_accum_steps
        if cfg.batch_size % shards:
            raise ValueError(
                f"batch_size={cfg.batch_size} (the global batch) is not divisible by world_size * grad_accum_steps = "
                f"{world_size} * {cfg.grad_accum_steps} = {shards}; every rank and micro-batch needs the same number "
                "of rows. Change batch_size or grad_accum_steps."
            )
        self.cfg = cfg
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={cfg.device!r}, but this machine has no CUDA device; use device='cpu'.")
        self.autocast_dtype = getattr(torch, cfg.autocast_dtype) if cfg.autocast_dtype else None
        self.wrap = wrap
        self.model = model  # moves to the device and wraps (see the property)
        self.train_batches = train_batches
        self.loss_fn = loss_fn
        self.step = 0
        self.history = History()
        self.generator = torch.Generator().manual_seed(cfg.seed)  # the global batch order: the same on every rank
        self._init_rng(cfg.seed + rank)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                "every parameter of the model is frozen (requires_grad=False), so there is nothing to train; "
                "unfreeze what should learn, e.g. model.requires_grad_(True)."
            )
        impl = {"plain": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[cfg.adamw_impl]
        self.optimizer = torch.optim.AdamW(
            param_groups(self.wrapped, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **impl
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.autocast_dtype == "float16" else None
        self.last_aux_losses: dict[str, float] = {}  # the latest step's auxiliary losses and statistics
        self.last_stats: dict[str, Any] = {}
        eval_gen = torch.Generator().manual_seed(EVAL_SEED)
        with self.own_rng():
            self.val_set = [val_batches(eval_gen) for _ in range(cfg.eval_batches)] if val_batches is not None else []

    # --- model, device, precision -------------------------------------------
    @property
    def model(self) -> nn.Module:
        """The plain (unwrapped) model: what is saved, loaded and returned to the caller."""
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self._model = model.to(self.device)
        for module in self._model.modules():  # blocks recompute their activations in backward (or not)
            if isinstance(module, Block):
                module.activation_checkpointing = self.cfg.activation_checkpointing
        self.wrapped = self.wrap(self._model) if self.wrap is not None else self._model
        if self.cfg.compile:  # compiled on the first forward pass; the parameters stay the plain model's
            self.wrapped = torch.compile(self.wrapped)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cpu":
            return batch
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    # --- randomness -----------------------------------------------------------
    def _init_rng(self, seed: int) -> None:
        self._rng_depth = 0
        self.rng_state = torch.Generator().manual_seed(seed).get_state()  # = torch.manual_seed(seed)'s CPU state
        self.cuda_rng_state = None
        if self.device.type == "cuda":
            caller = torch.cuda.get_rng_state(self.device)
            torch.cuda.manual_seed(seed)
            self.cuda_rng_state = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(caller, self.device)

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run the block with the trainer's RNG state as torch's global one, then give the caller's back."""
        if self._rng_depth:  # already inside: the trainer's state is the global one
            yield
            return
        caller = torch.get_rng_state()
        caller_cuda = torch.cuda.get_rng_state(self.device) if self.cuda_rng_state is not None else None
        torch.set_rng_state(self.rng_state)
        if caller_cuda is not None:
            torch.cuda.set_rng_state(self.cuda_rng_state, self.device)
        self._rng_depth += 1
        try:
            yield
        finally:
            self._rng_depth -= 1
            self.rng_state = torch.get_rng_state()
            torch.set_rng_state(caller)
            if caller_cuda is not None:
                self.cuda_rng_state = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(caller_cuda, self.device)

    # --- batches --------------------------------------------------------------
    def micro_batches(self, batch: Batch) -> list[Batch]:
        """This rank's rows of a global batch, split into ``grad_accum_steps`` micro-batches.

        Rank ``r`` of ``K`` keeps rows ``r*B/K : (r+1)*B/K``; every tensor whose
        first dimension is the batch size ``B`` is sliced, anything else is passed
        through unchanged. With one process and no accumulation the batch comes
        back as it is. In every case the batch must have ``batch_size`` rows: the
        trainer saves that number with its checkpoints and splits by it.
        """
        shards = self.world_size * self.cfg.grad_accum_steps
        first = batch.get("input_ids")
        if not torch.is_tensor(first):
            first = next((v for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), None)
        B = first.shape[0] if first is not None else None
        if B != self.cfg.batch_size:
            raise ValueError(
                f"train_batches gave a batch of {B} rows but TrainConfig.batch_size={self.cfg.batch_size}; "
                "batch_size is the global batch (the rows of one optimizer step, which the trainer saves and, "
                f"with world_size={self.world_size} and grad_accum_steps={self.cfg.grad_accum_steps}, splits). "
                f"Set TrainConfig(batch_size={B}) or make the batch function produce batch_size rows."
            )
        if shards == 1:
            return [batch]
        keys = [k for k, v in batch.items() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == B]
        per_rank, per_micro = B // self.world_size, B // shards
        start = self.rank * per_rank
        return [_rows(batch, keys, start + i * per_micro, start + (i + 1) * per_micro) for i in range(self.cfg.grad_accum_steps)]

    # --- evaluation -------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the fixed validation batches (auxiliary losses are not part of it).

        Distributed, each rank scores its rows of every batch (all rows when the
        batch does not split evenly) and the means are averaged over ranks.
        """
        if not self.val_set:
            raise ValueError("this trainer has no validation batches; give the Trainer val_batches.")
        was_training = self.wrapped.training
        self.wrapped.eval()
        losses = []
        try:  # a loss that raises must not leave the model in eval mode (dropout off for the rest of training)
            with self.own_rng():
                for batch in self.val_set:
                    rows = next((v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.dim() > 0), 0)
                    if self.world_size > 1 and rows % self.world_size == 0:
                        keys = [k for k, v in batch.items() if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == rows]
                        per_rank = rows // self.world_size
                        batch = _rows(batch, keys, self.rank * per_rank, (self.rank + 1) * per_rank)
                    with self._autocast():
                        losses.append(float(self.loss_fn(self.wrapped, self._to_device(batch))))
        finally:
            self.wrapped.train(was_training)
        return _all_reduce_mean([sum(losses) / len(losses)], self.device)[0]

    # --- one step ---------------------------------------------------------------
    def _diverged(self, message: str) -> FloatingPointError:
        self.optimizer.zero_grad(set_to_none=True)  # nothing of this step survives
        broken = [name for name, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if broken:  # a finite gradient whose optimizer step overflowed (a learning rate too large for float32)
            shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
            return FloatingPointError(
                f"{message} at step {self.step + 1} because the weights are already non-finite ({shown}): the "
                f"optimizer update of step {self.step} overflowed although its gradient norm was finite. Lower the "
                "learning rate and resume from the last checkpoint (save_checkpoint refuses non-finite weights, so "
                "it holds finite ones)."
            )
        return FloatingPointError(
            f"{message} at step {self.step + 1}; training diverged and this update was not applied (the weights are "
            "those before the step). Lower the learning rate, add warmup or gradient clipping "
            "(and save checkpoints to resume from)."
        )

    def train_step(self, batch: Batch) -> tuple[float, float]:
        """One optimizer step on one global batch; returns ``(loss, gradient norm before clipping)``.

        The loss is the objective's, averaged over micro-batches weighted by their
        share of the rows (exact for losses that average over the same number of
        tokens in every row, as language modelling on full windows does).
        Auxiliary losses are computed per micro-batch and averaged the same way
        (a loss of the whole batch, such as a load-balancing loss, becomes the
        mean of its micro-batch values). The step's auxiliary losses (averaged
        over ranks, like the loss) and statistics (this rank's) are left in
        :attr:`last_aux_losses` and :attr:`last_stats`. A non-finite loss, or a
        finite loss with non-finite gradients, raises ``FloatingPointError``
        before anything is applied.
        """
        with self.own_rng():
            lr = lr_at(self.step, self.cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            micro = self.micro_batches(batch)
            weight = 1.0 / len(micro)
            loss_sum, aux_sums = 0.0, {}
            stats = auxiliary.AuxiliaryOutputs()
            for i, mb in enumerate(micro):
                last = i == len(micro) - 1
                no_sync = getattr(self.wrapped, "no_sync", None)  # DDP: all-reduce gradients once, after the last
                sync = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
                with sync:
                    with auxiliary.collect() as aux, self._autocast():
                        loss = self.loss_fn(self.wrapped, self._to_device(mb))
                    _check_loss(loss, self.loss_fn)
                    values = [loss.detach()] + [v.detach() for v in aux.losses.values()]
                    finite = torch.isfinite(torch.stack([v.float() for v in values])).all()
                    if _distributed():  # every rank must take the same branch, or the others wait forever
                        flag = finite.to(torch.float32).to(self.device)
                        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                        finite = bool(flag)
                    if not finite:
                        bad = {"loss": float(loss.detach())} | {k: float(v.detach()) for k, v in aux.losses.items()}
                        bad = {k: v for k, v in bad.items() if not math.isfinite(v)} or {"loss on another rank": math.nan}
                        raise self._diverged("the " + ", ".join(f"{k} became {v}" for k, v in bad.items()))
                    objective = loss + aux.total() if aux.losses else loss
                    if len(micro) > 1:
                        objective = objective * weight
                    if self.scaler is not None:
                        objective = self.scaler.scale(objective)
                    objective.backward()
                loss_sum += weight * float(loss.detach()) if len(micro) > 1 else float(loss.detach())
                for name, value in aux.losses.items():
                    aux_sums[name] = aux_sums.get(name, 0.0) + weight * float(value.detach())
                for name, value in aux.stats.items():
                    stats.add_stat(name, torch.tensor(value))
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            params = [p for p in self.wrapped.parameters()]
            fsdp_clip = getattr(self.wrapped, "clip_grad_norm_", None)  # FSDP: the norm over every rank's shard
            total = fsdp_clip(math.inf) if fsdp_clip is not None else grad_norm(params)
            norm = float(total)
            if not math.isfinite(norm) and self.scaler is None:
                raise self._diverged(f"the gradient norm became {norm} (with a finite loss {loss_sum:.4g})")
            if self.cfg.grad_clip is not None and math.isfinite(norm):
                scale_grads_to_norm(params, self.cfg.grad_clip, total)
            if self.scaler is not None:  # float16: the scaler skips a step with inf/nan gradients and lowers its scale
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            reduced = _all_reduce_mean([loss_sum, *aux_sums.values()], self.device)
            self.last_aux_losses = dict(zip(aux_sums, reduced[1:]))
            self.last_stats = stats.stats
            return reduced[0], norm

    def train(self, until: int | None = None, stop_on_divergence: bool = False) -> History:
        """Train up to step ``until`` (default ``cfg.steps``) and return the history so far.

        With ``stop_on_divergence=True`` a non-finite loss or gradient ends the
        run quietly, with the weights of the last good step (the history shows
        where: that step's ``train_loss`` is ``nan``), which is what a stability
        experiment wants.
        """
        until = self.cfg.steps if until is None else until
        self.wrapped.train()
        bar = progress_bar(until, self.cfg.desc, self.cfg.progress)
        bar.update(self.step)
        h = self.history
        try:
            with self.own_rng():
                while self.step < until:
                    batch = self.train_batches(self.generator)
                    try:
                        loss, norm = self.train_step(batch)
                    except FloatingPointError:
                        if not stop_on_divergence:
                            raise
                        h.log_step(self.step + 1, math.nan, lr_at(self.step, self.cfg), math.nan)
                        break
                    h.log_step(self.step, loss, lr_at(self.step - 1, self.cfg), norm, self.last_aux_losses, self.last_stats)
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
    def save(self, path: str | Path, allow_nonfinite: bool = False) -> Path:
        """Model, optimizer, RNG states, step and history in one atomic checkpoint file.

        Every rank holds the same weights under DDP; save from rank 0 only. The
        file keeps this rank's dropout RNG state. Weights or optimizer state with
        ``nan``/``inf`` are refused unless ``allow_nonfinite=True``
        (:func:`~llmcourse.checkpoint.save_checkpoint`).
        """
        opt = self.optimizer.state_dict()
        tensors = {"rng.torch": self.rng_state, "rng.batches": self.generator.get_state()}
        if self.cuda_rng_state is not None:
            tensors["rng.cuda"] = self.cuda_rng_state
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
        if self.scaler is not None:
            trainer["grad_scaler"] = self.scaler.state_dict()
        return save_checkpoint(path, self.model, tensors=tensors, trainer=trainer, allow_nonfinite=allow_nonfinite)

    def load(self, path: str | Path, config_mismatch: str = "error") -> None:
        """Restore a checkpoint written by :meth:`save`, so training continues exactly where it stopped.

        The checkpoint's :class:`TrainConfig` must equal this trainer's (``progress``
        and ``desc`` aside; fields a checkpoint predates count as their defaults):
        a different ``lr``, ``steps`` or ``batch_size`` silently changes the run,
        so a difference raises :class:`~llmcourse.checkpoint.CheckpointError`
        naming the fields. ``config_mismatch="allow"`` accepts them and continues
        under this trainer's config. Everything (weights' names and shapes,
        optimizer state, RNG states, history) is checked before anything is
        changed: a failed load leaves the trainer and its model as they were.
        """
        if config_mismatch not in ("error", "allow"):
            raise ValueError(f"config_mismatch={config_mismatch!r}: use 'error' (the default) or 'allow'.")
        name = str(path)
        ckpt = load_checkpoint(path)
        if "step" not in ckpt.trainer:
            raise CheckpointError(f"checkpoint {name!r} holds weights only, no trainer state; load it with llmcourse.models.load_model.")
        if config_mismatch == "error":
            diffs = self._config_differences(ckpt.trainer.get("train_config", {}))
            if diffs:
                raise CheckpointError(
                    f"checkpoint {name!r} was trained with another TrainConfig: {'; '.join(diffs)}. Resume with the "
                    "checkpoint's settings, or accept the new ones with trainer.load(path, config_mismatch='allow')."
                )
        check_weights(self.model, ckpt)
        optimizer_state = self._checked_optimizer_state(ckpt, name)
        for key in ("rng.torch", "rng.batches"):
            if key not in ckpt.tensors:
                raise CheckpointError(f"checkpoint {name!r} lacks the random state {key!r}; it was not written by Trainer.save.")
            try:
                torch.Generator().set_state(ckpt.tensors[key])
            except (RuntimeError, TypeError) as e:
                raise CheckpointError(f"checkpoint {name!r}: the random state {key!r} is not a generator state ({e}).") from None
        try:
            history = History.from_dict(ckpt.trainer["history"])
            step = int(ckpt.trainer["step"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {name!r} has an unreadable step or history ({e}).") from None
        # everything fits: now change the trainer
        load_weights(self.model, ckpt)
        self.optimizer.load_state_dict(optimizer_state)
        self.rng_state = ckpt.tensors["rng.torch"]
        if self.cuda_rng_state is not None and "rng.cuda" in ckpt.tensors:
            self.cuda_rng_state = ckpt.tensors["rng.cuda"]
        self.generator.set_state(ckpt.tensors["rng.batches"])
        if self.scaler is not None and "grad_scaler" in ckpt.trainer:
            self.scaler.load_state_dict(ckpt.trainer["grad_scaler"])
        self.step = step
        self.history = history

    def _config_differences(self, saved: dict[str, Any]) -> list[str]:
        ignored = ("progress", "desc", "activation_checkpointing", "compile")  # how, not what, is computed
        defaults = asdict(TrainConfig())
        current = asdict(self.cfg)
        return [
            f"{k}: checkpoint {saved.get(k, defaults[k])!r}, now {current[k]!r}"
            for k in current
            if k not in ignored and saved.get(k, defaults[k]) != current[k]
        ]

    def _checked_optimizer_state(self, ckpt, name: str) -> dict[str, Any]:
        """The checkpoint's optimizer state, checked against this optimizer's parameters (nothing is loaded)."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in ckpt.tensors.items():
            if key.startswith("optim."):
                _, idx, field_name = key.split(".", 2)
                state.setdefault(int(idx), {})[field_name] = value
        try:
            groups = [dict(g) for g in ckpt.trainer["param_groups"]]
            for g in groups:
                g["betas"] = tuple(g["betas"])
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint {name!r} has unreadable optimizer settings ({e}).") from None
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        sizes = [len(g["params"]) for g in groups]
        if sizes != [len(g["params"]) for g in self.optimizer.param_groups]:
            raise CheckpointError(
                f"checkpoint {name!r}: optimizer state does not fit this model (parameter groups of sizes {sizes}, "
                f"the optimizer has {[len(g['params']) for g in self.optimizer.param_groups]})."
            )
        for idx, entries in state.items():
            if not 0 <= idx < len(params):
                raise CheckpointError(f"checkpoint {name!r}: optimizer state for parameter {idx}, but there are {len(params)}.")
            for field_name, value in entries.items():
                if field_name != "step" and value.shape != params[idx].shape:
                    raise CheckpointError(
                        f"checkpoint {name!r}: optimizer state optim.{idx}.{field_name} has shape {tuple(value.shape)}, "
                        f"its parameter {tuple(params[idx].shape)}; the optimizer state does not fit this model."
                    )
        # the hyperparameters are this trainer's: equal to the saved ones unless config_mismatch="allow"
        # accepted another TrainConfig, whose weight decay and betas must then win over the checkpoint's
        for saved, current in zip(groups, self.optimizer.param_groups):
            saved.update({k: v for k, v in current.items() if k != "params"})
        return {"state": state, "param_groups": groups}


# --- the command line: python -m llmcourse.train ------------------------------------------------
# (module-level imports of the command; kept here so the trainer above reads on its own)
import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
import typing  # noqa: E402
from dataclasses import fields as _fields, replace as _replace  # noqa: E402

from . import distributed  # noqa: E402
from .checkpoint import atomic_write  # noqa: E402
from .config import ModelConfig  # noqa: E402
from .data import LMBatches, load_corpus  # noqa: E402
from .models import build_model  # noqa: E402
from .tokenizers import BPETokenizer  # noqa: E402

_argv = getattr(sys, "orig_argv", [])
if "-m" in _argv and _argv[_argv.index("-m") + 1 : _argv.index("-m") + 2] == [__name__]:
    # `python -m llmcourse.train`: the package imports this module before runpy runs it again as __main__,
    # and runpy warns that it is already imported. Harmless (the command below calls the package's main).
    import warnings

    warnings.filterwarnings("ignore", message=f"'{__name__}' found in sys.modules", category=RuntimeWarning)

DATA_FIELDS: dict[str, Any] = {"corpus": str, "tokenizer": str, "val_fraction": float, "plays": int | None}
DATA_DEFAULTS: dict[str, Any] = {"corpus": "shakespeare", "tokenizer": "char", "val_fraction": 0.1, "plays": None}
SECTIONS = ("model", "train", "data")


class ConfigError(ValueError):
    """A training command's configuration file is unreadable or names something that does not exist."""


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {int: "integer", float: "number", bool: "true/false", str: "string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _type_ok(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or typing.get_origin(hint) is dict:
        return isinstance(value, dict)
    return True


def _checked_section(section: str, values: Any, hints: dict[str, Any]) -> dict[str, Any]:
    """The section's fields, each known and of its declared type (an int where a float is due becomes a float)."""
    if not isinstance(values, dict):
        raise ConfigError(f"section [{section}] must be a table of fields, not {type(values).__name__}.")
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(
            f"unknown field(s) {', '.join(f'{section}.{k}' for k in unknown)}; [{section}] accepts {', '.join(sorted(hints))}."
        )
    out = {}
    for name, value in values.items():
        hint = hints[name]
        if not _type_ok(value, hint):
            raise ConfigError(f"{section}.{name}={value!r} has the wrong type: expected {_type_name(hint)}, got {type(value).__name__}.")
        if isinstance(value, int) and not isinstance(value, bool) and not _type_ok(value, _ints_only(hint)):
            value = float(value)  # lr = 1 in a file means 1.0
        out[name] = value
    return out


def _ints_only(hint: Any) -> Any:
    """``hint`` without ``float``: an int that fits it stays an int."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return typing.Union[tuple(a for a in typing.get_args(hint) if a is not float) or (type(None),)]
    return type(None) if hint is float else hint


def read_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a JSON (or ``.toml``) run file into checked ``model``, ``train`` and ``data`` sections.

    Every section is optional; ``data`` defaults to the Shakespeare corpus with
    a character tokenizer. Raises :class:`ConfigError` naming an unknown
    section or field, or a value of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"config file {str(path)!r} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold one object with the sections {', '.join(SECTIONS)}.")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)} in {str(path)!r}; the sections are {', '.join(SECTIONS)}.")
    model_hints = {f.name: typing.get_type_hints(ModelConfig)[f.name] for f in _fields(ModelConfig)}
    train_hints = {f.name: typing.get_type_hints(TrainConfig)[f.name] for f in _fields(TrainConfig)}
    return {
        "model": _checked_section("model", raw.get("model", {}), model_hints),
        "train": _checked_section("train", raw.get("train", {}), train_hints),
        "data": {**DATA_DEFAULTS, **_checked_section("data", raw.get("data", {}), DATA_FIELDS)},
    }


@dataclass
class RunPlan:
    """Everything a run needs, checked before any process group starts or any step runs."""

    model_config: ModelConfig
    train_config: TrainConfig
    data: dict[str, Any]
    corpus: Any  # llmcourse.data.Corpus
    train_batches: LMBatches
    val_batches: LMBatches


def plan_run(config: dict[str, dict[str, Any]], world_size: int = 1) -> RunPlan:
    """Load the tokenizer and corpus a checked config names and build (and check) the model and train configs."""
    data = config["data"]
    tokenizer = None
    if data["tokenizer"] != "char":
        folder = Path(data["tokenizer"])
        if not folder.is_dir():
            raise ConfigError(
                f"data.tokenizer={data['tokenizer']!r}: no such tokenizer folder; use 'char' (characters of the corpus) "
                "or the folder BPETokenizer.save (python -m llmcourse.tokenizers train) wrote."
            )
        try:
            tokenizer = BPETokenizer.load(folder)
        except ValueError as e:
            raise ConfigError(f"data.tokenizer: {e}") from None
    try:
        corpus = load_corpus(data["corpus"], val_fraction=data["val_fraction"], plays=data["plays"], tokenizer=tokenizer)
    except (OSError, ValueError) as e:
        raise ConfigError(f"data.corpus={data['corpus']!r}: {e}") from None
    model_fields = dict(config["model"])
    vocab = corpus.vocab_size
    if model_fields.setdefault("vocab_size", vocab) != vocab:
        raise ConfigError(
            f"model.vocab_size={model_fields['vocab_size']} does not match the tokenizer's vocabulary of {vocab} tokens "
            f"(data.tokenizer={data['tokenizer']!r}); remove model.vocab_size to take the tokenizer's."
        )
    try:
        model_config = ModelConfig.from_dict(model_fields)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None
    if model_config.arch != "decoder":
        raise ConfigError(f"model.arch={model_config.arch!r}: the training command trains decoder-only language models ('decoder').")
    try:
        train_config = TrainConfig(**config["train"])
    except ValueError as e:
        raise ConfigError(f"train: {e}") from None
    if torch.device(train_config.device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={train_config.device!r}, but this machine has no CUDA device; use 'cpu'.")
    shards = world_size * train_config.grad_accum_steps
    if train_config.batch_size % shards:
        raise ConfigError(
            f"train.batch_size={train_config.batch_size} is the global batch and must be divisible by the number of "
            f"processes times train.grad_accum_steps = {world_size} * {train_config.grad_accum_steps} = {shards}; "
            "change batch_size, grad_accum_steps or the number of processes."
        )
    T, B = model_config.max_seq_len, train_config.batch_size
    batches = []
    for name, ids in (("training", corpus.train_ids), ("validation", corpus.val_ids)):
        try:
            batches.append(LMBatches(ids, B, T))
        except ValueError:
            raise ConfigError(
                f"model.max_seq_len={T}: the {name} text has only {len(ids)} tokens, too few for windows of {T} + 1 "
                "tokens; lower max_seq_len, use a longer corpus, or change data.val_fraction."
            ) from None
    return RunPlan(model_config, train_config, data, corpus, batches[0], batches[1])


def _plain_trainer(plan: RunPlan) -> Trainer:
    """A one-process trainer of an unsharded model: the form in which a sharded run is saved and loaded."""
    return Trainer(build_model(plan.model_config), _replace(plan.train_config, progress=False), plan.train_batches,
                   rank=0, world_size=1)


def _copy_progress(src: Trainer, dst: Trainer) -> None:
    dst.rng_state, dst.cuda_rng_state = src.rng_state, src.cuda_rng_state
    dst.generator.set_state(src.generator.get_state())
    dst.step, dst.history = src.step, src.history


def _save_sharded(plan: RunPlan, trainer: Trainer, path: Path, main_rank: bool) -> Path | None:
    """Gather an FSDP run's weights and optimizer state on rank 0 and write an ordinary checkpoint (every rank calls)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(trainer.wrapped, options=options)
    optim = get_optimizer_state_dict(trainer.wrapped, trainer.optimizer, options=options)
    if not main_rank:
        return None
    plain = _plain_trainer(plan)
    plain.model.load_state_dict(weights)
    names = [n for g in optim["param_groups"] for n in g["params"]]  # parameter names, in the optimizer's order
    index = {n: i for i, n in enumerate(names)}
    plain.optimizer.load_state_dict({
        "state": {index[n]: v for n, v in optim["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in optim["param_groups"]],
    })
    _copy_progress(trainer, plain)
    return plain.save(path)


def _load_sharded(plan: RunPlan, trainer: Trainer, path: Path) -> None:
    """Load an ordinary checkpoint into an FSDP run: every rank reads it and keeps its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    plain = _plain_trainer(plan)
    plain.load(path)  # every check of Trainer.load (model, TrainConfig, optimizer shapes)
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(trainer.wrapped, plain.model.state_dict(), options=options)
    name_of = {id(p): n for n, p in plain.model.named_parameters()}
    names = [name_of[id(p)] for g in plain.optimizer.param_groups for p in g["params"]]
    state = plain.optimizer.state_dict()
    set_optimizer_state_dict(trainer.wrapped, trainer.optimizer, {
        "state": {names[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }, options=options)
    _copy_progress(plain, trainer)


def checkpoint_name(step: int) -> str:
    """The file a run's checkpoint of step ``step`` is written to, inside ``--out``."""
    return f"step_{step:06d}.safetensors"


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llmcourse.train",
        description="Train a decoder-only language model from a config file (JSON, or TOML by its .toml suffix) "
        "with sections model (ModelConfig fields), train (TrainConfig fields) and data (corpus, tokenizer, "
        "val_fraction, plays). Under torchrun every process runs this same command (DDP or FSDP; batch_size is global).",
    )
    p.add_argument("--config", required=True, type=Path, metavar="FILE", help="run file: JSON, or TOML with a .toml suffix")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for history.json and the checkpoints")
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue from a checkpoint of this command (any number of processes)")
    p.add_argument("--save-every", type=int, default=0, metavar="N", help="also save a checkpoint every N steps (0: only at the end)")
    p.add_argument("--strategy", default="ddp", choices=distributed.STRATEGIES, help="how processes share the work under torchrun")
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.train --config FILE --out DIR [--resume CKPT] [--save-every N] [--strategy ddp|fsdp]``.

    Writes ``DIR/config.json`` (the resolved config), the tokenizer,
    ``DIR/history.json`` and ``DIR/step_NNNNNN.safetensors`` checkpoints (every
    ``N`` steps and at the end), all from rank 0 only. A bad config exits with
    code 2 and a message naming the problem on stderr, before any training.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        distributed.check_strategy(args.strategy)
        if args.save_every < 0:
            raise ConfigError(f"--save-every={args.save_every} must be >= 0 (0 saves only at the end).")
        _, world_size, _ = distributed.world_from_env()
        plan = plan_run(read_config(args.config), world_size)
        if args.resume is not None and not args.resume.is_file():
            raise ConfigError(f"--resume {str(args.resume)!r}: no such checkpoint file.")
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError(f"--out {str(args.out)!r} is a file, not a folder.")
        if args.resume is None and (args.out / "history.json").exists():
            raise ConfigError(
                f"--out {str(args.out)!r} already holds a run (history.json); continue it with --resume "
                f"{str(args.out / 'step_NNNNNN.safetensors')!r}, or choose another folder."
            )
    except ValueError as e:
        parser.error(str(e))
    run = distributed.start(plan.train_config.device, args.strategy)
    try:
        return _run(plan, run, args, parser)
    finally:
        distributed.stop(run)


def _run(plan: RunPlan, run: "distributed.Run", args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cfg, out, main_rank = plan.train_config, args.out, run.is_main
    model = build_model(plan.model_config, seed=cfg.seed)
    try:
        trainer = Trainer(
            model, _replace(cfg, progress=False), plan.train_batches, plan.val_batches,
            wrap=run.wrap, rank=run.rank, world_size=run.world_size,
        )
    except ValueError as e:  # e.g. device='cuda' on a machine without one
        parser.error(f"train: {e}")
    if args.resume is not None:
        try:
            if run.sharded:
                _load_sharded(plan, trainer, args.resume)
            else:
                trainer.load(args.resume)
        except ValueError as e:  # CheckpointError: another model or TrainConfig
            parser.error(f"--resume: {e}")
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", {"model": plan.model_config.to_dict(), "train": asdict(cfg), "data": plan.data})
        tok = plan.corpus.tokenizer
        if isinstance(tok, BPETokenizer):
            tok.save(out / "tokenizer")
        else:
            tok.save(out / "tokenizer.json")

    def save() -> Path | None:
        if run.sharded:  # every rank takes part in gathering the shards; rank 0 writes
            path = _save_sharded(plan, trainer, out / checkpoint_name(trainer.step), main_rank)
        elif main_rank:
            path = trainer.save(out / checkpoint_name(trainer.step))
        if not main_rank:
            return None
        _write_json(out / "history.json", trainer.history.to_dict())
        return path

    show = main_rank and cfg.progress
    tty = show and sys.stdout.isatty()
    bar = progress_bar(cfg.steps, cfg.desc, tty)
    bar.update(trainer.step)
    every_line = max(1, cfg.steps // 20)
    if show and not tty:
        print(f"{cfg.desc}: {cfg.steps} steps, {run.world_size} process(es), global batch {cfg.batch_size}, "
              f"{plan.model_config.max_seq_len} tokens per row; from step {trainer.step}", flush=True)
    try:
        while trainer.step < cfg.steps:
            evals = len(trainer.history.val_loss)
            try:
                h = trainer.train(until=trainer.step + 1)
            except FloatingPointError as e:
                if main_rank:
                    print(f"python -m llmcourse.train: error: {e}", file=sys.stderr, flush=True)
                return 1
            step, loss = trainer.step, h.train_loss[-1]
            val = h.val_loss[-1] if len(h.val_loss) > evals else None
            text = f"loss {loss:.4f}" + (f" val {h.val_loss[-1]:.4f}" if h.val_loss else "")
            bar.set_postfix_str(text, refresh=False)
            bar.update(1)
            if show and not tty and (step % every_line == 0 or val is not None or step == cfg.steps):
                print(f"step {step}/{cfg.steps} loss {loss:.4f}" + (f" val {val:.4f}" if val is not None else "")
                      + f" lr {h.lr[-1]:.3g}", flush=True)
            if args.save_every and step % args.save_every == 0 and step < cfg.steps:
                save()
    finally:
        bar.close()
    path = save()
    if main_rank:
        h = trainer.history
        val = f", val loss {h.val_loss[-1]:.4f}" if h.val_loss else ""
        last = f"train loss {h.train_loss[-1]:.4f}" if h.train_loss else "no steps"
        print(f"done: step {trainer.step}, {last}{val}; checkpoint {path}", flush=True)
    return 0


if __name__ == "__main__":
    from llmcourse.train import main as _main  # the package's copy, not a second __main__ module

    raise SystemExit(_main())
