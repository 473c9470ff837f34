import math

import numpy as np
import pytest

from tasks.ablation.verdict import (BETTER, SAME, WORSE, Seeds, VerdictConfig, accuracy, bits_per_byte, compare,
                                    paired_differences, pooled_sd, regime)

DOCS = 400


def ablation(shift: float, seeds: int = 2, noise: float = 0.002, init: float = 0.01, others: int = 3):
    """Seeds of a base, a variant whose bits per byte is the base's plus `shift`, and `others` variants
    like the base. Seed k of every variant shares its initial weights (an offset of scale `init`);
    besides it each model has its own run-to-run noise `noise`, and each variant its own
    document-by-document differences."""
    rng = np.random.default_rng(1)
    nbytes = np.full(DOCS, 100)
    base_doc = 1.0 + 0.05 * np.sin(np.arange(DOCS))  # the same documents for every variant
    from_init = init * rng.standard_normal((seeds, 1))

    def variant(offset: float) -> Seeds:
        per_seed = offset + from_init + noise * rng.standard_normal((seeds, 1))
        per_doc = 0.01 * rng.standard_normal(DOCS)
        return bits_per_byte((base_doc + per_doc + per_seed) * nbytes * math.log(2), nbytes)

    return variant(0.0), variant(shift), [variant(0.0) for _ in range(others)]


def verdict_of(shift: float, **kwargs):
    base, variant, others = ablation(shift, **kwargs)
    sd, dof = pooled_sd([paired_differences(v, base) for v in (variant, *others)])
    return compare(variant, base, sd, dof, VerdictConfig())


def test_a_difference_far_beyond_the_noise_is_a_verdict_each_way():
    assert verdict_of(+0.05).verdict == WORSE
    assert verdict_of(-0.05).verdict == BETTER


def test_a_difference_within_the_run_to_run_noise_is_no_detectable_difference():
    comparison = verdict_of(+0.001)
    assert comparison.verdict == SAME
    assert comparison.seed_interval.low < 0 < comparison.seed_interval.high


def test_the_difference_is_the_difference_of_means_inside_both_intervals():
    comparison = verdict_of(+0.05)
    assert comparison.difference == pytest.approx(0.05, abs=0.01)
    assert comparison.seed_interval.low < comparison.difference < comparison.seed_interval.high
    assert comparison.item_interval.low < comparison.difference < comparison.item_interval.high


def test_pairing_by_seed_takes_out_what_the_shared_initial_weights_do():
    """Initial weights that move every variant's seed k alike (as measured) do not widen the
    seed-level interval; unpaired, a spread that large would hide a difference of 0.01."""
    comparison = verdict_of(+0.01, noise=0.001, init=0.05)
    assert comparison.verdict == WORSE
    base, variant, _ = ablation(+0.01, noise=0.001, init=0.05)
    assert np.std(base.metric(), ddof=1) > 0.01  # the seeds of one variant do differ that much


def test_both_intervals_must_agree():
    # Seeds that agree closely, documents that scatter: the document interval straddles zero.
    rng = np.random.default_rng(2)
    nbytes = np.full(DOCS, 100)
    base = bits_per_byte(np.ones((2, DOCS)) * 100 * math.log(2), nbytes)
    per_doc = rng.choice([-1.0, 1.0], DOCS) + 0.01  # a tiny mean shift, large per-document swings
    variant = bits_per_byte((1 + per_doc[None, :]) * 100 * math.log(2) * np.ones((2, 1)), nbytes)
    other = Seeds(base.totals * np.array([[1.0], [1.0001]]), nbytes)
    sd, dof = pooled_sd([paired_differences(v, base) for v in (variant, other)])
    comparison = compare(variant, base, sd, dof, VerdictConfig())
    assert comparison.seed_interval.side() == 1
    assert comparison.item_interval.side() == 0
    assert comparison.verdict == SAME


def test_more_noise_takes_a_verdict_away():
    assert verdict_of(+0.01, noise=0.001).verdict == WORSE
    assert verdict_of(+0.01, noise=0.02).verdict == SAME


def test_one_seed_each_gives_no_seed_interval_and_mismatches_are_refused():
    base, variant, _ = ablation(0.0, seeds=1)
    with pytest.raises(ValueError, match="at least two seeds"):
        pooled_sd([paired_differences(variant, base)])
    base, variant, _ = ablation(0.0, seeds=2)
    three, _, _ = ablation(0.0, seeds=3)
    with pytest.raises(ValueError, match="same seeds"):
        paired_differences(three, base)
    other = Seeds(variant.totals, variant.weights + 1)
    with pytest.raises(ValueError, match="different items"):
        compare(other, base, 0.01, 2, VerdictConfig())


def test_many_passes_over_the_data_are_named_as_another_regime():
    assert regime(2.0) is None
    assert "data-limited" in regime(11.0)


def test_on_accuracy_higher_is_better():
    """Right answers per (seed, question): a variant that answers 30 more of 200 questions on both
    seeds is better; one that differs on a couple is not."""
    rng = np.random.default_rng(3)
    base_right = rng.random((2, 200)) < 0.4
    gained = base_right.copy()
    gained[:, np.flatnonzero(~base_right[0] & ~base_right[1])[:30]] = True
    same = base_right.copy()
    same[0, np.flatnonzero(~base_right[0])[:2]] = True
    same[1, np.flatnonzero(base_right[1])[:1]] = False
    base, better, close = accuracy(base_right), accuracy(gained), accuracy(same)
    assert base.metric() == pytest.approx(base_right.mean(axis=1))
    sd, dof = pooled_sd([paired_differences(v, base) for v in (better, close)])
    assert compare(better, base, sd, dof, VerdictConfig(), lower_is_better=False).verdict == BETTER
    assert compare(better, base, sd, dof, VerdictConfig(), lower_is_better=True).verdict == WORSE
    assert compare(close, base, sd, dof, VerdictConfig(), lower_is_better=False).verdict == SAME
