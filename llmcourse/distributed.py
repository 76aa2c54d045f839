"""Data parallelism through PyTorch's own engine: a process group from ``torchrun``'s environment, and DDP.

Shape legend: ``B`` batch, ``K`` processes (ranks).

``torchrun --standalone --nproc-per-node K -m llmcourse.train ...`` starts ``K``
copies of the training command and tells each one who it is through
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`start` reads them, joins the process
group (gloo on CPU, NCCL on CUDA, one GPU per local rank) and returns a
:class:`Run` whose ``wrap`` wraps a model in ``DistributedDataParallel``
(``--strategy fsdp``: shards it with FSDP2's ``fully_shard``); the
:class:`~llmcourse.train.Trainer` trains through the wrapped module and keeps
the plain one for checkpoints, so a run saved by ``K`` processes resumes on
any other number. :func:`stop` leaves the group. Without ``torchrun``
(``WORLD_SIZE`` unset or 1) nothing is initialised and ``wrap`` is ``None``.

The global batch ``B`` is split over ranks by the trainer: rank ``r`` keeps
rows ``r*B/K : (r+1)*B/K``, so the ranks together see exactly the batch one
process would, and DDP's gradient all-reduce (a mean) gives the one-process
gradient. FSDP reduce-scatters the same mean instead, so each rank updates only
its slice; the training command gathers the slices on rank 0 to write a
checkpoint, and slices a plain checkpoint again when an FSDP run resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .blocks import Block

STRATEGIES = ("ddp", "fsdp")



@dataclass
class Run:
    """Who this process is in a (possibly one-process) run, and how to wrap its model."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: no process group (one process)
    wrap: Callable[[nn.Module], nn.Module] | None = None
    sharded: bool = False  # FSDP: parameters and optimizer state are DTensor shards; checkpoints gather them

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer (torchrun sets it).") from None


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as ``torchrun`` sets them; ``(0, 1, 0)`` outside ``torchrun``."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank}, WORLD_SIZE={world}: need 0 <= RANK < WORLD_SIZE (torchrun sets both).")
    return rank, world, local


def check_strategy(strategy: str) -> None:
    """Raise ``ValueError`` for a strategy this command cannot run (before any process group exists)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not known; choose one of {', '.join(STRATEGIES)}.")


def backend_for(device: str) -> str:
    """gloo for CPU tensors, NCCL for CUDA ones."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def start(device: str = "cpu", strategy: str = "ddp") -> Run:
    """Join the process group ``torchrun`` describes and return this process's :class:`Run`.

    On CUDA, local rank ``i`` uses GPU ``i`` (``torch.cuda.set_device``), so the
    device name ``"cuda"`` means this rank's GPU. Outside ``torchrun``, or with
    one process, no group is created.
    """
    check_strategy(strategy)
    rank, world, local = world_from_env()
    if world == 1:
        return Run()
    if not torch.distributed.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run on one process (without torchrun).")
    dev = torch.device(device)
    backend = backend_for(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local} needs GPU {local}, but this machine has {torch.cuda.device_count()} CUDA device(s); "
                "start at most that many processes per node (--nproc-per-node)."
            )
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend)  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE

    if strategy == "fsdp":
        return Run(rank=rank, world_size=world, local_rank=local, backend=backend, wrap=fsdp_wrap, sharded=True)

    def wrap(model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if dev.type == "cuda":
            return DistributedDataParallel(model, device_ids=[local], output_device=local)
        return DistributedDataParallel(model)

    return Run(rank=rank, world_size=world, local_rank=local, backend=backend, wrap=wrap)


def fsdp_wrap(model: nn.Module) -> nn.Module:
    """Shard ``model`` with FSDP2: each transformer block is one unit (gathered for its forward and backward), then the rest.

    ``fully_shard`` changes the module in place (its parameters become DTensor
    shards, one slice per rank) and returns it.
    """
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules()):
        if isinstance(module, Block):
            fully_shard(module)
    return fully_shard(model)


def stop(run: Run) -> None:
    """Leave the process group :func:`start` joined (nothing to do on one process)."""
    if run.backend is not None and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(run: Run) -> None:
    """Wait for every rank (a no-op on one process)."""
    if run.backend is not None:
        torch.distributed.barrier()


# --- tensor parallelism ----------------------------------------------------------------------------------------------
def tensor_parallel(model: nn.Module, mesh=None) -> nn.Module:
    """Split every block's attention heads and feed-forward hidden units over the ranks of ``mesh`` (Megatron-LM).

    Shapes: ``q_proj/k_proj/v_proj (D -> H*Dh)`` and ``up_proj/gate_proj (D -> F)``
    are split by output columns (``ColwiseParallel``): rank ``r`` of ``K`` holds
    heads ``r*H/K : (r+1)*H/K`` and hidden units ``r*F/K : (r+1)*F/K`` and
    computes them from the whole (replicated) input ``(B, T, D)``.
    ``o_proj (H*Dh -> D)`` and ``down_proj (F -> D)`` are split by input rows
    (``RowwiseParallel``): each rank multiplies its slice, and one all-reduce per
    sublayer sums the partial outputs into the full ``(B, T, D)`` on every rank.
    Attention needs nothing else: its heads are independent, so each rank attends
    with its own ``H/K`` heads (``n_heads`` and ``n_kv_heads`` of each attention
    module become the local counts). Embeddings, norms and the output head stay
    whole on every rank. Two all-reduces per block forward (and two in backward)
    are the price; the weights and activations of the big matmuls are split ``K``
    ways.

    ``mesh`` is a one-dimensional :class:`~torch.distributed.device_mesh.DeviceMesh`
    (default: every rank of the process group, on the model's device type).
    The model is changed in place (its projection weights become DTensor shards)
    and returned. Refused: mixtures of experts (their experts are split by
    expert, not by column: expert parallelism), and position biases with one
    value per head (ALiBi, T5), which would need the same split.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from .attention import MultiHeadAttention
    from .ffn import FeedForward

    config = getattr(model, "config", None)
    if config is not None:
        if config.n_experts:
            raise ValueError(
                f"n_experts={config.n_experts}: tensor_parallel splits dense projections by column and row; a mixture "
                "of experts is split by expert (expert parallelism), which this function does not do."
            )
        if config.position in ("alibi", "t5"):
            raise ValueError(
                f"position={config.position!r} adds a bias with one value per head, which tensor_parallel does not "
                "split; use position 'rope', 'learned', 'sinusoidal' or 'none'."
            )
    if mesh is None:
        device_type = next(model.parameters()).device.type
        mesh = init_device_mesh(device_type, (torch.distributed.get_world_size(),))
    k = mesh.size()
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            if module.n_heads % k or module.n_kv_heads % k:
                raise ValueError(
                    f"n_heads={module.n_heads} and n_kv_heads={module.n_kv_heads} must both be divisible by the "
                    f"{k} tensor-parallel ranks (each rank keeps whole heads)."
                )
            plan = {"q_proj": ColwiseParallel(), "k_proj": ColwiseParallel(), "v_proj": ColwiseParallel(),
                    "o_proj": RowwiseParallel()}
            parallelize_module(module, mesh, plan)
            module.n_heads //= k  # the heads this rank computes
            module.n_kv_heads //= k
        elif isinstance(module, FeedForward):
            if module.up_proj.out_features % k:
                raise ValueError(f"d_ff={module.up_proj.out_features} must be divisible by the {k} tensor-parallel ranks.")
            plan = {"up_proj": ColwiseParallel(), "down_proj": RowwiseParallel()}
            if module.gate_proj is not None:
                plan["gate_proj"] = ColwiseParallel()
            parallelize_module(module, mesh, plan)
    return model


# --- expert parallelism ----------------------------------------------------------------------------------------------
def expert_parallel(model: nn.Module, group=None) -> nn.Module:
    """Split the experts of every mixture-of-experts layer over the ranks of ``group`` (GShard, Switch).

    Rank ``r`` of ``K`` keeps experts ``r*E/K : (r+1)*E/K`` of each
    :class:`~llmcourse.moe.MoEFeedForward` and drops the others; everything else
    (embeddings, attention, norms, routers, shared experts) stays whole on every
    rank. Each rank routes its own tokens (its own shard of the batch, as in data
    parallelism, with the capacity of its own tokens), sends each token to the rank
    that owns its expert with an all-to-all, and receives the results with a second
    one (:meth:`~llmcourse.moe.MoEFeedForward._all_to_all`). Memory for the experts
    falls ``K`` ways; the price is two all-to-alls per MoE layer, forward and backward.

    After ``backward``, call :func:`sync_expert_parallel_grads`: the replicated
    parameters need the data-parallel mean over ranks, and the experts, whose
    gradients already hold every rank's tokens, a division by ``K``. Then the
    gradients equal those of one process on the whole batch (tested with 2 gloo
    processes). Every rank must build the same model (same seed) before the split.
    The model is changed in place and returned. ``E`` must be divisible by ``K``.
    """
    import torch.distributed as dist

    from .moe import moe_layers

    layers = moe_layers(model)
    if not layers:
        raise ValueError("expert_parallel splits the experts of a mixture of experts; this model has none (n_experts=0).")
    group = group if group is not None else dist.group.WORLD
    K, r = dist.get_world_size(group), dist.get_rank(group)
    for layer in layers:
        if layer.n_experts % K:
            raise ValueError(
                f"n_experts={layer.n_experts} must be divisible by the {K} expert-parallel ranks (each rank keeps "
                f"n_experts / {K} whole experts); choose n_experts as a multiple of {K}."
            )
        L = layer.n_experts // K
        layer.experts = nn.ModuleList(list(layer.experts)[r * L:(r + 1) * L])
        layer.expert_group, layer.first_expert = group, r * L
    return model


def sync_expert_parallel_grads(model: nn.Module, group=None) -> None:
    """After ``backward`` on an :func:`expert_parallel` model: average the replicated gradients over the ranks
    (one all-reduce each) and divide the local experts' gradients by ``K``, so that every gradient equals one
    process's on the union of the ranks' batches (their mean loss)."""
    import torch.distributed as dist

    from .moe import moe_layers

    K = dist.get_world_size(group)
    local = {id(p) for layer in moe_layers(model) for p in layer.experts.parameters()}
    for p in model.parameters():
        if p.grad is None:
            continue
        if id(p) not in local:
            dist.all_reduce(p.grad, group=group)  # a sum over ranks; the division makes it a mean
        p.grad.div_(K)
