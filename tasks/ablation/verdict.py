"""Verdicts beyond the noise: is a variant's model better or worse than the base's on the reference
set (or on a benchmark's questions), or is the difference within what chance gives?

Two intervals for the difference of a metric, variant − base (reference bits per byte, where lower
is better; or the share of a benchmark's questions answered right, where higher is):

  * seed-level, paired by seed: seed k of every variant starts from the same initial weights, which
    (measured on the shipped example) move a model's score more than most data changes do, so the
    difference is taken seed by seed and its mean given Student's t interval. The spread of those
    paired differences is pooled over every variant compared (all train the same model for the same
    budget), which gives the interval degrees of freedom that two seeds alone could not;
  * item bootstrap: the reference documents (or questions) resampled with replacement, the
    difference of the seed-averaged metric recomputed on each resample (percentile interval): how
    much the verdict owes to which items happen to be in the set.

A verdict of "better" or "worse" needs both intervals on the same side of zero; anything else is "no
detectable difference". Neither interval alone covers both sources of noise, so a difference must
clear each.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import Field
from scipy import stats

from tasks.core.store import StageConfig

BETTER, WORSE, SAME = "better", "worse", "no detectable difference"
# Passes over the data beyond which repeated tokens are worth markedly less than fresh ones
# (Muennighoff et al., 2023, "Scaling Data-Constrained Language Models": up to about 4 epochs,
# repetition is nearly as good as new data).
MANY_PASSES = 4.0


class VerdictConfig(StageConfig):
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Coverage of both intervals")
    bootstrap: int = Field(2000, ge=200, description="Document-bootstrap resamples")
    seed: int = 0


@dataclass(frozen=True)
class Seeds:
    """One variant's models on the same items: what each item adds to the metric, per (seed, item),
    and each item's weight. The metric is their ratio: bits over bytes, or right answers over
    questions."""

    totals: np.ndarray  # (seeds, items)
    weights: np.ndarray  # (items,)

    def metric(self) -> np.ndarray:
        """The metric of each seed's model."""
        return self.totals.sum(axis=1) / self.weights.sum()


def bits_per_byte(nats: np.ndarray, nbytes: np.ndarray) -> Seeds:
    """Models' nats per (seed, document) and the documents' bytes, as bits per byte."""
    return Seeds(nats / math.log(2), nbytes)


def accuracy(correct: np.ndarray) -> Seeds:
    """Models' right (1) and wrong (0) answers per (seed, question), as the share right."""
    return Seeds(np.asarray(correct, dtype=float), np.ones(np.shape(correct)[1]))


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def side(self) -> int:
        """-1 wholly below zero, +1 wholly above, 0 straddling it."""
        return -1 if self.high < 0 else 1 if self.low > 0 else 0


@dataclass(frozen=True)
class Comparison:
    difference: float  # the variant's mean metric − the base's
    seed_interval: Interval
    item_interval: Interval  # over reference documents, or over questions
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def paired_differences(variant: Seeds, base: Seeds) -> np.ndarray:
    """The variant's metric minus the base's, seed by seed."""
    if len(variant.totals) != len(base.totals):
        raise ValueError(f"paired by seed, the variant and the base need the same seeds "
                         f"({len(variant.totals)} and {len(base.totals)})")
    return variant.metric() - base.metric()


def pooled_sd(differences: list[np.ndarray]) -> tuple[float, int]:
    """The standard deviation of paired differences pooled over the comparisons, and its degrees of
    freedom."""
    squares, dof = 0.0, 0
    for d in differences:
        squares += float(((d - d.mean()) ** 2).sum())
        dof += len(d) - 1
    if dof == 0:
        raise ValueError("a seed-level interval needs at least two seeds")
    return math.sqrt(squares / dof), dof


def seed_interval(differences: np.ndarray, sd: float, dof: int, confidence: float) -> Interval:
    mean = float(differences.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * sd / math.sqrt(len(differences)))
    return Interval(mean - half, mean + half)


def item_interval(variant: Seeds, base: Seeds, config: VerdictConfig) -> Interval:
    if not np.array_equal(variant.weights, base.weights):
        raise ValueError("the variant and the base were scored on different items (documents or questions)")
    per_item = variant.totals.mean(axis=0) - base.totals.mean(axis=0)  # seed-averaged, item by item
    n = len(per_item)
    rng = np.random.default_rng(config.seed)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=config.bootstrap)  # (resamples, items)
    diffs = (counts @ per_item) / (counts @ base.weights)
    tail = (1 - config.confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return Interval(float(low), float(high))


def verdict(seed: Interval, item: Interval, lower_is_better: bool = True) -> str:
    side = seed.side()
    if side != 0 and item.side() == side:
        return BETTER if (side < 0) == lower_is_better else WORSE
    return SAME


def compare(variant: Seeds, base: Seeds, sd: float, dof: int, config: VerdictConfig,
            lower_is_better: bool = True) -> Comparison:
    """`sd` and `dof`: pooled_sd over every comparison the ablation makes on this metric."""
    by_seed = seed_interval(paired_differences(variant, base), sd, dof, config.confidence)
    by_item = item_interval(variant, base, config)
    return Comparison(float(variant.metric().mean() - base.metric().mean()), by_seed, by_item,
                      verdict(by_seed, by_item, lower_is_better))


def regime(passes: float) -> str | None:
    """What a number of passes over the data means for reading a verdict, when it means something."""
    if passes > MANY_PASSES:
        return (f"{passes:.1f} passes over its data: past about {MANY_PASSES:g}, repeated tokens are worth much "
                f"less than fresh ones, so this variant is compared in a data-limited regime")
    return None
