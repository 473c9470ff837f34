"""Intervals and estimators against values worked out by hand or by definition."""

from __future__ import annotations

import itertools

import pytest

from tasks.core.stats import mean_interval, paired_difference, pass_at_k, wilson


def test_wilson_matches_the_textbook_value_and_stays_inside_zero_one():
    s = wilson(8, 10)  # p = 0.8, n = 10: the Wilson interval is [0.490, 0.943]
    assert (round(s.low, 3), round(s.high, 3)) == (0.49, 0.943)
    assert wilson(0, 5).low == 0 and wilson(0, 5).high > 0.4  # never a zero-width interval at 0 of 5
    assert wilson(5, 5).high == 1 and wilson(5, 5).low < 0.6
    assert (wilson(0, 0).low, wilson(0, 0).high, wilson(0, 0).n) == (0.0, 1.0, 0)  # no questions: no knowledge


def test_wilson_narrows_with_n():
    widths = [wilson(n // 2, n).high - wilson(n // 2, n).low for n in (10, 100, 1000)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.07  # ±3 points at n = 1000


def test_pass_at_k_agrees_with_counting_every_subset():
    n, c, k = 6, 2, 3
    subsets = list(itertools.combinations([1] * c + [0] * (n - c), k))
    exact = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact)
    assert pass_at_k(4, 0, 4) == 0 and pass_at_k(4, 1, 4) == 1 and pass_at_k(5, 1, 1) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_the_mean_interval_is_never_a_point():
    assert mean_interval([0.0] * 20).high > 0.1
    assert mean_interval([0.5] * 20).low < 0.5 < mean_interval([0.5] * 20).high


def test_paired_difference_sign_size_and_significance():
    a = [0] * 60 + [1] * 40
    b = [1] * 100  # b right on every question a missed
    d = paired_difference(a, b)
    assert d.value == pytest.approx(0.6) and d.significant and d.low > 0.45
    assert paired_difference(b, a).value == pytest.approx(-0.6)


def test_models_that_never_disagree_on_few_questions_are_not_called_different():
    d = paired_difference([0, 1], [0, 1])
    assert d.value == 0 and not d.significant and d.high - d.low > 0.5  # a bootstrap would say [0, 0]


def test_a_swap_of_equal_size_is_no_difference():
    d = paired_difference([1, 0] * 50, [0, 1] * 50)
    assert d.value == 0 and not d.significant


def test_paired_differences_need_the_same_questions_and_binary_scores():
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([1], [1, 0])
    with pytest.raises(ValueError, match="0/1"):
        paired_difference([0.5], [1])
