"""`crawl2chat setup` against a real `prefect server start` on loopback, checked through the API.

* setup creates the "gpu" global concurrency limit, the zombie automation and, with --webhook-url,
  a Custom Webhook block and the failure automation; a second setup updates them, never duplicates;
* a failed run of a crawl2chat deployment makes the server POST to the webhook (a loopback HTTP
  receiver here), once, though its subflow failed too; a failed run of a deployment without the
  crawl2chat tag does not;
* a run whose process is SIGKILLed after its first heartbeat is set Crashed by the zombie automation,
  and that Crashed is posted to the webhook too.

The runs are of a small flow of this module's own (OPS_CHECK, written into the server's temporary
folder as ops_check.py), each in a process of its own, as a served or worker-run flow is. The tests
share one server and run in file order: setup first. About 60 s in all, 15 s of it the server's start.
"""

from __future__ import annotations

import http.server
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from deployments import operations
from tests.support.prefect_server import free_port, stop, tail

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc")

REPO = Path(__file__).resolve().parents[2]
NOTIFY_S = 60  # from a run's final state to the webhook's POST: a second or two on an idle machine
START_S = 60  # from starting a run's process to its flow run's id: a few seconds

# The runs the tests watch: a deployment of this flow, with the crawl2chat tag or without it, run in
# this process by Prefect's flow engine, as `prefect.engine` runs a served or worker-started run.
OPS_CHECK = '''
import os, sys, time
from prefect import flow
from prefect.deployments import run_deployment
from prefect.flow_engine import run_flow


@flow(name="failing-step")
def failing_step():
    raise RuntimeError("this run fails on purpose")


@flow(name="ops-check")
def ops_check(mode: str):
    if mode == "fail":
        failing_step()  # a subflow, as the pipeline's train flow is: its run fails first
    time.sleep(600)  # mode "hang": a run that is alive until it is killed


if __name__ == "__main__":
    name, mode, tags = sys.argv[1], sys.argv[2], sys.argv[3:]
    ops_check.to_deployment(name, tags=tags).apply()
    run = run_deployment(f"ops-check/{name}", parameters={"mode": mode}, timeout=0)
    print(run.id, flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the rest to the log: nobody reads the pipe
    run_flow(ops_check, flow_run=run, parameters={"mode": mode}, return_type="state")
'''


class Receiver(http.server.BaseHTTPRequestHandler):
    posts: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.posts.append({"path": self.path, "json": json.loads(body or b"null")})
        self.send_response(200)
        self.end_headers()


@pytest.fixture(scope="module")
def hook():
    """A loopback HTTP server that records every POST; its URL."""
    Receiver.posts = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module", autouse=True)
def ops_check_script(server) -> None:
    """The script of the zombie and failure checks, beside the server's log, where start_run runs it."""
    (server.log.parent / "ops_check.py").write_text(OPS_CHECK)


@pytest.fixture(scope="module")
def first_setup(server, hook):
    """`crawl2chat setup` as a user runs it: a process with PREFECT_API_URL in its environment."""
    proc = subprocess.run([sys.executable, "-m", "cli.main", "setup", "--webhook-url", hook],
                          env=server.env(PYTHONPATH=str(REPO)), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def api(server, method: str, path: str, **kwargs):
    response = httpx.request(method, f"{server.api_url}{path}", timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


def automations(server) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for automation in api(server, "POST", "/automations/filter", json={}):
        out.setdefault(automation["name"], []).append(automation)
    return out


def start_run(server, name: str, mode: str, *tags: str) -> tuple[subprocess.Popen, str]:
    """An ops-check deployment's run in a process of its own; the process and the run's id."""
    log = server.log.parent / f"{name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "ops_check.py", name, mode, *tags], cwd=server.log.parent,
                                env=server.env(PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(operations.HEARTBEAT_S)),
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                                start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], START_S)
    run_id = proc.stdout.readline().strip() if ready else ""
    if not run_id:
        stop(proc)
        pytest.fail(f"ops_check.py {name} printed no flow run id within {START_S} s:\n{tail(log)}")
    return proc, run_id


def wait_for(what: str, check, timeout: float, logs: str = ""):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout} s{logs}")
        time.sleep(0.5)
    return found


def posts_about(run_id: str) -> list[dict]:
    return [p for p in Receiver.posts if run_id in p["json"]["body"]]


# --- the tests -----------------------------------------------------------------------------------

def test_setup_creates_the_gpu_limit_the_zombie_and_failure_automations_and_the_webhook_block(server, first_setup):
    assert api(server, "GET", "/v2/concurrency_limits/gpu")["limit"] == 1
    found = automations(server)
    assert {name: len(found[name]) for name in (operations.ZOMBIE_AUTOMATION, operations.FAILURE_AUTOMATION)} \
        == {operations.ZOMBIE_AUTOMATION: 1, operations.FAILURE_AUTOMATION: 1}, found
    [zombie], [failure] = found[operations.ZOMBIE_AUTOMATION], found[operations.FAILURE_AUTOMATION]
    assert zombie["enabled"] and failure["enabled"]
    assert zombie["trigger"]["within"] == operations.ZOMBIE_AFTER_S
    [notify] = failure["actions"]
    block = api(server, "GET", f"/block_documents/{notify['block_document_id']}")
    assert block["name"] == operations.NOTIFY_BLOCK and block["block_type"]["slug"] == "custom-webhook"
    assert "crawl2chat: global concurrency limit 'gpu': 1 slot(s)" in first_setup


def test_a_second_setup_updates_in_place_and_duplicates_nothing(server, hook, first_setup):
    from cli.main import main

    before = automations(server)
    blocks_before = api(server, "POST", "/block_documents/filter", json={})
    assert main(["setup", "--webhook-url", hook, "--gpu-slots", "2", "--zombie-after-s", "120"]) == 0

    after = automations(server)
    assert {n: [a["id"] for a in v] for n, v in after.items()} == {n: [a["id"] for a in v] for n, v in before.items()}
    assert after[operations.ZOMBIE_AUTOMATION][0]["trigger"]["within"] == 120
    assert api(server, "GET", "/v2/concurrency_limits/gpu")["limit"] == 2
    assert [b["id"] for b in api(server, "POST", "/block_documents/filter", json={})] == [b["id"] for b in blocks_before]
    limits = api(server, "POST", "/v2/concurrency_limits/filter", json={})
    assert [limit["name"] for limit in limits] == ["gpu"]


def test_the_zombie_automation_crashes_a_silent_run_of_ours_and_nothing_else():
    from prefect.events.schemas.automations import Posture

    automation = operations.zombie_automation()
    trigger = automation.trigger
    assert trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    # A heartbeat restarts the clock; a run's end stops it (no Crashed for a run that finished).
    assert trigger.expect == {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                              "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"}
    assert trigger.for_each == {"prefect.resource.id"} and trigger.threshold == 1
    assert trigger.within.total_seconds() == 3 * operations.HEARTBEAT_S
    assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    assert trigger.match_related.model_dump() == {"prefect.resource.role": "tag",
                                                  "prefect.resource.id": "prefect.tag.crawl2chat"}
    [action] = automation.actions
    assert (action.type, action.state.value, action.force) == ("change-flow-run-state", "CRASHED", False)


def test_a_failed_run_of_a_crawl2chat_deployment_is_posted_to_the_webhook_once(server, first_setup):
    before = len(Receiver.posts)
    # Another project's failing run first: it must not be posted.
    other, _ = start_run(server, "other-project", "fail")
    ours, run_id = start_run(server, "ours", "fail", operations.TAG)
    try:
        for proc in (other, ours):
            proc.wait(timeout=60)
        [post] = wait_for("the webhook's POST", lambda: posts_about(run_id), NOTIFY_S,
                          f"\n--- server log ---\n{tail(server.log)}")
        run = api(server, "GET", f"/flow_runs/{run_id}")
        assert post["path"] == "/hook"
        assert post["json"]["subject"] == f"crawl2chat: ours run {run['name']} Failed"
        assert "ended Failed" in post["json"]["body"] and "this run fails on purpose" in post["json"]["body"]
        assert post["json"]["text"] == f"{post['json']['subject']}\n{post['json']['body']}"
        time.sleep(3)  # a POST for the failed subflow, or for the other project's run, would have come by now
        assert Receiver.posts[before:] == [post], Receiver.posts
    finally:
        stop(other)
        stop(ours)


def test_a_killed_run_is_crashed_by_the_zombie_automation_and_posted(server):
    from prefect import get_client

    # The automation setup made, with a 10 s window (the least Prefect allows) instead of 120 s:
    # a live run's next heartbeat would come after 30 s, but this one is killed after its first.
    with get_client(sync_client=True) as client:
        operations.upsert_automation(client, operations.zombie_automation(after_s=10))
    proc, run_id = start_run(server, "zombie", "hang", operations.TAG)
    try:
        heartbeat = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                                "resource": {"id": [f"prefect.flow-run.{run_id}"]}}}
        wait_for("the run's first heartbeat", lambda: api(server, "POST", "/events/filter", json=heartbeat)["events"],
                 60, f"\n--- run log ---\n{tail(server.log.parent / 'zombie.log')}")
        assert api(server, "GET", f"/flow_runs/{run_id}")["state_type"] == "RUNNING"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

        run = wait_for("Crashed", lambda: (r := api(server, "GET", f"/flow_runs/{run_id}"))["state_type"] == "CRASHED"
                       and r, 60, f"\n--- server log ---\n{tail(server.log)}")
        assert run["state"]["message"].startswith("crawl2chat: no heartbeat for 10 s"), run["state"]
        [post] = wait_for("the webhook's POST of the crash", lambda: posts_about(run_id), NOTIFY_S)
        assert "ended Crashed" in post["json"]["body"]
    finally:
        stop(proc)
