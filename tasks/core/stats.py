"""The statistics a score is reported with: intervals, pass@k and paired differences. Pure functions."""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


@dataclass(frozen=True)
class Score:
    """k correct of n, with a 95% Wilson interval."""

    correct: float
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    def as_dict(self) -> dict:
        return {"n": self.n, "accuracy": round(self.value, 4), "low": round(self.low, 4), "high": round(self.high, 4)}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def wilson(correct: float, n: int, z: float = Z95) -> Score:
    """Wilson's score interval: sound at 0 and n successes and for small n, where the normal
    approximation gives intervals outside [0, 1] or of zero width."""
    if n == 0:
        return Score(0, 0, 0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Score(correct, n, max(0.0, centre - half), min(1.0, centre + half))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of the chance that at least one of k samples is correct, from n samples
    of which c were (one minus the chance that k drawn without replacement are all wrong)."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n samples (k={k}, n={n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_interval(values: list[float]) -> Score:
    """The mean of per-question values in [0, 1] (pass@k, a win with ties as halves) with Wilson's
    interval on it as if a proportion: a [0, 1] variable's variance is at most p(1 − p), so this is
    never narrower than the truth; a bootstrap would give a zero-width interval when all are equal."""
    return wilson(float(sum(values)), len(values))


@dataclass(frozen=True)
class Difference:
    """b − a on the same questions, with a 95% interval for paired proportions."""

    value: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero: only then may a report call one model better."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {"n": self.n, "difference": round(self.value, 4), "low": round(self.low, 4),
                "high": round(self.high, 4), "significant": self.significant}

    def __str__(self) -> str:
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_difference(a: list[int], b: list[int]) -> Difference:
    """How much b beats a on the same questions (1 correct, 0 wrong): Newcombe's interval for paired
    proportions (his method 10), built from each model's Wilson interval and the correlation of the
    two, so that it is sound at 0 and n and for few questions, where a bootstrap interval collapses
    to a point whenever the models never disagree (Newcombe, Statistics in Medicine 17, 1998)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same questions ({len(a)} vs {len(b)})")
    if any(x not in (0, 1) for x in (*a, *b)):
        raise ValueError("paired differences are of 0/1 scores")
    n = len(a)
    if n == 0:
        return Difference(0.0, -1.0, 1.0, 0)
    both = sum(x and y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    only_a = sum(x and not y for x, y in zip(a, b))
    neither = n - both - only_a - only_b
    sb, sa = wilson(both + only_b, n), wilson(both + only_a, n)
    pb, pa = sb.value, sa.value
    margins = (both + only_b) * (only_a + neither) * (both + only_a) * (only_b + neither)
    # The correlation of the two models' scores, with Newcombe's continuity correction: without it,
    # two models that agree on every one of a few questions would get an interval of zero width.
    cross = both * neither - only_a * only_b
    corrected = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
    phi = corrected / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (pb - sb.low) ** 2 - 2 * phi * (pb - sb.low) * (sa.high - pa) + (sa.high - pa) ** 2))
    above = math.sqrt(max(0.0, (sb.high - pb) ** 2 - 2 * phi * (sb.high - pb) * (pa - sa.low) + (pa - sa.low) ** 2))
    diff = pb - pa
    return Difference(diff, max(-1.0, diff - below), min(1.0, diff + above), n)
