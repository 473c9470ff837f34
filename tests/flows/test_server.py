"""The deployments against a real Prefect server: `prefect server start` and `crawl2chat serve` run as
subprocesses, and the tests talk to them only through the API, as the UI does.

* the server's scheduler creates the data refresh's weekly runs (a scheduler bug once went unnoticed);
* a run triggered through the API with parameters is executed by the served process, with them;
* a failed run retried the way the UI's "Retry" button does (the same flow run set to Scheduled /
  "AwaitingRetry", force) re-executes only the failed stage and those after it: the rest are cache hits;
* a run whose process is SIGKILLed mid-pretraining ends Crashed, and its retry resumes pretraining
  from the last checkpoint.

Prefect 3.9.1 behaviours these tests rely on (read from its source, seen against a live server):
* `serve` starts each flow run as `python -m prefect.engine` in a child process of the serve
  process, with PREFECT__FLOW_RUN_ID in its environment; the flow run's `infrastructure_pid` stays
  empty (only workers set it). When that process dies of a signal, the runner reports Crashed.
* A retried flow run keeps its id and its first attempt's task runs; subflows whose result is not
  persisted run again as new subflow runs, and an interrupted one is reattached. So the attempts are
  told apart by time: a task run belongs to the retry when it was created (expected_start_time)
  after the AwaitingRetry state.

Linux only (processes are found through /proc). The whole module takes about two minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import yaml

from flows.config import deep_merge
from tests.support.pipeline import ALL_STAGES, EVAL_STAGES, MICRO, MODEL_EVAL_STAGES
from tests.support.prefect_server import Server, descendants, environ_of, prefect_server, stop, tail

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = {"crawl2chat/full-pipeline", "data-refresh/data-refresh", "data/data", "tokenizer/tokenizer",
               "train/train", "evaluate/evaluate", "ablate/ablate"}
SERVE_STARTUP_S = 90
RUN_S = 240  # one pipeline run on the micro config takes ~15 s on two idle cores
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --- processes -----------------------------------------------------------------------------------

def flow_run_process(serve_pid: int, flow_run_id: UUID) -> int | None:
    """The process executing the flow run: the serve process's child started with its id."""
    for pid in descendants(serve_pid):
        if environ_of(pid).get("PREFECT__FLOW_RUN_ID") == str(flow_run_id):
            return pid
    return None


# --- the server and the served deployments -------------------------------------------------------

class Live:
    """Handles on the running server and serve process, for the tests."""

    def __init__(self, server: Server, tmp: Path):
        self.api_url, self.tmp, self.server, self.server_log = server.api_url, tmp, server.proc, server.log
        self.env = server.env  # for a process that talks to the server
        self.serve: subprocess.Popen | None = None
        self.serve_log = tmp / "serve.log"
        self.preset_work = tmp / "preset-work"
        # The work dir the pipeline runs below share, one after another (each asserts what it reran).
        self.served_work = tmp / "served"

    def logs(self) -> str:
        return (f"\n--- serve log (tail) ---\n{tail(self.serve_log)}"
                f"\n--- server log (tail) ---\n{tail(self.server_log, 15)}")


def _wait_for_deployments(live: Live) -> None:
    deadline = time.monotonic() + SERVE_STARTUP_S
    found: set[str] = set()
    while time.monotonic() < deadline:
        if live.serve.poll() is not None:
            pytest.fail(f"`crawl2chat serve` exited with code {live.serve.returncode}:{live.logs()}")
        found = {name for name in DEPLOYMENTS
                 if httpx.get(f"{live.api_url}/deployments/name/{name}", timeout=5).status_code == 200}
        if found == DEPLOYMENTS:
            return
        time.sleep(1)
    pytest.fail(f"`crawl2chat serve` did not create the deployments within {SERVE_STARTUP_S} s; "
                f"missing: {sorted(DEPLOYMENTS - found)}{live.logs()}")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("prefect-server")
    # The UI asks its API at PREFECT_UI_API_URL (port 4200 by default): relative, it finds this server,
    # as the screenshot test's browser needs.
    with prefect_server(tmp, PREFECT_UI_API_URL="/api") as server:
        live = Live(server, tmp)
        try:
            preset = tmp / "micro.yaml"
            preset.write_text(yaml.safe_dump(MICRO))  # the work dir comes from `serve --work-dir`
            pythonpath = os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
            with open(live.serve_log, "wb") as log:
                live.serve = subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "serve", "--preset", str(preset),
                     "--work-dir", str(live.preset_work)],
                    # A 2 s poll instead of the default 10 s: only the latency of picking up a run.
                    env=server.env(PYTHONPATH=pythonpath, PREFECT_RUNNER_POLL_FREQUENCY="2"),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
            _wait_for_deployments(live)
            # This process's own client talks to the server too, for this module only.
            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                yield live
        finally:
            stop(live.serve)


# --- the API -------------------------------------------------------------------------------------

def micro(work: Path, **overrides) -> dict:
    return deep_merge({**MICRO, "work_dir": str(work)}, overrides)


def trigger(config: dict):
    from prefect.deployments import run_deployment

    return run_deployment("crawl2chat/full-pipeline", parameters={"config": config}, timeout=0)


def wait_final(live: Live, flow_run_id: UUID, min_run_count: int = 1, timeout: float = RUN_S):
    """The flow run once it is in a final state (after at least `min_run_count` attempts)."""
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.type.value in FINAL and run.run_count >= min_run_count:
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {run.name} not final after {timeout} s: {run.state and run.state.name} "
                            f"(run_count {run.run_count}){live.logs()}")
            time.sleep(1)


def retry_like_the_ui(live: Live, flow_run_id: UUID) -> dt.datetime:
    """What the UI's "Retry" button sends (ui-v2 in Prefect 3.9.1); returns the new state's time."""
    response = httpx.post(f"{live.api_url}/flow_runs/{flow_run_id}/set_state", timeout=10, json={
        "state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": True})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "ACCEPT", body
    return dt.datetime.fromisoformat(body["state"]["timestamp"])


def flow_tree(client, root: UUID) -> list:
    """The flow run's subflow runs, all levels down."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    runs, frontier = [], [root]
    while frontier:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
        runs += children
        frontier = [c.id for c in children]
    return runs


def stage_runs(flow_run_id: UUID, since: dt.datetime | None = None, expect: set[str] = frozenset(),
               settle_s: float = 30) -> dict[str, list]:
    """{stage: [task run, ...]} under the flow run and its subflows (subflow calls left out), only
    those created after `since` if given. Task runs reach the API through events, a little after the
    flow run's state: this polls until the `expect`ed stages are there, every run is final, and
    nothing changed for a second (or `settle_s` passed: the caller's assertions then say what is off)."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    deadline = time.monotonic() + settle_s
    previous, stable_since = None, time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            flows = flow_tree(client, flow_run_id)
            subflow_calls = {f.parent_task_run_id for f in flows}
            runs = [r for r in client.read_task_runs(task_run_filter=TaskRunFilter(
                        flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id] + [f.id for f in flows])))
                    if r.id not in subflow_calls and (since is None or (r.expected_start_time or r.created) >= since)]
            by_stage: dict[str, list] = {}
            for r in runs:
                by_stage.setdefault(r.name.split("[")[0], []).append(r)  # "extract[CC-…-00001]"
            snapshot = sorted((r.name, r.state.name if r.state else "Pending") for r in runs)
            if snapshot != previous:
                previous, stable_since = snapshot, time.monotonic()
            settled = (expect <= by_stage.keys() and all(r.state and (r.state.type.value in FINAL or
                                                                     r.state.name == "NotReady") for r in runs)
                       and time.monotonic() - stable_since >= 1)
            if settled or time.monotonic() > deadline:
                return by_stage
            time.sleep(0.25)


def states(by_stage: dict[str, list]) -> dict[str, set[str]]:
    return {stage: {r.state.name for r in runs} for stage, runs in by_stage.items()}


def executed(by_stage) -> set[str]:
    return {s for s, names in states(by_stage).items() if "Completed" in names}


def cached(by_stage) -> set[str]:
    return {s for s, names in states(by_stage).items() if names == {"Cached"}}


# --- the tests -----------------------------------------------------------------------------------

def test_the_scheduler_creates_the_weekly_data_refresh_runs(live):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("data-refresh/data-refresh")
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * 1"]
        assert all(s.active for s in deployment.schedules) and not deployment.paused
        deadline = time.monotonic() + 90
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])))
            scheduled = [r for r in runs if r.state and r.state.name == "Scheduled" and r.auto_scheduled]
            if scheduled:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the server's scheduler created no run of data-refresh/data-refresh in 90 s "
                            f"(runs: {[(r.name, r.state and r.state.name) for r in runs]})"
                            f"\n--- server log ---\n{tail(live.server_log)}")
            time.sleep(1)
    now = dt.datetime.now(dt.timezone.utc)
    for run in scheduled:
        start = run.expected_start_time.astimezone(dt.timezone.utc)
        assert start > now, f"{run.name} scheduled in the past: {start}"
        assert (start.weekday(), start.hour, start.minute, start.second) == (0, 3, 0, 0), \
            f"{run.name} is not on a Monday 03:00 UTC: {start}"


def test_a_failed_run_retried_through_the_api_reexecutes_only_the_failed_stage_and_after(live):
    # The first served run of the module, on a fresh work dir; the triggered and killed runs below
    # reuse it, so that their data and tokenizer stages are cache hits.
    work = live.served_work
    work.mkdir()
    # A file where the reward stage makes its output folder (<work>/<task name>/<key>): the stage
    # fails with NotADirectoryError, and deleting the file is all a retry needs.
    blocker = work / "reward-model"
    blocker.write_text("not a folder")
    run = trigger(micro(work))
    run = wait_final(live, run.id)
    assert run.state.is_failed(), f"expected Failed, got {run.state.name}: {run.state.message}{live.logs()}"
    assert "stage 'reward-model' failed" in (run.state.message or ""), f"{run.state.message}{live.logs()}"
    first = stage_runs(run.id, expect=ALL_STAGES - {"rlhf"} - EVAL_STAGES)
    assert states(first)["reward-model"] == {"Failed"}
    # RLHF was submitted with the reward model's future and never ran (NotReady: its input failed);
    # evaluation, in the next flow, was never submitted.
    assert states(first).get("rlhf", {"NotReady"}) == {"NotReady"} and not EVAL_STAGES & set(first)
    assert executed(first) == ALL_STAGES - {"reward-model", "rlhf"} - EVAL_STAGES

    blocker.unlink()
    retried_at = retry_like_the_ui(live, run.id)
    retried = wait_final(live, run.id, min_run_count=2)
    assert retried.id == run.id and retried.run_count == 2
    assert retried.state.is_completed(), f"{retried.state.name}: {retried.state.message}{live.logs()}"
    assert (work / "report.md").is_file()

    second = stage_runs(run.id, since=retried_at, expect=ALL_STAGES)
    # The first attempt never reached evaluation: its benchmark sets are read now, for the first time.
    assert executed(second) == {"reward-model", "rlhf"} | EVAL_STAGES, states(second)
    assert cached(second) == ALL_STAGES - executed(second), states(second)
    # The first attempt's task runs are still there, unchanged.
    assert states(stage_runs(run.id, expect=ALL_STAGES))["reward-model"] == {"Failed", "Completed"}


def test_a_run_triggered_through_the_api_uses_its_parameters(live):
    from prefect import get_client

    work = live.served_work
    run = trigger(micro(work, train={"pretrain": {"steps": 7}}))  # the preset says 6
    run = wait_final(live, run.id)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}{live.logs()}"
    by_stage = stage_runs(run.id, expect=ALL_STAGES)
    # The retried run above trained 6 steps on this work dir: pretraining and what follows it run again.
    assert executed(by_stage) == {"pretrain", "sft", "reward-model", "rlhf"} | MODEL_EVAL_STAGES, states(by_stage)
    assert cached(by_stage) == ALL_STAGES - executed(by_stage), states(by_stage)
    # The run wrote to the work dir it was given, not the preset's, and trained for the steps it was given.
    assert (work / "report.md").is_file()
    assert not live.preset_work.exists()
    with get_client(sync_client=True) as client:
        pretrain = [r for r in by_stage["pretrain"] if r.state.is_completed()]
        assert len(pretrain) == 1
        manifest = pretrain[0].state.result()
        assert manifest.stats["steps"] == 7
        assert (work / manifest.files[0].path).is_file()  # manifests name files relative to the work dir
        assert client.read_flow_run(run.id).parameters["config"]["train"]["pretrain"]["steps"] == 7
    live.finished_pipeline = run.id  # for the screenshot test below


CHROMIUM = Path("/usr/bin/chromium")


def browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (a dev dependency: pip install -e '.[dev]')"
    return None


def test_the_screenshot_script_shows_the_report_card_and_its_loss_plot_in_the_ui(live, tmp_path):
    """scripts/screenshot_flow_run.py on a finished pipeline run of this server: it opens the run in
    headless Chromium (the v1 UI, where a run's "View at" link leads), its Artifacts tab and the
    report card there, and shoots once every plot in the card has loaded (each image's naturalWidth
    > 0, the pretraining loss plot among them). Without --api-url the script starts a server and
    runs a pipeline of its own; here the module's server and run stand in, to save a minute."""
    missing = browser_missing()
    if missing:
        if os.environ.get("CI"):  # CI installs both (.ci/run): there, a skip would hide a broken page
            pytest.fail(missing)
        pytest.skip(missing)
    from PIL import Image

    run_id = getattr(live, "finished_pipeline", None)
    if run_id is None:  # this test alone (-k): a run of its own
        run_id = wait_final(live, trigger(micro(live.tmp / "for-screenshot")).id).id
    out, run_page = tmp_path / "card.png", tmp_path / "run.png"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "screenshot_flow_run.py"), "--out", str(out),
                           "--run-page-out", str(run_page), "--ui", "v1", "--api-url", live.api_url,
                           "--flow-run-id", str(run_id)],
                          env=live.env(), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(rf"^flow run: \S+/runs/flow-run/{run_id}$", done.stdout, re.M), done.stdout
    assert re.search(r"^report card: \S+/artifacts/artifact/\S+$", done.stdout, re.M), done.stdout
    # The card down to its first loss plot: taller than a window, as wide as the page was.
    with Image.open(out) as shot:
        assert shot.format == "PNG" and shot.width == 1400 and shot.height > 1000
    with Image.open(run_page) as shot:
        assert shot.format == "PNG" and shot.size == (1400, 1000)


def test_a_run_killed_mid_pretraining_is_retried_and_resumes_from_its_checkpoint(live):
    from prefect import get_client

    steps, every = 150, 5
    # The module's served work dir: its data, tokenizer and chat data are cache hits here, and only
    # this run's own pretraining folder (a new one: other steps) is watched for checkpoints.
    work = live.served_work
    pattern = str(work / "pretrain" / "*" / "step-*")
    earlier = set(glob.glob(pattern))
    # Evaluation only at the end, so the steps are quick and even (~30 ms each on a CPU core).
    run = trigger(micro(work, train={"pretrain": {"steps": steps, "checkpoint_every": every, "eval_every": steps}}))
    deadline = time.monotonic() + RUN_S
    while not (checkpoints := sorted(set(glob.glob(pattern)) - earlier)):
        if time.monotonic() > deadline:
            pytest.fail(f"no pretraining checkpoint under {work}/pretrain within {RUN_S} s{live.logs()}")
        time.sleep(0.05)
    pid = flow_run_process(live.serve.pid, run.id)
    assert pid is not None, f"no process of the serve process runs flow run {run.id}{live.logs()}"
    os.kill(pid, signal.SIGKILL)
    seen = max(int(Path(c).name.split("-")[1]) for c in checkpoints)
    run_dir = Path(checkpoints[0]).parent
    assert not (run_dir / f"step-{steps:06d}").exists(), "pretraining finished before the kill: raise `steps`"

    crashed = wait_final(live, run.id, timeout=60)
    assert crashed.state.type.value in ("CRASHED", "FAILED"), f"{crashed.state.name}: {crashed.state.message}"

    killed_pretrain = [r for r in stage_runs(run.id, settle_s=3)["pretrain"] if r.state.name == "Running"]
    assert killed_pretrain, "the killed attempt's pretraining run should still show Running until the retry"
    retried_at = retry_like_the_ui(live, run.id)
    retried = wait_final(live, run.id, min_run_count=2)
    assert retried.state.is_completed(), f"{retried.state.name}: {retried.state.message}{live.logs()}"
    # The retry took over the dead attempt's work-dir lease and marked what it left running Crashed.
    with get_client(sync_client=True) as client:
        for r in killed_pretrain:
            assert client.read_task_run(r.id).state.name == "Crashed", r.name

    second = stage_runs(run.id, since=retried_at, expect=ALL_STAGES)
    # The benchmark sets were read by the earlier runs on this work dir.
    assert executed(second) == {"pretrain", "sft", "reward-model", "rlhf"} | MODEL_EVAL_STAGES, states(second)
    assert cached(second) == ALL_STAGES - executed(second), states(second)
    [pretrain] = [r for r in second["pretrain"] if r.state.is_completed()]
    manifest = pretrain.state.result()
    assert seen <= manifest.info["resumed_from"] < steps, manifest.info
    assert manifest.info["resumed_from"] % every == 0
    assert manifest.stats["steps"] == steps and len(manifest.stats["history"]["train_loss"]) == steps


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_served_run_asking_for_a_missing_device_fails_before_any_stage_with_the_cause_first(live):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    run = wait_final(live, trigger(micro(live.tmp / "no-gpu", train={"rlhf": {"device": "cuda"}})).id)
    assert run.state.is_failed(), f"{run.state.name}: {run.state.message}{live.logs()}"
    assert stage_runs(run.id, settle_s=3) == {}  # no stage started
    deadline, errors = time.monotonic() + 30, []
    with get_client(sync_client=True) as client:
        while not errors and time.monotonic() < deadline:  # logs reach the API in batches
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            errors = [log.message for log in sorted(logs, key=lambda log: log.timestamp) if log.level >= 40]
            time.sleep(0.5)
    assert errors and errors[0].startswith("crawl2chat: machine check: train.rlhf.device 'cuda' asks for a GPU")
    assert "\n" not in errors[0]


def test_a_refresh_run_given_one_field_keeps_the_deployments_config_and_takes_in_new_files_once(live):
    """`prefect deployment run data-refresh/data-refresh --param config='{"work_dir": ...}'`: the
    partial config is merged into the served deployment's own (the micro preset: 2 WARC files, where
    a config of defaults would make 4); the second run finds nothing new and runs no data stage."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    from tasks.core.dataset import read_ledger
    from tests.support.pipeline import DATA_STAGES

    with get_client(sync_client=True) as client:
        served = client.read_deployment_by_name("data-refresh/data-refresh").parameters["config"]
    assert served["work_dir"] == str(live.preset_work)  # absolute, as the UI's form shows it

    work = live.tmp / "refreshed"
    ran = []
    for _ in range(2):
        run = run_deployment("data-refresh/data-refresh", parameters={"config": {"work_dir": str(work)}},
                             timeout=0)
        run = wait_final(live, run.id)
        assert run.state.is_completed(), f"{run.state.name}: {run.state.message}{live.logs()}"
        ran.append(stage_runs(run.id, expect={"refresh-plan", "dataset-held"}))
    ledger = read_ledger(work / "dataset")
    assert ledger.versions == [1] and sum(len(files) for files in ledger.processed.values()) == 2
    assert DATA_STAGES - {"synthetic-crawl"} <= executed(ran[0])
    assert not executed(ran[1]) & DATA_STAGES and executed(ran[1]) == {"refresh-plan", "dataset-held"}
    assert not live.preset_work.exists()


def test_the_ablate_deployment_runs_with_the_ablation_given_through_the_api(live):
    """A user's ablation sent as the run's parameter (the UI's form does the same): it runs in the
    served process, writes its report where it was told, and attaches it to the run it was started as."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    from tests.support.pipeline import MICRO_ABLATION_SET

    # The work dir of the pipeline runs above: the base's data stages are cache hits, so the run is the
    # ablation's own stages. The controls are tested in tests/flows/test_ablate.py; here the API is.
    work = live.served_work
    ablation = {"name": "from-the-api", "preset": str(live.tmp / "micro.yaml"), "work_dir": str(work),
                "set": MICRO_ABLATION_SET, "variants": [], "seeds": 2,
                "controls": {"null_control": True, "positive_control": {"enabled": False}},
                "reference": {"pages": 30}, "shards": {"workers": 1}}
    run = run_deployment("ablate/ablate", parameters={"ablation": ablation}, timeout=0)
    run = wait_final(live, run.id)
    assert run.state.is_completed(), f"{run.state.name}: {run.state.message}{live.logs()}"
    result = json.loads((work / "ablations" / "from-the-api" / "ablation.json").read_text())
    assert [r["variant"] for r in result["rows"]] == ["null-control", "base"]
    assert result["reference_documents"] == 30
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).parameters["ablation"]["controls"]["positive_control"] == {
            "enabled": False}
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run.id])))
    assert {a.key for a in artifacts} >= {"ablation-from-the-api", "ablation-from-the-api-verdicts"}
