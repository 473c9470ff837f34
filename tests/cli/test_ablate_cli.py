"""`crawl2chat ablate`: a bad ablation file is one line before any work; the verdicts are printed; a
failed control is exit status 1. The ablation itself runs in tests/flows/test_ablate.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli.main import main
from flows.ablation_plan import load_ablation

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "ablations" / "filters.yaml"


def ablation_file(tmp_path, **fields) -> Path:
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "variants": [{"name": "v", "set": ["data.dedup.exact=false"]}],
                                    **fields}))
    return path


def test_the_shipped_example_resolves_every_variant():
    ablation = load_ablation(EXAMPLE)
    assert [v.name for v in ablation.variants] == ["quality-off", "dedup-off"]
    assert ablation.seeds == 2 and ablation.controls.null_control and ablation.controls.positive_control.enabled


@pytest.mark.parametrize("fields, message", [
    ({"variants": [{"name": "v", "set": ["train.pretrain.steps=5"]}]}, "a variant changes the data only"),
    ({"variants": [{"name": "v", "set": ["data.dedup.exactly=false"]}]}, "data.dedup.exactly: Extra inputs"),
    ({"variants": [{"name": "base"}]}, "not base"),
    ({"seeds": 1}, "seeds: Input should be greater than or equal to 2"),
    ({"controls": {"null": True}}, "controls.null: Extra inputs"),  # the field is null_control
    ({"reference": {"source": "dataset"}}, "reference.dataset names none"),
])
def test_a_bad_ablation_is_one_line_naming_its_field(tmp_path, capsys, fields, message):
    with pytest.raises(SystemExit) as exit:
        main(["ablate", str(ablation_file(tmp_path, **fields))])
    assert str(exit.value).startswith("crawl2chat: config error:")
    assert message in str(exit.value) and "\n" not in str(exit.value)


def test_a_missing_file_is_one_line():
    with pytest.raises(SystemExit, match="no ablation file nope.yaml"):
        main(["ablate", "nope.yaml"])


def report_of(tmp_path, controls_passed: bool) -> Path:
    """What an ablation leaves for the command to print: its report's folder."""
    out = tmp_path / "ablations" / "t"
    out.mkdir(parents=True)
    comparison = {"verdict": "worse" if controls_passed else "no detectable difference", "difference": 0.04}
    rows = [{"variant": "base", "role": "base", "bpb_mean": 0.25, "passes": 3.2},
            {"variant": "positive-control", "role": "positive control", "bpb_mean": 0.29, "passes": 3.2,
             "comparison": comparison}]
    (out / "ablation.json").write_text(json.dumps({
        "rows": rows, "failed": {"v": "stage 'data' failed: StageFailed: nothing kept"},
        "controls": {"positive-control": {"passed": controls_passed}}, "controls_passed": controls_passed}))
    (out / "ablation.md").write_text("# Ablation: t\n")
    return out / "ablation.md"


@pytest.mark.parametrize("passed, status", [(True, 0), (False, 1)])
def test_verdicts_are_printed_and_a_failed_control_is_status_1(tmp_path, capsys, monkeypatch, passed, status):
    import flows.ablate

    report = report_of(tmp_path, passed)
    monkeypatch.setattr(flows.ablate, "ablate_flow", lambda ablation: str(report))
    assert main(["ablate", str(ablation_file(tmp_path))]) == status
    out, err = capsys.readouterr()
    assert "positive-control" in out and "0.2900 bpb, 3.2 passes" in out
    assert "v                    failed: stage 'data' failed" in out
    assert f"crawl2chat: ablation report: {report}" in out
    assert ("a control failed" in err) == (not passed)
