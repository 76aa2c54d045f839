"""Mixture of experts: a router, expert capacity and dropped tokens, two dispatches, auxiliary losses.

Shape legend: ``B`` batch, ``T`` tokens per sequence, ``D`` d_model, ``F`` d_ff of one expert,
``E`` experts, ``N = B*T`` tokens; here also ``k`` experts per token (``top_k``) and ``C`` the
capacity of one expert.

A mixture-of-experts layer replaces the one feed-forward block of a Transformer layer by ``E``
of them (the experts) and a router that sends each token to ``k`` of them (Shazeer et al. 2017):

    ``p(x) = softmax(x W_r)`` (``E`` probabilities per token, computed in float32),
    ``y(x) = sum over the k chosen experts e of  g_e(x) * FFN_e(x)``.

- **Top-1** (Switch Transformer, Fedus et al. 2021): the argmax expert, gate ``g = p_max``.
- **Top-k** (GShard, GLaM, Mixtral): the ``k`` most probable experts, gates renormalised to sum
  to 1 over the chosen ones (equal to a softmax over the ``k`` top logits).
  ``router_renormalize`` overrides the rule: True renormalises for every ``k`` (Mixtral's code,
  which gives a top-1 gate of exactly 1), False never (Qwen2-MoE and DeepSeek with
  ``norm_topk_prob=False``); None (default) is the rule above.
- **Jitter** (Switch): while training only, the router's *input* is multiplied by noise drawn
  uniformly from ``[1 - eps, 1 + eps]``; the experts see the clean input.
- **Capacity**: one expert takes at most ``C = ceil(capacity_factor * tokens * k / E)``
  assignments (or ``expert_capacity`` when set). Assignments are served in the reference order:
  every token's first choice, in token order, then every second choice, ... (GShard); an
  assignment past an expert's capacity is *dropped*, contributes zero, and a token whose every
  choice was dropped leaves the layer with zero: the residual connection carries it on
  unchanged. ``capacity_factor=None`` drops nothing (Mixtral). ``capacity_scope`` says which
  tokens compete for one capacity: the whole call (``"batch"``, ``tokens = N``) or each
  sequence on its own (``"sequence"``, ``tokens = T``; HF Switch Transformers, Mesh-TF groups).
- **Load-balancing loss** (Switch, eq. 4): ``coef * E * sum_i f_i P_i`` with ``P_i`` the mean
  router probability of expert ``i`` and ``f_i`` the fraction of the ``N k`` assignments that
  chose it (before capacity). For top-1 that is Switch's fraction of tokens whose argmax is
  ``i``; for top-k we normalise by assignments so that ``sum_i f_i = 1`` for every ``k`` and a
  balanced router scores exactly ``coef`` (HF Mixtral normalises by tokens, so its value is
  ``k`` times ours). ``f`` is counted, so only ``P`` carries a gradient.
- **Router z-loss** (ST-MoE, Zoph et al. 2022): ``coef * mean_tokens(logsumexp(logits)^2)``.
- **Shared experts** (DeepSeekMoE, Dai et al. 2024): ``n_shared_experts`` experts every token
  uses, stored as one feed-forward block ``n_shared_experts`` times as wide (the sum of several
  experts on the same input is one wider expert), added to the routed output.

Both losses and the statistics (``moe.load`` the fraction of assignments per expert,
``moe.dropped`` the fraction of assignments dropped, ``moe.dropped_tokens`` the fraction of
tokens that lost every choice, ``moe.entropy`` the mean router entropy in nats) go through
:mod:`llmcourse.auxiliary`, and are computed only inside :func:`llmcourse.auxiliary.collect`.

Two dispatches compute the same function (a test proves equal outputs and gradients):
``"reference"`` loops over experts with boolean masks (readable, what a notebook builds);
``"sorted"`` sorts the assignments by expert once, runs each expert on its contiguous slice
and adds the weighted results back with ``index_add_`` (no Python loop over tokens, no
``N x E`` masks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import auxiliary
from .config import MOE_DISPATCHES, ModelConfig
from .ffn import FeedForward, count_parameters

CAPACITY_SCOPES = ("batch", "sequence")


def _check_positive_int(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer.")


def _check_number(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r} must be a finite number >= 0.")


# --- routing ---------------------------------------------------------------------------
@dataclass
class Routing:
    """The router's decision for ``N`` tokens, and which assignments the capacity kept.

    ``logits``, ``probs``: ``(N, E)`` float32; ``experts``: ``(N, k)`` chosen experts, most
    probable first; ``weights``: ``(N, k)`` float32 gate values; ``kept``: ``(N, k)`` bool,
    False where an assignment was dropped over capacity; ``capacity``: ``C`` (None: unlimited).
    """

    logits: torch.Tensor
    probs: torch.Tensor
    experts: torch.Tensor
    weights: torch.Tensor
    kept: torch.Tensor
    capacity: int | None = None

    @property
    def dropped(self) -> torch.Tensor:
        """``(N, k)`` bool: assignments dropped over capacity."""
        return ~self.kept

    @property
    def dropped_tokens(self) -> torch.Tensor:
        """``(N,)`` bool: tokens none of whose choices was kept (they leave the layer as zero)."""
        return ~self.kept.any(dim=-1)


def route(
    logits: torch.Tensor, top_k: int, renormalize: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax and top-k selection. Shapes: ``logits (N, E)`` -> ``probs (N, E)``, ``experts (N, k)``, ``weights (N, k)``.

    Top-1: the gate is the top probability (Switch). Top-k, ``k > 1``: the ``k`` top
    probabilities renormalised to sum to 1 (GShard, GLaM, Mixtral). ``renormalize=True``
    or ``False`` forces renormalising (or not) for every ``k``.
    """
    probs = torch.softmax(logits.float(), dim=-1)  # (N, E), float32 whatever the model's dtype
    top_probs, experts = torch.topk(probs, top_k, dim=-1)  # (N, k), most probable first
    if (top_k > 1) if renormalize is None else renormalize:
        top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)
    return probs, experts, top_probs


class Router(nn.Module):
    """Linear gate ``D -> E``, softmax in float32, top-k. Shapes: ``x (N, D)`` -> :class:`Routing`.

    ``jitter``: while training, the router's input is multiplied by noise uniform in
    ``[1 - jitter, 1 + jitter]`` (Switch Transformer); in eval mode it is never applied.
    ``renormalize``: see :func:`route` (None: renormalise the gates for ``top_k > 1`` only).
    The gate's weight is ``gate.weight`` ``(E, D)``, initialised as a plain normal
    (``init_role = "router"``, see :func:`llmcourse.blocks.init_weights`).
    """

    init_role = "router"

    def __init__(
        self, d_model: int, n_experts: int, top_k: int = 1, jitter: float = 0.0, bias: bool = False,
        renormalize: bool | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("d_model", d_model)
        _check_positive_int("n_experts", n_experts)
        _check_positive_int("top_k", top_k)
        if top_k > n_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and n_experts={n_experts}.")
        _check_number("router_jitter", jitter)
        self.n_experts, self.top_k, self.jitter = n_experts, top_k, float(jitter)
        self.renormalize = renormalize
        self.gate = nn.Linear(d_model, n_experts, bias=bias)
        self.gate.init_role = "router"

    @property
    def renormalize(self) -> bool | None:
        """Whether the gates are renormalised over the chosen experts (None: for ``top_k > 1`` only)."""
        return self._renormalize

    @renormalize.setter
    def renormalize(self, value: bool | None) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"router_renormalize={value!r} must be None (renormalise for top_k > 1 only), True or False.")
        self._renormalize = value

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits in float32. Shapes: ``(N, D) -> (N, E)``."""
        x = x.float()
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        bias = self.gate.bias.float() if self.gate.bias is not None else None
        return F.linear(x, self.gate.weight.float(), bias)  # (N, D) -> (N, E)

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.logits(x)  # (N, E)
        probs, experts, weights = route(logits, self.top_k, self.renormalize)
        kept = torch.ones_like(experts, dtype=torch.bool)  # capacity is applied by the layer
        return Routing(logits, probs, experts, weights, kept)

    def extra_repr(self) -> str:
        extra = "" if self.renormalize is None else f", renormalize={self.renormalize}"
        return f"n_experts={self.n_experts}, top_k={self.top_k}, jitter={self.jitter}{extra}"


# --- capacity --------------------------------------------------------------------------
def expert_capacity(
    tokens: int, n_experts: int, top_k: int = 1, capacity_factor: float | None = None, capacity: int | None = None
) -> int | None:
    """Assignments one expert takes: ``capacity`` if given, else ``ceil(capacity_factor * tokens * top_k / E)``.

    ``None`` (no ``capacity`` and no ``capacity_factor``) means unlimited: nothing is dropped.
    """
    _check_positive_int("expert_capacity", capacity, allow_none=True)
    if capacity is not None:
        return capacity
    if capacity_factor is None:
        return None
    if not (isinstance(capacity_factor, (int, float)) and capacity_factor > 0):
        raise ValueError(f"capacity_factor={capacity_factor!r} must be positive, or None to drop no tokens.")
    return math.ceil(capacity_factor * tokens * top_k / n_experts)


def capacity_mask(experts: torch.Tensor, n_experts: int, capacity: int | None, groups: int = 1) -> torch.Tensor:
    """Which assignments fit in capacity, by the reference rule, written with one-hot counts.

    Shapes: ``experts (N, k)`` -> kept ``(N, k)`` bool. The ``N`` tokens form ``groups``
    consecutive groups (sequences) with a capacity each. Within a group, assignments queue
    choice by choice (every first choice in token order, then every second choice), and the
    first ``capacity`` in each expert's queue are kept.
    """
    N, k = experts.shape
    if capacity is None:
        return torch.ones_like(experts, dtype=torch.bool)
    one_hot = F.one_hot(experts, n_experts)  # (N, k, E)
    queue = one_hot.view(groups, N // groups, k, n_experts).transpose(1, 2)  # (G, k, N/G, E): choice-major
    queue = queue.reshape(groups, -1, n_experts)  # (G, k N/G, E)
    position = queue.cumsum(dim=1) - 1  # place of each assignment in its expert's queue
    position = (position * queue).sum(dim=-1)  # (G, k N/G)
    kept = position < capacity
    return kept.view(groups, k, N // groups).transpose(1, 2).reshape(N, k)


@dataclass
class Assignment:
    """The kept assignments sorted by expert: the plan of the sorted dispatch.

    ``token``, ``choice``: ``(M,)`` which token and which of its choices each kept assignment
    is, grouped by expert (expert 0's first); ``counts``: ``(E,)`` kept assignments per
    expert (a Python list, to split the batch); ``kept``: ``(N, k)`` bool.
    """

    token: torch.Tensor
    choice: torch.Tensor
    counts: list[int]
    kept: torch.Tensor


def sort_by_expert(experts: torch.Tensor, n_experts: int, capacity: int | None, groups: int = 1) -> Assignment:
    """Group the assignments by expert with one stable sort and apply capacity (same rule as :func:`capacity_mask`).

    Shapes: ``experts (N, k)`` -> :class:`Assignment` with ``M <= N k`` kept assignments.
    """
    N, k = experts.shape
    device = experts.device
    flat_expert = experts.t().reshape(-1)  # (k N,) choice-major: every first choice, then every second
    flat_token = torch.arange(N, device=device).repeat(k)  # (k N,)
    group = flat_token // (N // groups)
    key = flat_expert * groups + group  # expert-major, then group
    order = torch.argsort(key, stable=True)  # stable: within (expert, group) the queue order is kept
    if capacity is not None:
        sorted_key = key[order]
        per_key = torch.bincount(key, minlength=n_experts * groups)  # (E G,)
        start = per_key.cumsum(0) - per_key
        position = torch.arange(k * N, device=device) - start[sorted_key]  # place in its expert's queue
        order = order[position < capacity]  # (M,)
    kept = torch.zeros(k * N, dtype=torch.bool, device=device)
    kept[order] = True
    counts = torch.bincount(flat_expert[order], minlength=n_experts).tolist()
    return Assignment(flat_token[order], order // N, counts, kept.view(k, N).t())


# --- auxiliary losses ------------------------------------------------------------------
def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch's balance loss without its coefficient: ``E * sum_i f_i P_i``. Shapes: ``(N, E), (N, k)`` -> scalar.

    ``f_i``: fraction of the ``N k`` assignments that chose expert ``i`` (counted, no gradient);
    ``P_i``: mean router probability of expert ``i``. Equals 1 when either is uniform.
    """
    E = probs.shape[-1]
    f = torch.bincount(experts.reshape(-1), minlength=E).to(probs.dtype) / experts.numel()  # (E,)
    P = probs.mean(dim=0)  # (E,)
    return E * (f * P).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss without its coefficient: ``mean_tokens(logsumexp(logits)^2)``. Shapes: ``(N, E)`` -> scalar."""
    return torch.logsumexp(logits, dim=-1).square().mean()


def router_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the router distribution, in nats (``ln E`` when uniform). Shapes: ``(N, E)`` -> scalar."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1).mean()


# --- the layer -------------------------------------------------------------------------
def _combine(x: torch.Tensor, plan: Assignment, routing: Routing, y: torch.Tensor) -> torch.Tensor:
    """Weight the experts' outputs ``y (M, D)`` (in ``plan`` order) by their gates and add them back at their tokens -> ``(N, D)``."""
    gate = routing.weights[plan.token, plan.choice]  # (M,)
    return torch.zeros_like(x).index_add_(0, plan.token, (y * gate[:, None]).to(x.dtype))


class MoEFeedForward(nn.Module):
    """A mixture-of-experts feed-forward block. Shapes: ``(..., D) -> (..., D)``, like :class:`~llmcourse.ffn.FeedForward`.

    Submodules: ``router`` (:class:`Router`), ``experts`` (``nn.ModuleList`` of ``E``
    :class:`~llmcourse.ffn.FeedForward` of width ``d_ff``, kind ``kind``), and
    ``shared_experts`` (one :class:`~llmcourse.ffn.FeedForward` of width
    ``n_shared_experts * d_ff``, or None). ``forward(x, return_routing=True)`` also returns
    the :class:`Routing` (``routing.dropped_tokens`` shows which tokens were dropped).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        top_k: int = 1,
        kind: str = "gelu",
        *,
        bias: bool = True,
        dropout: float = 0.0,
        fused: bool = False,
        capacity_factor: float | None = None,
        expert_capacity: int | None = None,
        router_jitter: float = 0.0,
        router_bias: bool = False,
        balance_loss_coef: float = 0.01,
        router_z_loss_coef: float = 1e-3,
        n_shared_experts: int = 0,
        dispatch: str = "sorted",
        capacity_scope: str = "batch",
        router_renormalize: bool | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int("d_ff", d_ff)
        _check_positive_int("expert_capacity", expert_capacity, allow_none=True)
        if capacity_factor is not None and not (isinstance(capacity_factor, (int, float)) and capacity_factor > 0):
            raise ValueError(f"capacity_factor={capacity_factor!r} must be positive (Switch: 1.0-1.25), or None to drop no tokens.")
        _check_number("balance_loss_coef", balance_loss_coef)
        _check_number("router_z_loss_coef", router_z_loss_coef)
        if not isinstance(n_shared_experts, int) or isinstance(n_shared_experts, bool) or n_shared_experts < 0:
            raise ValueError(f"n_shared_experts={n_shared_experts!r} must be a non-negative integer.")
        self.router = Router(d_model, n_experts, top_k, router_jitter, router_bias, router_renormalize)
        self.experts = nn.ModuleList(
            FeedForward(d_model, d_ff, kind, bias=bias, dropout=dropout, fused=fused) for _ in range(n_experts)
        )
        self.shared_experts = (
            FeedForward(d_model, n_shared_experts * d_ff, kind, bias=bias, dropout=dropout, fused=fused)
            if n_shared_experts else None
        )
        self.n_experts, self.top_k, self.n_shared_experts = n_experts, top_k, n_shared_experts
        self.capacity_factor, self.expert_capacity = capacity_factor, expert_capacity
        self.balance_loss_coef, self.router_z_loss_coef = float(balance_loss_coef), float(router_z_loss_coef)
        self.dispatch, self.capacity_scope = dispatch, capacity_scope
        # expert parallelism (llmcourse.distributed.expert_parallel): the process group the
        # experts are split over, and the global index of this rank's first expert
        self.expert_group, self.first_expert = None, 0

    @property
    def dispatch(self) -> str:
        """``"sorted"`` (grouped by expert) or ``"reference"`` (loop over experts with masks); same function."""
        return self._dispatch

    @dispatch.setter
    def dispatch(self, value: str) -> None:
        if value not in MOE_DISPATCHES:
            raise ValueError(f"moe_dispatch={value!r} is not a known option; choose one of {', '.join(MOE_DISPATCHES)}.")
        self._dispatch = value

    @property
    def capacity_scope(self) -> str:
        """Which tokens compete for one expert's capacity: all of a call (``"batch"``) or each sequence's."""
        return self._capacity_scope

    @capacity_scope.setter
    def capacity_scope(self, value: str) -> None:
        if value not in CAPACITY_SCOPES:
            raise ValueError(
                f"capacity_scope={value!r} is not a known option; choose one of {', '.join(CAPACITY_SCOPES)} "
                "('batch': all tokens of a call share each expert's capacity; 'sequence': each sequence has its own)."
            )
        self._capacity_scope = value

    @classmethod
    def from_config(cls, config: ModelConfig) -> "MoEFeedForward":
        """The MoE layer a :class:`~llmcourse.config.ModelConfig` describes (experts of kind ``config.ffn``)."""
        if not config.n_experts:
            raise ValueError("n_experts=0 describes a dense feed-forward; set n_experts > 0 for a mixture of experts.")
        return cls(
            config.d_model,
            config.expert_d_ff or config.resolved_d_ff,
            config.n_experts,
            config.top_k,
            config.ffn,
            bias=config.bias,
            dropout=config.dropout,
            fused=config.fused_kernels,
            capacity_factor=config.capacity_factor,
            expert_capacity=config.expert_capacity,
            router_jitter=config.router_jitter,
            router_bias=config.router_bias,
            balance_loss_coef=config.balance_loss_coef,
            router_z_loss_coef=config.router_z_loss_coef,
            n_shared_experts=config.n_shared_experts,
            dispatch=config.moe_dispatch,
            # HF Switch counts capacity per sequence; HF Mixtral renormalises a single gate to 1
            capacity_scope=config.moe_capacity_scope,
            router_renormalize=config.router_renormalize,
        )

    def capacity(self, tokens: int) -> int | None:
        """Capacity of one expert when ``tokens`` tokens compete for it (None: unlimited)."""
        return expert_capacity(tokens, self.n_experts, self.top_k, self.capacity_factor, self.expert_capacity)

    def forward(self, x: torch.Tensor, return_routing: bool = False) -> torch.Tensor | tuple[torch.Tensor, Routing]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (..., D) -> (N, D)
        N = flat.shape[0]
        if self.capacity_scope == "sequence" and x.dim() >= 2:
            per_group = shape[-2]  # each sequence (the next-to-last axis) has its own capacity
        else:
            per_group = N
        groups = N // per_group if per_group else 1
        routing = self.router(flat)
        routing.capacity = self.capacity(per_group)
        if self.expert_group is not None:
            out = self._all_to_all(flat, routing, groups)
        elif self.dispatch == "sorted":
            out = self._sorted(flat, routing, groups)
        else:
            out = self._reference(flat, routing, groups)
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        if auxiliary.collecting():
            self._report(routing)
        out = out.view(shape)
        return (out, routing) if return_routing else out

    def _reference(self, x: torch.Tensor, routing: Routing, groups: int) -> torch.Tensor:
        """Loop over experts with boolean masks. Shapes: ``x (N, D)`` -> ``(N, D)``."""
        routing.kept = capacity_mask(routing.experts, self.n_experts, routing.capacity, groups)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            chosen = (routing.experts == e) & routing.kept  # (N, k): a token picks an expert at most once
            tokens = chosen.any(dim=-1)  # (N,) tokens this expert serves
            if tokens.any():
                gate = (routing.weights * chosen).sum(dim=-1)[tokens]  # (N_e,)
                out[tokens] += (gate[:, None] * expert(x[tokens])).to(x.dtype)  # (N_e, D)
        return out

    def _sorted(self, x: torch.Tensor, routing: Routing, groups: int) -> torch.Tensor:
        """Sort assignments by expert, one matmul chain per expert slice, weighted ``index_add_`` back."""
        plan = sort_by_expert(routing.experts, self.n_experts, routing.capacity, groups)
        routing.kept = plan.kept
        xs = x.index_select(0, plan.token)  # (M, D), grouped by expert
        ys = [expert(chunk) if n else chunk for expert, chunk, n in zip(self.experts, xs.split(plan.counts), plan.counts)]
        return _combine(x, plan, routing, torch.cat(ys))

    def _all_to_all(self, x: torch.Tensor, routing: Routing, groups: int) -> torch.Tensor:
        """Expert parallelism: this rank's kept assignments go to the ranks that own their experts.

        Rank ``r`` of ``K`` owns experts ``r*L : (r+1)*L`` (``L = E / K``, ``self.experts`` holds
        only those). Shapes: ``x (N, D)`` this rank's tokens -> ``(N, D)``. One all-to-all
        sends the per-expert counts, one sends the ``(M, D)`` token rows (grouped by expert, so
        by owner), the owners run their experts on the rows from every rank, and one more
        all-to-all brings the ``(M, D)`` results home, where the gates weight them and
        ``index_add_`` puts them back, as in :meth:`_sorted`. Both row exchanges are
        differentiable, so the experts' gradients come from every rank's tokens.
        """
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_to_all_single

        group, K = self.expert_group, dist.get_world_size(self.expert_group)
        L, D = len(self.experts), x.shape[-1]
        plan = sort_by_expert(routing.experts, self.n_experts, routing.capacity, groups)
        routing.kept = plan.kept
        counts = torch.tensor(plan.counts, device=x.device)  # (E,) rows this rank sends to each expert
        recv = torch.empty_like(counts)
        dist.all_to_all_single(recv, counts, group=group)  # (K L,): rows each rank sends to my experts
        recv = recv.view(K, L).tolist()  # [source rank][local expert]
        send_splits = counts.view(K, L).sum(dim=1).tolist()
        recv_splits = [sum(row) for row in recv]
        xs = x.index_select(0, plan.token)  # (M, D), grouped by expert, so by owning rank
        rows = all_to_all_single(x.new_empty(sum(recv_splits), D), xs, recv_splits, send_splits, group=group)
        chunks = rows.split([n for row in recv for n in row])  # source-major, then local expert
        outs: list[list[torch.Tensor]] = [[] for _ in range(K)]
        for e, expert in enumerate(self.experts):
            mine = [chunks[s * L + e] for s in range(K)]
            batch = torch.cat(mine)  # (rows for expert e from every rank, D)
            y = expert(batch) if batch.shape[0] else batch
            for s, part in enumerate(y.split([len(m) for m in mine])):
                outs[s].append(part)
        back = torch.cat([part for per_source in outs for part in per_source])  # source-major again
        ys = all_to_all_single(x.new_empty(xs.shape[0], D), back, send_splits, recv_splits, group=group)
        return _combine(x, plan, routing, ys)

    def _report(self, routing: Routing) -> None:
        if self.balance_loss_coef > 0:
            auxiliary.add_loss("moe.balance", self.balance_loss_coef * load_balancing_loss(routing.probs, routing.experts))
        if self.router_z_loss_coef > 0:
            auxiliary.add_loss("moe.z_loss", self.router_z_loss_coef * router_z_loss(routing.logits))
        with torch.no_grad():
            E = self.n_experts
            load = torch.bincount(routing.experts.reshape(-1), minlength=E).float() / routing.experts.numel()
            auxiliary.add_stat("moe.load", load)
            auxiliary.add_stat("moe.dropped", routing.dropped.float().mean())
            auxiliary.add_stat("moe.dropped_tokens", routing.dropped_tokens.float().mean())
            auxiliary.add_stat("moe.entropy", router_entropy(routing.logits))

    def extra_repr(self) -> str:
        cap = f"capacity_factor={self.capacity_factor}" if self.expert_capacity is None else f"expert_capacity={self.expert_capacity}"
        return f"n_experts={self.n_experts}, top_k={self.top_k}, {cap}, dispatch={self.dispatch!r}, capacity_scope={self.capacity_scope!r}"


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """Every :class:`MoEFeedForward` in ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


def count_moe_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, active_per_token)`` trainable parameters.

    Active: everything a token's forward pass uses, i.e. all parameters except the routed
    experts it does not choose: per MoE layer, the router, the shared experts and ``top_k``
    of the ``E`` routed experts (with capacity dropping a token may use fewer).
    """
    total = count_parameters(model)
    inactive = 0
    for layer in moe_layers(model):
        per_expert = count_parameters(layer.experts[0])
        inactive += (layer.n_experts - layer.top_k) * per_expert
    return total, total - inactive
