"""llmcourse.experiments: the helpers that read training curves."""

import math

from llmcourse.experiments import first_step_below, largest_rise
from llmcourse.train import History


def test_first_step_below_finds_the_first_evaluation_under_the_level():
    h = History(eval_step=[10, 20, 30, 40], val_loss=[3.4, 3.3, 2.9, 2.5])
    assert first_step_below(h, 3.0) == 30
    assert first_step_below(h, 3.35) == 20
    assert first_step_below(h, 2.0) is None
    assert first_step_below(History(), 1.0) is None


def test_largest_rise_is_the_biggest_spike_above_the_best_so_far():
    assert largest_rise([3.0, 2.5, 2.0, 4.5, 2.2, 1.9]) == 2.5  # 4.5 against the best 2.0 before it
    assert largest_rise([3.0, 2.0, 1.0]) == 0.0  # never rose
    assert largest_rise([]) == 0.0


def test_largest_rise_skips_early_values_but_remembers_their_best():
    curve = [5.0, 1.0, 6.0, 2.0, 2.5]
    assert largest_rise(curve) == 5.0
    assert largest_rise(curve, skip=3) == 1.5  # 2.5 against the best 1.0 seen at index 1


def test_largest_rise_leaves_out_non_finite_values():
    assert largest_rise([2.0, math.nan, 3.0, math.inf]) == 1.0


# --- the paired verdict rule -------------------------------------------------

import math as _math

import pytest as _pytest

from llmcourse.experiments import (
    UNRESOLVED,
    RunResult,
    format_comparisons,
    paired_comparison,
    paired_verdict,
    t_quantile,
)
from llmcourse.train import History


@_pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622),
                                            (30, 2.0423)])
def test_t_quantile_matches_the_table(df, expected):
    assert t_quantile(0.975, df) == _pytest.approx(expected, abs=2e-4)


def test_a_consistent_paired_difference_is_resolved_even_when_ranges_overlap():
    # The seeds move both variants together; B is 0.01 worse on every seed.
    a = [1.00, 1.10, 1.20, 1.30, 1.40]
    b = [x + 0.01 + 0.001 * i for i, x in enumerate(a)]
    c = paired_verdict(a, b, "A", "B")
    assert c.verdict == "A better" and c.resolved
    assert c.high < 0 and c.mean_diff == _pytest.approx(-0.012)
    assert paired_verdict(b, a, "B", "A").verdict == "A better"


def test_a_noisy_difference_is_not_resolved_and_never_called_equal():
    c = paired_verdict([1.0, 1.2, 0.9], [1.1, 1.0, 1.0], "A", "B")
    assert c.low < 0 < c.high
    assert c.verdict == UNRESOLVED == "not resolved at this budget"
    assert "equal" not in str(c)


def test_higher_is_better_flips_the_winner():
    c = paired_verdict([0.9, 0.8, 0.85], [0.5, 0.4, 0.45], "A", "B", lower_is_better=False)
    assert c.verdict == "A better"


def test_interval_half_width_is_t_times_standard_error():
    diffs = [0.1, 0.3, 0.2, 0.4]
    c = paired_verdict(diffs, [0.0] * 4)
    sd = _math.sqrt(sum((d - 0.25) ** 2 for d in diffs) / 3)
    assert c.high - c.mean_diff == _pytest.approx(3.1824 * sd / 2, rel=1e-4)


def test_paired_verdict_refuses_what_it_cannot_compare():
    with _pytest.raises(ValueError, match="at least 2 seeds"):
        paired_verdict([1.0], [2.0])
    with _pytest.raises(ValueError, match="one value per seed"):
        paired_verdict([1.0, 2.0], [2.0])
    with _pytest.raises(ValueError, match="non-finite"):
        paired_verdict([1.0, float("nan")], [2.0, 2.0])


def _run(name, seed, loss):
    h = History()
    h.eval_step.append(10)
    h.val_loss.append(loss)
    return RunResult(name, seed, 100, 1000, h)


def test_paired_comparison_pairs_runs_by_seed_not_by_order():
    runs = [_run("x", 2, 3.0), _run("x", 1, 2.0), _run("y", 1, 2.1), _run("y", 2, 3.1)]
    c = paired_comparison(runs, "x", "y")
    assert c.differences == _pytest.approx((-0.1, -0.1))
    assert c.verdict == "x better"
    with _pytest.raises(ValueError, match="same seeds"):
        paired_comparison(runs + [_run("x", 3, 1.0)], "x", "y")
    with _pytest.raises(ValueError, match="no runs named 'z'"):
        paired_comparison(runs, "x", "z")
    table = format_comparisons([c, paired_verdict([1, 2], [2, 1], "p", "q")])
    assert "x better" in table and UNRESOLVED in table
    assert max(len(line) for line in table.splitlines()) <= 88


def test_plot_curves_labels_the_loss_with_its_unit():
    import matplotlib

    matplotlib.use("Agg")
    from llmcourse.experiments import plot_curves

    ax = plot_curves([_run("x", 1, 2.0), _run("x", 2, 2.1)])
    assert ax.get_ylabel() == "validation loss (nats per token)" and ax.get_xlabel() == "step"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x"]
