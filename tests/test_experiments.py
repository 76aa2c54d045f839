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
