import math

import numpy as np
import pytest

from tasks.ablation.verdict import BETTER, SAME, WORSE, Seeds, VerdictConfig, compare, pooled_seed_sd, regime

DOCS = 400


def models(shift: float, seeds: int, rng, noise: float = 0.002, doc_noise: float = 0.05) -> Seeds:
    """Seeds of a variant whose bits per byte is the base's (1.0 per byte) plus `shift`, with
    run-to-run noise `noise` and document-level scatter."""
    nbytes = np.full(DOCS, 100)
    base_doc = 1.0 + doc_noise * np.sin(np.arange(DOCS))  # the same documents for every variant
    per_seed = shift + noise * rng.standard_normal((seeds, 1))
    per_doc = 0.01 * rng.standard_normal(DOCS)  # how this variant's model differs document by document
    bits = (base_doc + per_doc + per_seed) * nbytes
    return Seeds(bits * math.log(2), nbytes)


def verdicts(shift: float, seeds: int = 2, noise: float = 0.002) -> tuple[str, object]:
    rng = np.random.default_rng(1)
    base, variant = models(0.0, seeds, rng, noise), models(shift, seeds, rng, noise)
    others = [models(0.0, seeds, rng, noise) for _ in range(3)]
    sd, dof = pooled_seed_sd([base, variant, *others])
    comparison = compare(variant, base, sd, dof, VerdictConfig())
    return comparison.verdict, comparison


def test_a_difference_far_beyond_the_noise_is_a_verdict_each_way():
    assert verdicts(+0.05)[0] == WORSE
    assert verdicts(-0.05)[0] == BETTER


def test_a_difference_within_the_run_to_run_noise_is_no_detectable_difference():
    verdict, comparison = verdicts(+0.001)
    assert verdict == SAME
    assert comparison.seed_interval.low < 0 < comparison.seed_interval.high


def test_seed_bpb_is_bits_per_byte_and_the_difference_is_the_difference_of_means():
    _, comparison = verdicts(+0.05)
    assert comparison.difference == pytest.approx(0.05, abs=0.01)
    assert comparison.seed_interval.low < comparison.difference < comparison.seed_interval.high
    assert comparison.document_interval.low < comparison.difference < comparison.document_interval.high


def test_both_intervals_must_agree():
    # Seeds that agree closely, documents that scatter: the document interval straddles zero.
    rng = np.random.default_rng(2)
    nbytes = np.full(DOCS, 100)
    base = Seeds(np.ones((2, DOCS)) * 100 * math.log(2), nbytes)
    per_doc = rng.choice([-1.0, 1.0], DOCS) + 0.01  # a tiny mean shift, large per-document swings
    variant = Seeds((1 + per_doc[None, :]) * 100 * math.log(2) * np.ones((2, 1)), nbytes)
    sd, dof = pooled_seed_sd([base, variant, Seeds(base.nats * np.array([[1.0], [1.0001]]), nbytes)])
    comparison = compare(variant, base, sd, dof, VerdictConfig())
    assert comparison.seed_interval.side() == 1
    assert comparison.document_interval.side() == 0
    assert comparison.verdict == SAME


def test_more_noise_takes_a_verdict_away():
    assert verdicts(+0.01, noise=0.001)[0] == WORSE
    assert verdicts(+0.01, noise=0.02)[0] == SAME


def test_one_seed_each_gives_no_seed_interval_and_other_documents_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least two seeds"):
        pooled_seed_sd([models(0, 1, rng), models(0, 1, rng)])
    a, b = models(0, 2, rng), models(0, 2, rng)
    other = Seeds(b.nats, b.nbytes + 1)
    with pytest.raises(ValueError, match="different reference documents"):
        compare(other, a, 0.01, 2, VerdictConfig())


def test_many_passes_over_the_data_are_named_as_another_regime():
    assert regime(2.0) is None
    assert "data-limited" in regime(11.0)
