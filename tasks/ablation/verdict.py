"""Verdicts beyond the noise: is a variant's model better or worse than the base's on the reference
set, or is the difference within what chance gives?

Two intervals for the difference of reference bits per byte (variant − base; negative is better):

  * seed-level, paired by seed: seed k of every variant starts from the same initial weights, which
    (measured on the shipped example) move a model's score more than most data changes do, so the
    difference is taken seed by seed and its mean given Student's t interval. The spread of those
    paired differences is pooled over every variant compared (all train the same model for the same
    budget), which gives the interval degrees of freedom that two seeds alone could not;
  * document bootstrap: the reference documents resampled with replacement, the difference of the
    seed-averaged bits per byte recomputed on each resample (percentile interval): how much the
    verdict owes to which documents happen to be in the reference set.

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
    """One variant's models on the reference set: nats per (seed, document), bytes per document."""

    nats: np.ndarray  # (seeds, documents)
    nbytes: np.ndarray  # (documents,)

    def bpb(self) -> np.ndarray:
        """Bits per byte of each seed's model."""
        return self.nats.sum(axis=1) / (math.log(2) * self.nbytes.sum())


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def side(self) -> int:
        """-1 wholly below zero, +1 wholly above, 0 straddling it."""
        return -1 if self.high < 0 else 1 if self.low > 0 else 0


@dataclass(frozen=True)
class Comparison:
    difference: float  # mean bpb of the variant − the base's
    seed_interval: Interval
    document_interval: Interval
    verdict: str

    def to_dict(self) -> dict:
        return asdict(self)


def paired_differences(variant: Seeds, base: Seeds) -> np.ndarray:
    """The variant's bits per byte minus the base's, seed by seed."""
    if len(variant.nats) != len(base.nats):
        raise ValueError(f"paired by seed, the variant and the base need the same seeds "
                         f"({len(variant.nats)} and {len(base.nats)})")
    return variant.bpb() - base.bpb()


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


def document_interval(variant: Seeds, base: Seeds, config: VerdictConfig) -> Interval:
    if not np.array_equal(variant.nbytes, base.nbytes):
        raise ValueError("the variant and the base were scored on different reference documents")
    per_doc = variant.nats.mean(axis=0) - base.nats.mean(axis=0)  # seed-averaged nats, document by document
    n = len(per_doc)
    rng = np.random.default_rng(config.seed)
    counts = rng.multinomial(n, np.full(n, 1 / n), size=config.bootstrap)  # (resamples, documents)
    diffs = (counts @ per_doc) / (math.log(2) * (counts @ base.nbytes))
    tail = (1 - config.confidence) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return Interval(float(low), float(high))


def verdict(seed: Interval, document: Interval) -> str:
    side = seed.side()
    if side != 0 and document.side() == side:
        return BETTER if side < 0 else WORSE
    return SAME


def compare(variant: Seeds, base: Seeds, sd: float, dof: int, config: VerdictConfig) -> Comparison:
    """`sd` and `dof`: pooled_sd over every comparison the ablation makes."""
    by_seed = seed_interval(paired_differences(variant, base), sd, dof, config.confidence)
    by_doc = document_interval(variant, base, config)
    return Comparison(float(variant.bpb().mean() - base.bpb().mean()), by_seed, by_doc, verdict(by_seed, by_doc))


def regime(passes: float) -> str | None:
    """What a number of passes over the data means for reading a verdict, when it means something."""
    if passes > MANY_PASSES:
        return (f"{passes:.1f} passes over its data: past about {MANY_PASSES:g}, repeated tokens are worth much "
                f"less than fresh ones, so this variant is compared in a data-limited regime")
    return None
