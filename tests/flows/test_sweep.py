"""The scaling sweep flow on a micro grid under Prefect's test harness: a first sweep trains every
point, a sweep with one more depth trains only that depth, a rerun trains nothing, and the law
fitted on the smaller points predicts the largest one's loss.

The sweeps train on shards of the session's small crawl (tests/conftest.py), handed to the flow as
its `tokens`: the data and tokenizer flows it would otherwise call are the pipeline's, tested there.
"""

from __future__ import annotations

import base64
import json
import re

import pytest

from flows.common import tally_stage_runs
from cli.main import main
from flows.sweep import sweep_flow
from flows.tokenizer import TokenizerResult
from tasks.core.store import Manifest, file_entry
from tasks.train.scaling import SweepConfig
from tests.support.models import one_torch_thread
from tests.support.pipeline import micro_config

# Narrow models (width 16 per layer) at a learning rate that suits them; the loss is read once, at
# the end. One budget for every depth, just under one pass over the small crawl's 16,533 train
# tokens: 60 steps of 4 × 64 tokens.
SWEEP_PRETRAIN = {"aspect_ratio": 16, "head_dim": 8, "lr": 0.01, "warmup_steps": 2, "eval_every": 1000,
                  "checkpoint_every": 1000, "eval_tokens": 4096, "sample_prompts": []}
BUDGET = [15_360]

# Depths 1-4 fitted, depth 5 held out. Measured: the law (E = 0.84, α = 0.85) predicts depth 5's
# val bits per byte with an error of +0.98%, the same with one torch thread or two; the bound
# leaves room for another machine's arithmetic.
HELD_OUT_ERROR_BOUND = 0.03


@pytest.fixture(scope="module")
def micro_tokens(docs_parquet, tokenizer_path, tmp_path_factory) -> TokenizerResult:
    from tasks.tokenizer.shards import ShardConfig, build_shards

    shards = build_shards([docs_parquet], tokenizer_path, tmp_path_factory.mktemp("sweep-shards"),
                          ShardConfig(val_fraction=0.2, workers=1))
    return TokenizerResult(tokenizer=Manifest(stage="tokenizer", files=[file_entry(tokenizer_path)]), shards=shards)


@pytest.fixture(scope="module")
def sweeps(prefect_harness, micro_tokens, tmp_path_factory):
    """Depths 2-5, then 1-5 (one more, the cheapest), then 1-5 again: (final state, stage runs) of each."""
    work = tmp_path_factory.mktemp("sweep-work")
    config = micro_config(work, train={"pretrain": SWEEP_PRETRAIN})
    out = []
    with one_torch_thread():
        for depths in ([2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5]):
            with tally_stage_runs() as runs:
                state = sweep_flow(config, SweepConfig(depths=depths, tokens=BUDGET), micro_tokens, return_state=True)
            out.append((state, runs))
    return work, out


def pretrain_states(runs) -> list[str]:
    return sorted(state for stage, state in runs if stage == "pretrain")


def test_a_sweep_trains_every_point_and_one_more_depth_trains_only_that_one(sweeps):
    _, [(first, first_runs), (grown, grown_runs), _] = sweeps
    assert first.is_completed() and grown.is_completed()
    assert pretrain_states(first_runs) == ["Completed"] * 4
    assert pretrain_states(grown_runs) == ["Cached"] * 4 + ["Completed"]
    assert ("sweep-fit", "Completed") in grown_runs  # a new point: a new fit


def test_a_rerun_trains_nothing_and_fits_nothing(sweeps):
    _, [*_, (again, runs)] = sweeps
    assert again.is_completed()
    assert pretrain_states(runs) == ["Cached"] * 5
    assert runs == [("pretrain", "Cached")] * 5 + [("sweep-fit", "Cached")]


def test_the_law_fitted_on_the_smaller_points_predicts_the_largest(sweeps):
    work, [*_, (again, _)] = sweeps
    fit = json.loads((work / "sweep" / "fit.json").read_text())
    assert again.result() == str(work / "sweep" / "sweep.md")
    assert [p["label"] for p in fit["points"]] == [f"d{d}-t15360" for d in range(1, 6)]  # compute grows with depth
    assert fit["held_out"]["label"] == "d5-t15360"
    assert [p["role"] for p in fit["points"]] == ["fitted"] * 4 + ["held out"]
    assert fit["law"]["points"] == 4 and 0 < fit["law"]["E"] < fit["held_out"]["loss"]
    assert abs(fit["held_out"]["relative_error"]) < HELD_OUT_ERROR_BOUND, fit["held_out"]


def test_the_report_and_the_points_are_artifacts_of_the_sweep_run(sweeps):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    work, [_, (grown, _), _] = sweeps
    # Keyed artifacts only: pretraining's progress bars are artifacts of the run too.
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[grown.state_details.flow_run_id]))) if a.key}
    assert set(artifacts) == {"scaling-sweep", "scaling-sweep-points"}
    report = artifacts["scaling-sweep"].data
    assert report.startswith("# Scaling sweep") and "held out d5-t15360" in report
    [png] = re.findall(r"\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", report)
    assert base64.b64decode(png) == (work / "sweep" / "sweep.png").read_bytes()
    points = json.loads(artifacts["scaling-sweep-points"].data)
    assert len(points) == 5 and {"label", "params", "tokens", "compute", "loss", "role"} <= set(points[0])


@pytest.mark.parametrize("argv, message", [
    (["--depths", "2,3,4"], "the grid has 3 points"),
    (["--depths", "2,3,3,4"], "depths must be distinct"),
    (["--depths", "2,3,4,5", "--preset", "nonesuch"], "no preset 'nonesuch'"),
])
def test_the_command_refuses_a_grid_it_cannot_fit_in_one_line_before_any_work(argv, message, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", *argv, "--work-dir", str(tmp_path)])
    assert str(exit_.value).startswith("crawl2chat: ") and message in str(exit_.value)
    assert "\n" not in str(exit_.value) and not any(tmp_path.iterdir())
