"""Honest comparisons: train several variants over several seeds, report the spread, plot it.

Every chapter's comparison goes through :func:`run_variants`, so every one
states its budget (steps, tokens, parameters) the same way and shows the
seed-to-seed spread next to the differences it claims.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from .config import ModelConfig
from .data import LMBatches
from .ffn import count_parameters
from .models import build_model
from .objectives import lm_loss
from .progress import progress_bar
from .train import BatchFn, History, LossFn, TrainConfig, Trainer


@dataclass
class RunResult:
    name: str
    seed: int
    params: int
    tokens: int  # training tokens seen (inputs, not counting padding)
    history: History

    @property
    def final_val_loss(self) -> float:
        return self.history.final_val_loss


def run_variants(
    variants: dict[str, ModelConfig],
    train_cfg: TrainConfig,
    train_batches: BatchFn | None = None,
    val_batches: BatchFn | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    loss_fn: LossFn = lm_loss,
    corpus=None,
    stop_on_divergence: bool = False,
    desc: str = "runs",
    after_run: Callable[[RunResult, torch.nn.Module], None] | None = None,
) -> list[RunResult]:
    """Train each variant once per seed (model init, batch order and dropout all follow the seed).

    Give either ``corpus`` (language modelling on its train/val split at each
    model's ``max_seq_len``) or explicit ``train_batches``/``val_batches``.
    One progress bar counts the runs. ``after_run(result, model)``, when given, is
    called with each trained model before it is dropped, for measurements beyond
    the validation loss (chapter 04 evaluates every model at longer lengths).
    """
    if corpus is None and train_batches is None:
        raise ValueError("give run_variants a corpus or train_batches (and val_batches).")
    results = []
    bar = progress_bar(len(variants) * len(seeds), desc, train_cfg.progress)
    for name, cfg in variants.items():
        tb, vb = train_batches, val_batches
        if corpus is not None:
            tb = LMBatches(corpus.train_ids, train_cfg.batch_size, cfg.max_seq_len)
            vb = LMBatches(corpus.val_ids, train_cfg.batch_size, cfg.max_seq_len)
        for seed in seeds:
            model = build_model(cfg, seed=seed)
            run_cfg = replace(train_cfg, seed=seed, progress=False)
            trainer = Trainer(model, run_cfg, tb, vb, loss_fn)
            history = trainer.train(stop_on_divergence=stop_on_divergence)
            probe = tb(torch.Generator().manual_seed(0))["input_ids"]
            tokens = probe.numel() * len(history.step)
            results.append(RunResult(name, seed, count_parameters(model), tokens, history))
            if after_run is not None:
                after_run(results[-1], model)
            bar.set_postfix_str(f"{name} seed {seed}", refresh=False)
            bar.update(1)
    bar.close()
    return results


def summarize(results: list[RunResult], metric: Callable[[RunResult], float] | None = None) -> list[dict]:
    """One row per variant: parameters, tokens, mean, standard deviation, min and max over seeds."""
    metric = metric or (lambda r: r.final_val_loss)
    rows = []
    for name in dict.fromkeys(r.name for r in results):
        runs = [r for r in results if r.name == name]
        values = [metric(r) for r in runs]
        rows.append({
            "variant": name,
            "params": runs[0].params,
            "tokens": runs[0].tokens,
            "seeds": len(runs),
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
            "values": values,
        })
    return rows


def format_table(rows: list[dict], digits: int = 3, sort: bool = True) -> str:
    """A fixed-width text table of :func:`summarize` rows (rounded, so it reads the same on every CPU)."""
    if sort:
        rows = sorted(rows, key=lambda r: r["mean"])
    width = max(len(r["variant"]) for r in rows)
    lines = [f"{'variant':<{width}}  {'params':>9}  {'mean':>7}  {'std':>6}  {'min':>7}  {'max':>7}"]
    for r in rows:
        lines.append(
            f"{r['variant']:<{width}}  {r['params']:>9,}  {r['mean']:>7.{digits}f}  {r['std']:>6.{digits}f}  "
            f"{r['min']:>7.{digits}f}  {r['max']:>7.{digits}f}"
        )
    return "\n".join(lines)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (p > 0.5).

    Computed from the density by Simpson's rule and bisection (no SciPy in the
    course's environment); accurate to about 1e-6 for df >= 1, e.g.
    ``t_quantile(0.975, 4) = 2.776``.
    """
    if not 0.5 < p < 1.0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1, got {p}.")
    if df < 1:
        raise ValueError(f"t_quantile needs df >= 1, got {df}.")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf_above_half(x: float, n: int = 4000) -> float:  # P(0 < T < x)
        h = x / n
        total = density(0.0) + density(x)
        total += sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
        return total * h / 3

    target = p - 0.5
    lo, hi = 0.0, 1.0
    while cdf_above_half(hi) < target:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf_above_half(mid) < target else (lo, mid)
    return (lo + hi) / 2


UNRESOLVED = "not resolved at this budget"


@dataclass(frozen=True)
class PairedComparison:
    """Variant ``a`` against variant ``b`` over shared seeds: the paired difference and a verdict.

    ``mean_diff`` is the mean over seeds of ``a - b`` (same seed, same batches),
    ``low``/``high`` its two-sided t-interval at ``confidence``. The verdict
    names the better variant only when the interval excludes zero; otherwise it
    is :data:`UNRESOLVED`. It never says "equal": an interval that contains
    zero means this budget cannot tell, not that there is no difference.
    """

    a: str
    b: str
    n: int
    mean_diff: float
    low: float
    high: float
    confidence: float
    lower_is_better: bool
    differences: tuple[float, ...]

    @property
    def verdict(self) -> str:
        if self.high < 0 or self.low > 0:
            a_lower = self.high < 0
            return f"{self.a if a_lower == self.lower_is_better else self.b} better"
        return UNRESOLVED

    @property
    def resolved(self) -> bool:
        return self.verdict != UNRESOLVED

    def __str__(self) -> str:
        pct = f"{100 * self.confidence:g}%"
        return (f"{self.a} - {self.b} = {self.mean_diff:+.3f} ({pct} CI {self.low:+.3f} to "
                f"{self.high:+.3f}, {self.n} seeds): {self.verdict}")


def paired_verdict(
    a_values: Sequence[float],
    b_values: Sequence[float],
    a: str = "A",
    b: str = "B",
    *,
    lower_is_better: bool = True,
    confidence: float = 0.95,
) -> PairedComparison:
    """Compare two variants from their per-seed values (``a_values[i]`` and ``b_values[i]`` share a seed).

    The differences ``a - b`` are what is tested, so the seed-to-seed spread
    that both variants share (initialisation, batch order) cancels. Needs at
    least 2 seeds; 5 resolve small effects far better than 3 (the t factor
    falls from 4.30 to 2.78).
    """
    if len(a_values) != len(b_values):
        raise ValueError(f"paired_verdict needs one value per seed for both variants; got "
                         f"{len(a_values)} for {a!r} and {len(b_values)} for {b!r}.")
    if len(a_values) < 2:
        raise ValueError("paired_verdict needs at least 2 seeds to form an interval; run more seeds.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    diffs = [float(x) - float(y) for x, y in zip(a_values, b_values)]
    if not all(math.isfinite(d) for d in diffs):
        raise ValueError(f"paired_verdict got a non-finite value for {a!r} or {b!r}: {diffs}; "
                         "a diverged run cannot be compared by its loss.")
    n = len(diffs)
    mean = statistics.fmean(diffs)
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return PairedComparison(a, b, n, mean, mean - half, mean + half, confidence,
                            lower_is_better, tuple(diffs))


def paired_comparison(
    results: list[RunResult],
    a: str,
    b: str,
    metric: Callable[[RunResult], float] | None = None,
    *,
    lower_is_better: bool = True,
    confidence: float = 0.95,
) -> PairedComparison:
    """:func:`paired_verdict` on the runs of :func:`run_variants`, paired by seed.

    ``metric`` maps a run to the compared number (default: final validation
    loss). Both variants must have been run with the same seeds.
    """
    metric = metric or (lambda r: r.final_val_loss)
    names = list(dict.fromkeys(r.name for r in results))
    for name in (a, b):
        if name not in names:
            raise ValueError(f"no runs named {name!r}; the variants are {names}.")
    by_seed = {name: {r.seed: metric(r) for r in results if r.name == name} for name in (a, b)}
    if set(by_seed[a]) != set(by_seed[b]):
        raise ValueError(f"{a!r} ran seeds {sorted(by_seed[a])} and {b!r} ran {sorted(by_seed[b])}; "
                         "a paired comparison needs the same seeds for both.")
    seeds = sorted(by_seed[a])
    return paired_verdict([by_seed[a][s] for s in seeds], [by_seed[b][s] for s in seeds], a, b,
                          lower_is_better=lower_is_better, confidence=confidence)


def format_comparisons(comparisons: Sequence[PairedComparison], digits: int = 3) -> str:
    """A fixed-width table of paired comparisons: mean difference, interval, seeds, verdict."""
    label = [f"{c.a} - {c.b}" for c in comparisons]
    width = max(len("comparison"), *(len(x) for x in label))
    w = digits + 4
    pct = f"{100 * comparisons[0].confidence:g}% interval" if comparisons else "interval"
    lines = [f"{'comparison':<{width}}  {'mean':>{w}}  {pct:^{2 * w + 3}}  seeds  verdict"]
    for name, c in zip(label, comparisons):
        lines.append(f"{name:<{width}}  {c.mean_diff:>+{w}.{digits}f}  [{c.low:>+{w}.{digits}f}, "
                     f"{c.high:>+{w}.{digits}f}]  {c.n:>5}  {c.verdict}")
    return "\n".join(lines)


def first_step_below(history: History, level: float) -> int | None:
    """The first evaluation step whose validation loss is below ``level``; None if there is none.

    For runs that sit on a plateau and then learn abruptly (a deep Post-LN stack
    at a high learning rate, a recall task), this step says more than the final loss.
    """
    return next((s for s, v in zip(history.eval_step, history.val_loss) if v < level), None)


def largest_rise(values: Sequence[float], skip: int = 0) -> float:
    """The most a loss curve rose above the best value it had reached before: its largest spike.

    Values from index ``skip`` on are judged (a warmup's early values still set the
    best so far); non-finite values are left out; 0.0 for a curve that never rose.
    """
    best, rise = math.inf, 0.0
    for i, v in enumerate(x for x in values if math.isfinite(x)):
        if i >= skip:
            rise = max(rise, v - best)
        best = min(best, v)
    return rise


def plot_curves(results: list[RunResult], ax=None, metric: str = "val_loss", title: str | None = None):
    """Mean curve per variant with a band from the best to the worst seed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(r.name for r in results):
        runs = [r for r in results if r.name == name]
        xs = runs[0].history.eval_step if metric == "val_loss" else runs[0].history.step
        n = min(len(getattr(r.history, metric)) for r in runs)
        curves = torch.tensor([getattr(r.history, metric)[:n] for r in runs])
        (line,) = ax.plot(xs[:n], curves.mean(0), label=name)
        if len(runs) > 1:
            ax.fill_between(xs[:n], curves.min(0).values, curves.max(0).values, alpha=0.2, color=line.get_color())
    ax.set_xlabel("step")
    label = {"val_loss": "validation loss", "train_loss": "training loss"}.get(metric, metric.replace("_", " "))
    ax.set_ylabel(f"{label} (nats per token)" if metric.endswith("loss") else label)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def layer_grad_norms(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    param: str = "ffn.down_proj.weight",
    *,
    stack: str = "decoder",
    loss_fn: LossFn = lm_loss,
) -> list[float]:
    """Gradient norm of one parameter in every block of a stack, at the model's current weights.

    With a freshly built model this is Xiong et al. (2020, fig. 3): at
    initialisation the gradient of each layer's second feed-forward matrix
    (``ffn.down_proj.weight``, their ``W^2``) grows towards the output under
    Post-LN and stays about level under Pre-LN. ``param`` names any parameter
    of a :class:`~llmcourse.blocks.Block` by its dotted path; ``stack`` is
    ``"decoder"`` or ``"encoder"``. Returns one Frobenius norm per block, first
    block first; the model's ``.grad`` fields are left untouched.
    """
    blocks = getattr(model, stack).blocks
    params = [blk.get_parameter(param) for blk in blocks]
    loss = loss_fn(model, batch)
    grads = torch.autograd.grad(loss, params)
    return [float(g.norm()) for g in grads]
