"""The work-dir lease: one writer per work dir, across processes and hosts, robust to crashes.

Other holders are real processes (sys.executable running HOLDER below) or lease files written by
hand for what one machine cannot stage (a holder on another host, a reused pid). Every wait is
bounded, so a regression fails instead of hanging.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.core.lease import (
    LEASE_NAME,
    Holder,
    LeaseLost,
    WorkDirBusy,
    _acquire,
    _host_id,
    _proc_start_time,
    hold_work_dir,
)

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 10.0  # the most any single wait below may take; a healthy run takes a fraction

# A contender in its own process: starts at `start_at` (Unix time), tries to hold the work dir,
# prints "held" or "busy <message>", and if it holds, holds until its stdin has a line or closes.
HOLDER = r"""
import sys, time
from tasks.core.lease import WorkDirBusy, hold_work_dir
work, label, wait, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start_at - time.time()))
try:
    with hold_work_dir(work, label=label, wait=wait, heartbeat_s=0.2, stale_after_s=30):
        print("held", flush=True)
        sys.stdin.readline()
except WorkDirBusy as e:
    print("busy", e, flush=True)
"""


@pytest.fixture
def spawn():
    procs = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def start(work: Path, label: str = "", wait: float = 0, start_at: float = 0) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(work), label, str(wait), str(start_at)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(TIMEOUT)
        for pipe in (p.stdin, p.stdout):
            pipe.close()


def first_line(p: subprocess.Popen, timeout: float = TIMEOUT) -> str | None:
    """The process's next line of output, or None if none comes within `timeout`."""
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline().rstrip("\n") if ready else None


def let_go(p: subprocess.Popen) -> None:
    p.stdin.close()
    assert p.wait(TIMEOUT) == 0


def lease_of(work: Path) -> dict:
    return json.loads((work / LEASE_NAME).read_text())


def write_lease(work: Path, **fields) -> Holder:
    now = time.time()
    holder = Holder(**{"host": "elsewhere.example", "host_id": "another-boot/pid:[1]", "pid": 4321,
                       "start_time": "777", "token": "ab" * 16, "label": "their run",
                       "taken_at": now - 3600, "heartbeat_at": now, **fields})
    work.mkdir(parents=True, exist_ok=True)
    (work / LEASE_NAME).write_text(holder.to_json())
    return holder


def test_a_second_holder_in_another_process_is_refused_with_one_line_naming_the_first(tmp_path, spawn):
    with hold_work_dir(tmp_path, label="first run"):
        line = first_line(spawn(tmp_path))
    assert line is not None and line.startswith("busy ")
    message = line[len("busy "):]
    assert "\n" not in message
    for part in (str(tmp_path.resolve()), f"pid {os.getpid()}", f"host {socket.gethostname()}",
                 "first run", "another work dir"):
        assert part in message
    assert not (tmp_path / LEASE_NAME).exists()  # released


def test_a_waiting_holder_gets_the_work_dir_once_the_first_releases(tmp_path, spawn):
    with hold_work_dir(tmp_path):
        second = spawn(tmp_path, wait=TIMEOUT)
        assert first_line(second, timeout=0.5) is None  # still waiting
    assert first_line(second) == "held"
    assert lease_of(tmp_path)["pid"] == second.pid
    let_go(second)
    assert not (tmp_path / LEASE_NAME).exists()


def test_a_holder_killed_with_sigkill_leaves_a_lease_the_next_holder_takes_over(tmp_path, spawn):
    first = spawn(tmp_path, label="doomed")
    assert first_line(first) == "held"
    first.send_signal(signal.SIGKILL)
    first.wait(TIMEOUT)
    assert lease_of(tmp_path)["pid"] == first.pid  # the stale lease is still there

    said = []
    with hold_work_dir(tmp_path, log=said.append) as lease:
        assert lease_of(tmp_path)["pid"] == os.getpid()
        # Who it was taken from, for tidying what that run left (flows/deployment_runs.py).
        assert (lease.took_over_from.pid, lease.took_over_from.label) == (first.pid, "doomed")
    assert len(said) == 1
    assert "took over" in said[0] and f"pid {first.pid}" in said[0] and "gone" in said[0]
    with hold_work_dir(tmp_path) as lease:
        assert lease.took_over_from is None  # released, not taken over


def test_a_lease_from_another_host_is_taken_over_only_once_its_heartbeat_is_old(tmp_path):
    write_lease(tmp_path, heartbeat_at=time.time() - 5)
    with pytest.raises(WorkDirBusy, match="pid 4321 on host elsewhere.example") as busy:
        with hold_work_dir(tmp_path, stale_after_s=60):
            pass
    assert "\n" not in str(busy.value) and "their run" in str(busy.value)

    write_lease(tmp_path, heartbeat_at=time.time() - 120)
    said = []
    with hold_work_dir(tmp_path, stale_after_s=60, log=said.append):
        assert lease_of(tmp_path)["pid"] == os.getpid()
    assert len(said) == 1 and "no heartbeat" in said[0] and "elsewhere.example" in said[0]


@pytest.mark.skipif(_proc_start_time(os.getpid()) is None, reason="needs /proc")
def test_a_live_pid_with_another_start_time_is_a_reused_pid_and_stale(tmp_path):
    here = {"host": socket.gethostname(), "host_id": _host_id(), "pid": os.getpid()}
    write_lease(tmp_path, **here, start_time=_proc_start_time(os.getpid()))
    with pytest.raises(WorkDirBusy):  # the same process: live
        with hold_work_dir(tmp_path):
            pass

    write_lease(tmp_path, **here, start_time="1")  # as if the pid had been reused
    said = []
    with hold_work_dir(tmp_path, log=said.append):
        assert lease_of(tmp_path)["token"] != "ab" * 16
    assert len(said) == 1 and "another process" in said[0]


def test_nested_holds_in_one_process_share_the_lease_until_the_outer_exit(tmp_path):
    lease_file = tmp_path / LEASE_NAME
    with hold_work_dir(tmp_path, label="outer") as outer:
        token = lease_of(tmp_path)["token"]
        with hold_work_dir(tmp_path / ".." / tmp_path.name, label="inner") as inner:
            assert inner is outer
        seen_by_thread = []
        t = threading.Thread(target=lambda: seen_by_thread.append(_hold_and_report(tmp_path)))
        t.start()
        t.join(TIMEOUT)
        assert seen_by_thread == [outer]
        assert lease_file.exists() and lease_of(tmp_path)["token"] == token
        assert lease_of(tmp_path)["label"] == "outer"
    assert not lease_file.exists()


def _hold_and_report(work: Path):
    with hold_work_dir(work) as lease:
        return lease


def test_the_heartbeat_advances_and_a_lease_taken_away_is_lost(tmp_path):
    said = []
    with hold_work_dir(tmp_path, heartbeat_s=0.05, stale_after_s=5, log=said.append) as lease:
        first_beat = lease_of(tmp_path)["heartbeat_at"]
        deadline = time.monotonic() + TIMEOUT
        while lease_of(tmp_path)["heartbeat_at"] == first_beat and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lease_of(tmp_path)["heartbeat_at"] > first_beat
        lease.check()  # still ours

        intruder = write_lease(tmp_path)  # another holder's content over ours
        assert lease.lost.wait(TIMEOUT)
        with pytest.raises(LeaseLost, match="elsewhere.example") as lost:
            lease.check()
        assert "\n" not in str(lost.value)
    assert lease_of(tmp_path)["token"] == intruder.token  # not ours, so not deleted
    assert len(said) == 1


def test_a_deleted_lease_file_is_lost(tmp_path):
    with hold_work_dir(tmp_path, heartbeat_s=0.05, stale_after_s=5, log=lambda _: None) as lease:
        (tmp_path / LEASE_NAME).unlink()
        assert lease.lost.wait(TIMEOUT)
        with pytest.raises(LeaseLost, match="deleted"):
            lease.check()


def stale_local_lease(work: Path) -> None:
    """A lease of this host whose pid cannot exist (above any pid_max): stale at once."""
    write_lease(work, host=socket.gethostname(), host_id=_host_id(), pid=2**30)


def test_processes_racing_for_one_stale_lease_exactly_one_wins(tmp_path, spawn):
    stale_local_lease(tmp_path)
    start_at = time.time() + 1.0  # after every contender has started up
    contenders = [spawn(tmp_path, label=f"contender {i}", start_at=start_at) for i in range(4)]
    outcomes = [first_line(p) for p in contenders]
    winners = [p for p, line in zip(contenders, outcomes) if line == "held"]
    assert len(winners) == 1, outcomes
    assert all(line.startswith("busy work dir") for line in outcomes if line != "held"), outcomes
    assert lease_of(tmp_path)["pid"] == winners[0].pid
    for p in contenders:
        let_go(p)
    assert sorted(os.listdir(tmp_path)) == []  # no lease, claim or temp file left behind


def test_threads_racing_for_a_stale_lease_exactly_one_wins_every_round(tmp_path):
    # The takeover protocol without the per-process reentrancy (which would serialise threads):
    # many rounds of contention are cheap in threads, and the winner's lease (this live pid)
    # refuses the others just as another process's would.
    path = tmp_path / LEASE_NAME
    for _ in range(20):
        stale_local_lease(tmp_path)
        barrier, won = threading.Barrier(6), []

        def contend():
            barrier.wait(TIMEOUT)
            try:
                won.append(_acquire(path, wait=0, label="", heartbeat_s=1, stale_after_s=30,
                                    log=lambda _: None))
            except WorkDirBusy:
                pass

        threads = [threading.Thread(target=contend) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert len(won) == 1
        assert lease_of(tmp_path)["token"] == won[0].holder.token
        path.unlink()
    assert os.listdir(tmp_path) == []
