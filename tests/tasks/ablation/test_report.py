"""The ablation report from its stages' outputs: controls first, verdicts withheld when a control
fails, the regime and failures named, the curves drawn. The outputs are written here as the stages
write them (score tables, manifests with their stats), with scores chosen to make each case."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest

from tasks.ablation.report import write_report
from tasks.ablation.score import SCHEMA
from tasks.ablation.verdict import VerdictConfig
from tasks.core.store import Manifest, file_entry, write_table

DOCS, SEEDS, TOKENS = 60, 2, 600_000


def scores(tmp_path, name: str, shift: float, init: list[float]) -> list[Manifest]:
    """Each seed's per-document scores: bits per byte 1.0 + the variant's shift + the seed's share."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    out = []
    for seed in range(SEEDS):
        bits = 1.0 + shift + init[seed] + 0.02 * rng.standard_normal(DOCS)
        rows = [{"document": d, "nats": float(b * 100 * math.log(2)), "bytes": 100} for d, b in enumerate(bits)]
        path = tmp_path / f"{name}-{seed}.parquet"
        write_table(path, rows, SCHEMA)
        out.append(Manifest(stage="reference-score", files=[file_entry(path)]))
    return out


def variant(tmp_path, name: str, role: str, shift: float, data_tokens: int = 200_000,
            init: tuple = (0.0, 0.01)) -> dict:
    history = {"val_bpb": [[100, 2.0 + shift], [200, 1.5 + shift], [300, 1.0 + shift]]}
    models = [Manifest(stage="pretrain", stats={"tokens": TOKENS, "steps": 300, "history": history,
                                                "unigram_bpb": 4.2}) for _ in range(SEEDS)]
    return {"role": role, "overrides": [f"data.x={name}"], "seeds": list(range(SEEDS)),
            "data": Manifest(stage="decontaminate", stats={"checked": 1000, "kept": 997}),
            "control": None, "models": models, "scores": scores(tmp_path, name, shift, list(init)),
            "shards": Manifest(stage="ablation-shards", stats={"train": {
                "documents": 1000, "tokens": data_tokens, "unique_tokens": data_tokens - 10}})}


def report(tmp_path, null_shift: float, positive_shift: float, **extra):
    variants = {"base": variant(tmp_path, "base", "base", 0.0),
                "null-control": variant(tmp_path, "null", "null control", null_shift),
                "positive-control": variant(tmp_path, "salad", "positive control", positive_shift),
                "worse-one": variant(tmp_path, "worse", "variant", 0.05, **extra),
                "same-one": variant(tmp_path, "same", "variant", 0.0)}
    out = tmp_path / "out"
    out.mkdir()
    manifest = write_report("t", variants, {"broken": "stage 'data' failed: StageFailed: nothing kept"},
                            VerdictConfig(bootstrap=500), out)
    return manifest, (out / "ablation.md").read_text(), json.loads((out / "ablation.json").read_text())


def test_controls_that_pass_come_first_and_the_verdicts_are_given(tmp_path):
    manifest, text, result = report(tmp_path, null_shift=0.0, positive_shift=0.2)
    assert result["controls_passed"] and text.index("Controls passed") < text.index("| variant |")
    assert [r["variant"] for r in result["rows"]] == ["null-control", "positive-control", "base", "worse-one",
                                                      "same-one"]
    assert manifest.stats["verdicts"] == {"null-control": "no detectable difference", "positive-control": "worse",
                                          "base": "base", "worse-one": "worse",
                                          "same-one": "no detectable difference"}
    # The seeds' shared offset (0.01 for seed 1 in every variant) is paired away.
    worse = next(r for r in result["rows"] if r["variant"] == "worse-one")
    assert worse["comparison"]["difference"] == pytest.approx(0.05, abs=0.01)
    assert worse["bpb_sd"] == pytest.approx(0.01 / math.sqrt(2), abs=0.004)
    assert "## Failed variants" in text and "**broken**: stage 'data' failed" in text
    assert "4.2000 bits per byte" in text
    assert (tmp_path / "out" / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("null_shift, positive_shift, failing", [(0.05, 0.2, "null-control"),
                                                                (0.0, 0.0, "positive-control")])
def test_a_failed_control_is_said_at_the_top_and_withholds_every_verdict(tmp_path, null_shift, positive_shift,
                                                                         failing):
    manifest, text, result = report(tmp_path, null_shift, positive_shift)
    assert not result["controls_passed"] and not result["controls"][failing]["passed"]
    top = text.split("| variant |")[0]
    assert "CONTROLS FAILED" in top and failing in top and "no verdict is given" in top
    assert manifest.stats["verdicts"]["worse-one"] == "withheld" == manifest.stats["verdicts"]["same-one"]
    rows = [line for line in text.splitlines() if line.startswith("| worse-one") or line.startswith("| same-one")]
    assert rows and all("withheld" in line and "**worse**" not in line for line in rows)


def test_many_passes_and_unequal_passes_are_named(tmp_path):
    _, text, result = report(tmp_path, 0.0, 0.2, data_tokens=50_000)  # worse-one: 12 passes, the others 3
    notes = text.split("## Notes")[1].split("##")[0]
    assert "**worse-one**: 12.0 passes over its data" in notes and "data-limited" in notes
    assert "differ 4.0-fold" in notes
    assert "3 copies of reference documents removed" in notes
