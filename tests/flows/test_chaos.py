"""Chaos: `crawl2chat run` killed with SIGKILL at points spread over the stages, rerun each time.

Each rerun takes over the dead run's work-dir lease, re-executes no stage that had finished, resumes
pretraining and RLHF from their last checkpoints, and the last one completes with output files
byte-identical to those of a run that was never interrupted. A second run started on the work dir
while the first holds it is refused and writes nothing.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prefect.results import ResultRecord

from flows.config import deep_merge
from tests.support.pipeline import MICRO

ROOT = Path(__file__).resolve().parents[2]

# Pretraining and RLHF long enough (a few seconds) to be killed between two checkpoints.
CHAOS = deep_merge(MICRO, {"train": {
    "pretrain": {"steps": 240, "checkpoint_every": 60, "eval_every": 120},
    "rlhf": {"steps": 4, "checkpoint_every": 2},
}})

# Where each run is killed: as soon as this file exists in the work dir.
KILL_POINTS = [
    ("data: extraction started", "extract/*/provenance.json"),
    ("dedup started", "dedup-candidates/*/provenance.json"),
    ("token shards started", "token-shards/*/provenance.json"),
    ("mid-pretraining, after its first checkpoint", "pretrain/*/step-000060/meta.json"),
    ("mid-RLHF, after its first checkpoint", "rlhf/*/step-000002/meta.json"),
    ("evaluation started", "evaluate-model/*/provenance.json"),
]
RUN_TIMEOUT = 240


def start_run(preset: Path, work: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "run", "--preset", str(preset), "--work-dir",
                             str(work)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)  # its own process group: SIGKILL takes its children too


def kill_when(proc: subprocess.Popen, work: Path, pattern: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not list(work.glob(pattern)):
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {pattern} appeared:\n"
                        f"{proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{pattern} did not appear within {RUN_TIMEOUT} s")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def finish(proc: subprocess.Popen) -> str:
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the run did not finish within {RUN_TIMEOUT} s")
    assert proc.returncode == 0, out[-3000:]
    return out


def finished_stages(work: Path) -> dict[Path, bytes]:
    """Stage folders whose result is recorded (the stage finished), with their provenance record,
    which a re-execution would rewrite."""
    results = work / ".prefect-results"
    return {folder: (folder / "provenance.json").read_bytes() for folder in work.glob("*/*")
            if folder.is_dir() and not folder.parent.name.startswith(".") and (results / folder.name).exists()}


def outputs(work: Path) -> dict[str, bytes]:
    """Every output file, by path relative to the work dir: stage folders (without provenance
    records, which say when and by which run, and without leftovers of killed atomic writes) and the
    report card. The report's throughput line is a measurement of the run, the one line left out."""
    files = {}
    for path in sorted(work.glob("*/*/**/*")):
        rel = path.relative_to(work)
        if path.is_file() and path.name != "provenance.json" and not any(p.startswith(".") for p in rel.parts):
            files[rel.as_posix()] = path.read_bytes()
    for name in ("report.md", "models.json"):
        files[name] = (work / name).read_bytes()
    for name in [n for n in files if n.endswith("report.md")]:
        files[name] = b"\n".join(line for line in files[name].split(b"\n") if b"tokens/s" not in line)
    return files


def recorded_result(work: Path, stage: str):
    [folder] = [f for f in (work / stage).iterdir() if (work / ".prefect-results" / f.name).exists()]
    return ResultRecord.deserialize((work / ".prefect-results" / folder.name).read_bytes()).result


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "chaos.yaml"
    path.write_text(yaml.safe_dump({**CHAOS, "work_dir": "unused"}))
    return path


@pytest.fixture(scope="module")
def uninterrupted(preset, harness_env, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted")
    finish(start_run(preset, work, harness_env))
    return work


def test_runs_killed_at_six_points_resume_and_end_byte_identical(preset, uninterrupted, harness_env, tmp_path):
    work = tmp_path / "work"
    for i, (point, pattern) in enumerate(KILL_POINTS):
        before = finished_stages(work) if work.exists() else {}
        run = start_run(preset, work, harness_env)
        if i == 0:  # a second run while the first holds the work dir: refused, one line, nothing written
            deadline = time.monotonic() + 60
            while not (work / ".lease.json").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            second = subprocess.run([sys.executable, "-m", "cli.main", "run", "--preset", str(preset),
                                     "--work-dir", str(work)], cwd=ROOT, env=harness_env, capture_output=True,
                                    text=True, timeout=120)
            assert second.returncode != 0
            assert second.stderr.strip().splitlines()[-1].startswith(
                f"crawl2chat: work dir {work} is in use by pid {run.pid} on host ")
        kill_when(run, work, pattern)
        after = finished_stages(work)
        rerun = {f.relative_to(work) for f, record in before.items() if after.get(f) != record}
        assert not rerun, f"run {i + 1} (killed at {point}) re-executed finished stages {sorted(rerun)}"

    before = finished_stages(work)
    log = finish(start_run(preset, work, harness_env))
    assert "took over the stale lease" in log
    after = finished_stages(work)
    assert all(after[f] == record for f, record in before.items()), "the last run re-executed a finished stage"

    assert recorded_result(work, "pretrain").info["resumed_from"] == 60
    assert recorded_result(work, "rlhf").info["resumed_from"] == 2
    ours, reference = outputs(work), outputs(uninterrupted)
    assert sorted(ours) == sorted(reference)
    differ = [name for name in reference if ours[name] != reference[name]]
    assert not differ, f"outputs differ from the uninterrupted run's: {differ}"
    digests = {name: hashlib.sha256(data).hexdigest()[:12] for name, data in ours.items()}
    assert len(digests) > 50  # every stage's files were compared, not an empty set
