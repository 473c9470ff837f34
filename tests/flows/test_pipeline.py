"""The whole flow on a micro config under Prefect's test harness: a first run executes every
stage, a rerun executes none, a config change re-executes only that stage and what follows it,
and a rerun after a failure re-executes only the failed stage and what follows it."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil

import pyarrow.parquet as pq
import pytest
from prefect.results import ResultRecord

from flows.common import StageFailed, tally_stage_runs
from flows.config import PipelineConfig
from flows.pipeline import pipeline
from tests.support.pipeline import (
    ALL_STAGES,
    EVAL_STAGES,
    MODEL_EVAL_STAGES,
    TOKENIZER_STAGES,
    TRAIN_STAGES,
    micro_config,
)


def run(config: PipelineConfig):
    """Run the pipeline; return its final state and {stage: set of task-run state names}."""
    with tally_stage_runs() as runs:
        state = pipeline(config, return_state=True)
    by_stage: dict[str, set[str]] = {}
    for stage, name in runs:
        by_stage.setdefault(stage, set()).add(name)
    return state, by_stage


def executed(by_stage) -> set[str]:
    return {s for s, names in by_stage.items() if "Completed" in names}


def cached(by_stage) -> set[str]:
    return {s for s, names in by_stage.items() if names == {"Cached"}}


@pytest.fixture(scope="module")
def first_run(prefect_harness, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    state, by_stage = run(micro_config(work))
    return work, state, by_stage


def test_first_run_executes_every_stage_and_writes_the_report(first_run, tmp_path):
    import datasets

    work, state, by_stage = first_run
    assert state.is_completed()
    assert executed(by_stage) == ALL_STAGES
    report = (work / "report.md").read_text()
    for heading in ("## Data", "val bits per byte", "## SFT", "pairwise accuracy", "## RLHF"):
        assert heading in report
    assert (work / ".prefect-results").is_dir()
    # The clean documents, published as a folder that datasets opens: every document dedup kept.
    [published] = (work / "data-publish").glob("*/README.md")
    kept = sum(pq.read_metadata(p).num_rows for p in (work / "dedup-filter").glob("*/*.parquet")
               if not p.name.endswith(".rejects.parquet"))
    assert datasets.load_dataset(str(published.parent), split="train", cache_dir=str(tmp_path)).num_rows == kept > 0


def test_the_run_a_user_opens_holds_the_report_card_with_its_plots_and_the_tables(first_run):
    """Artifacts attach to the run that creates them: the pipeline's own run (not only its evaluate
    subflow's) has the card, each plot in it as a PNG data URI (the UI can load no work-dir file and
    prints mermaid xycharts as code), the scores and the data flow's tables."""
    from prefect import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter,
                                                FlowRunFilterParentFlowRunId)

    from tasks.eval.report import ARTIFACT_BUDGET

    work, state, _ = first_run
    top = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(top).parent_task_run_id is None  # the top-level run
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[top])))
        [evaluate] = [r.id for r in subflows if client.read_flow(r.flow_id).name == "evaluate"]
        artifacts = {run: {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run])))} for run in (top, evaluate)}
    assert set(artifacts[evaluate]) == {"report-card", "scores"}
    # And the data flow's: what each filter removed, its scores against the labels, rejected samples.
    assert set(artifacts[top]) == {"report-card", "scores", "data-removed", "data-filter-scores", "data-reject-samples"}
    card = artifacts[top]["report-card"].data
    assert card == artifacts[evaluate]["report-card"].data
    assert card.startswith("# crawl2chat report card") and "```mermaid" not in card and len(card) < ARTIFACT_BUDGET
    inlined = re.findall(r"\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", card)
    pngs = sorted(work.glob("*.png"))  # the copies beside <work>/report.md: 4 curves and the scores
    assert len(pngs) == 5 and sorted(base64.b64decode(uri) for uri in inlined) == sorted(p.read_bytes() for p in pngs)
    scores = json.loads(artifacts[top]["scores"].data)
    assert {r["model"] for r in scores} == {"base", "sft", "rlhf"}
    assert {"accuracy", "low", "high", "n"} <= set(next(r for r in scores if r["score"] == "skill/arithmetic"))
    removed = json.loads(artifacts[top]["data-removed"].data)
    assert {"stage", "reason", "docs", "share"} <= set(removed[0]) and any(r["reason"] == "(kept)" for r in removed)


def test_an_earlier_checkpoint_is_scored_beside_the_runs_own_models(first_run):
    """The evaluate flow's extra_models: any checkpoint folder, scored and reported beside this run's
    models, while this run's evaluations stay cached; a taken name or a reward model is refused."""
    from flows.evaluate import evaluate_flow

    work, _, _ = first_run
    config = micro_config(work)
    [earlier] = sorted((work / "sft").glob("*/step-*"))[-1:]
    with tally_stage_runs() as runs:
        report = evaluate_flow(config, extra_models={"earlier": str(earlier)})
    assert ("evaluate-model", "Completed") in runs and runs.count(("evaluate-model", "Cached")) == 3
    card = open(report).read()
    assert "| skill | n | constant | refuse | sft | rlhf | earlier |" in card
    assert "| earlier − sft | arithmetic |" in card  # the same weights as sft: no difference shown
    with pytest.raises(ValueError, match="'sft' is taken"):
        evaluate_flow(config, extra_models={"sft": str(earlier)})
    [judge] = sorted((work / "reward-model").glob("*/step-*"))[-1:]
    with pytest.raises(ValueError, match="is a reward model"):
        evaluate_flow(config, extra_models={"judge": str(judge)})


def test_rerun_with_nothing_changed_executes_nothing(first_run):
    work, _, _ = first_run
    state, by_stage = run(micro_config(work))
    assert state.is_completed()
    assert executed(by_stage) == set()
    assert cached(by_stage) == ALL_STAGES


def only_folder(work, stage):
    """The one output folder of a stage (these tests run before any config change adds a second)."""
    folders = [p for p in (work / stage).iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_damaged_outputs_are_detected_and_recomputed(first_run):
    """A truncated shard, a deleted final checkpoint and an edited file (same size): each stage whose
    output was damaged re-executes, writes the same bytes again, and nothing else reruns."""
    work, _, _ = first_run
    shard = sorted(only_folder(work, "token-shards").glob("train-*"))[0]
    shard_sha = shard.read_bytes()
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    pretrain = only_folder(work, "pretrain")
    final = sorted(pretrain.glob("step-*"))[-1]
    weights_sha = sha(final / "model.safetensors")
    shutil.rmtree(final)
    chat = only_folder(work, "chat-data") / "sft_train.jsonl"
    text = chat.read_text()
    chat.write_text(text.replace("a", "e", 1))
    assert len(chat.read_text()) == len(text)

    state, by_stage = run(micro_config(work))
    assert state.is_completed()
    assert executed(by_stage) == {"token-shards", "pretrain", "chat-data"}
    assert cached(by_stage) == ALL_STAGES - executed(by_stage)
    assert shard.read_bytes() == shard_sha and chat.read_text() == text
    assert sha(final / "model.safetensors") == weights_sha  # resumed from step 3, same weights at step 6


def test_a_moved_or_copied_work_dir_reruns_nothing(first_run, tmp_path):
    work, _, _ = first_run
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, copy_function=shutil.copy)  # new mtimes: every file is re-hashed
    moved = work.with_name(work.name + "-moved")
    work.rename(moved)  # so nothing can be read from the original place
    try:
        state, by_stage = run(micro_config(copy))
    finally:
        moved.rename(work)
    assert state.is_completed()
    assert executed(by_stage) == set()
    # What the stages hand on (the results Prefect stores) names no path of the work dir.
    for record in (copy / ".prefect-results").iterdir():
        result = ResultRecord.deserialize(record.read_bytes()).result
        assert str(work) not in repr(result) and str(copy) not in repr(result)


def test_editing_a_module_reruns_the_stages_that_use_it_and_no_other(first_run, monkeypatch):
    """models.reward is used by the reward-model stage, RLHF and the reward check only (the models'
    evaluation scores answers, not rewards). Those rerun; the reward model and RLHF come out
    byte-identical, so the models' evaluation and the report card stay cache hits."""
    from tasks.core import caching

    work, _, _ = first_run
    real = caching.code_digest
    monkeypatch.setattr(caching, "code_digest", lambda m: real(m) + ("-edited" if m == "models.reward" else ""))
    state, by_stage = run(micro_config(work))
    assert state.is_completed()
    assert executed(by_stage) == {"reward-model", "rlhf", "reward-check"}
    assert cached(by_stage) == ALL_STAGES - executed(by_stage)


def test_reverting_a_code_change_is_a_verified_hit_on_the_original_output(first_run, monkeypatch):
    """Change a stage's code (and so its output), rerun, revert: the reverted run is a cache hit on
    the original files, which the changed code never touched."""
    import tasks.data.quality
    from tasks.core import caching

    work, _, _ = first_run
    before = {p: sha(p) for p in (work / "quality").rglob("*.parquet")}
    real_digest, real_filter = caching.code_digest, tasks.data.quality.filter_quality
    monkeypatch.setattr(caching, "code_digest", lambda m: real_digest(m) + ("-v2" if m == "tasks.data.quality" else ""))
    monkeypatch.setattr(tasks.data.quality, "filter_quality",
                        lambda docs, config: real_filter(docs[: len(docs) // 2], config))
    state, by_stage = run(micro_config(work))
    assert state.is_completed() and "quality" in executed(by_stage)
    monkeypatch.undo()

    state, by_stage = run(micro_config(work))
    assert state.is_completed()
    assert executed(by_stage) == set()
    assert {p: sha(p) for p in before} == before


def test_config_change_reruns_only_that_stage_and_downstream(first_run):
    work, _, _ = first_run
    state, by_stage = run(micro_config(work, train={"sft": {"steps": 4}}))
    assert state.is_completed()
    assert executed(by_stage) == {"sft", "reward-model", "rlhf"} | MODEL_EVAL_STAGES
    assert cached(by_stage) == ALL_STAGES - executed(by_stage)


def test_adding_dpo_to_a_finished_run_trains_and_evaluates_dpo_alone(first_run):
    work, _, _ = first_run
    state, by_stage = run(micro_config(work, train={"preference_tuning": ["rlhf", "dpo"]}))
    assert state.is_completed()
    assert executed(by_stage) == {"dpo"} | MODEL_EVAL_STAGES  # evaluate-model: dpo's run alone, the rest cached
    assert cached(by_stage) == ALL_STAGES - MODEL_EVAL_STAGES
    card = (work / "report.md").read_text()
    assert "## DPO" in card and "| skill | n | constant | refuse | sft | rlhf | dpo |" in card
    assert "dpo" in json.loads((work / "models.json").read_text())


def test_data_config_change_invalidates_everything_downstream(first_run):
    work, _, _ = first_run
    state, by_stage = run(micro_config(work, data={"quality": {"gopher_quality": {"min_words": 70}}}))
    assert state.is_completed()
    upstream = {"synthetic-crawl", "url-filter", "extract", "langid", "chat-data"}
    assert cached(by_stage) >= upstream
    downstream = {"quality", "pii", "dedup-filter", "dedup-index", "data-accounting"} | MODEL_EVAL_STAGES
    assert executed(by_stage) >= downstream | TOKENIZER_STAGES | TRAIN_STAGES - {"chat-data"}
    # Keys follow content: a step whose inputs come out byte-identical (say, no dedup candidate
    # pairs either way) is rightly a cache hit.
    assert executed(by_stage) | cached(by_stage) == ALL_STAGES


def test_rerun_after_a_failure_reexecutes_only_the_failed_stage_and_downstream(first_run, monkeypatch):
    import tasks.train.reward

    work, _, _ = first_run
    config = micro_config(work, train={"reward": {"steps": 2}})

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(tasks.train.reward, "train_reward_model", broken)
    state, by_stage = run(config)
    assert state.is_failed()
    with pytest.raises(StageFailed, match="stage 'reward-model' failed: RuntimeError: injected failure"):
        state.result()
    assert by_stage["reward-model"] == {"Failed"}
    assert by_stage["rlhf"] == {"NotReady"}  # submitted, never run: its input failed
    assert not EVAL_STAGES & set(by_stage)  # the evaluation flow never started

    monkeypatch.undo()
    state, by_stage = run(config)
    assert state.is_completed()
    assert executed(by_stage) == {"reward-model", "rlhf"} | MODEL_EVAL_STAGES
    assert cached(by_stage) == ALL_STAGES - executed(by_stage)


def test_crawl_where_nothing_survives_fails_with_a_clear_message(prefect_harness, tmp_path):
    config = micro_config(tmp_path, data={"langid": {"languages": ["xx"]}})
    state, _ = run(config)
    assert state.is_failed()
    with pytest.raises(StageFailed, match="stage 'data' produced no documents"):
        state.result()


def test_pretraining_killed_mid_run_resumes_from_its_last_checkpoint(first_run, monkeypatch):
    import tasks.train.pretrain

    work, _, _ = first_run
    config = micro_config(work, train={"pretrain": {"steps": 8}})

    def killed_at_step_5(description):
        def progress(p):
            if p["step"] == 5:
                raise RuntimeError("killed")
        return progress

    monkeypatch.setattr(tasks.train.pretrain, "progress_reporter", killed_at_step_5)
    state, by_stage = run(config)
    assert state.is_failed() and by_stage["pretrain"] == {"Failed"}
    monkeypatch.undo()

    results = []
    real_train = tasks.train.pretrain.train

    def recording_train(*args, **kwargs):
        results.append(real_train(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(tasks.train.pretrain, "train", recording_train)
    state, by_stage = run(config)
    assert state.is_completed() and "Completed" in by_stage["pretrain"]
    assert results[0]["resumed_from"] == 3  # checkpoint_every=3: step 3 was the last complete one
    assert len(results[0]["history"]["train_loss"]) == 8


def flow_run_logs(flow_run_id) -> list[tuple[int, str]]:
    """(level, message) of a flow run's logs, oldest first, as the UI shows them."""
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    deadline, logs = time.monotonic() + 10, []
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any(log.level >= 40 for log in logs):
                break
            time.sleep(0.2)
    return [(log.level, log.message) for log in sorted(logs, key=lambda log: log.timestamp)]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_device_the_machine_lacks_fails_the_flow_before_any_stage_with_the_cause_first(prefect_harness, tmp_path):
    from flows.common import MachineUnfit

    state, by_stage = run(micro_config(tmp_path, train={"rlhf": {"device": "cuda"}}))
    assert state.is_failed() and by_stage == {}
    with pytest.raises(MachineUnfit):
        state.result()
    errors = [message for level, message in flow_run_logs(state.state_details.flow_run_id) if level >= 40]
    assert errors[0].startswith("crawl2chat: machine check: train.rlhf.device 'cuda' asks for a GPU")
    assert "\n" not in errors[0]


def task_runs_of(flow_run_id, names: set[str], settle_s: float = 30.0) -> dict[str, object]:
    """{task run name: task run} under the flow run and its subflows, once every named run has a
    start and an end time (they reach the API a moment after the flow returns)."""
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    deadline = time.monotonic() + settle_s
    with get_client(sync_client=True) as client:
        while True:
            flows, frontier = [flow_run_id], [flow_run_id]
            while frontier:
                frontier = [f.id for f in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))]
                flows += frontier
            runs = {r.name: r for r in client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=flows)))}
            if all(n in runs and runs[n].start_time and runs[n].end_time for n in names) \
                    or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


def test_a_slow_warc_file_does_not_hold_the_others(prefect_harness, tmp_path, monkeypatch):
    """Futures flow from stage to stage per file: with the URL filter of the last WARC file slowed
    down, extraction of the first file starts before that filter finishes; and each mapped run is
    named after its file in the UI."""
    import time

    import tasks.data.urlfilter
    from flows.data import data_flow

    config = micro_config(tmp_path, data={"crawl": {"num_files": 4, "pages_per_file": 12},
                                          "runner": {"kind": "threads", "workers": 2}})
    real = tasks.data.urlfilter.filter_warc_urls

    def slow_on_the_last_file(warc, *args, **kwargs):
        if warc.path.endswith("00003.warc.gz"):
            time.sleep(4)
        return real(warc, *args, **kwargs)

    monkeypatch.setattr(tasks.data.urlfilter, "filter_warc_urls", slow_on_the_last_file)
    state = data_flow(config, return_state=True)
    assert state.is_completed()
    crawl = state.result().crawl
    stems = [f.path.rsplit("/", 1)[-1].split(".")[0] for f in crawl.files]
    first_extract, last_filter = f"extract[{stems[0]}]", f"url-filter[{stems[-1]}]"
    named = {f"{stage}[{stem}]" for stem in stems for stage in
             ("url-filter", "extract", "langid", "quality", "pii", "dedup-signatures", "dedup-filter")}
    # A run's name reaches the API a moment after the run: wait for every named run, not just two.
    runs = task_runs_of(state.state_details.flow_run_id, named)
    assert named <= runs.keys(), " ".join(sorted(runs))
    assert runs[first_extract].start_time < runs[last_filter].end_time
