"""A real `prefect server start` on loopback for tests, and the process helpers around it: a free
port, the descendants of a process (through /proc, so Linux only), and stopping a process group with
everything it started.

Tests talk to the server only through its API, as the UI and the CLI do. The server runs in a fresh
PREFECT_HOME of its own (its own SQLite database), in its own session, and is stopped with every
process it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

SERVER_STARTUP_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    out, frontier = [], [pid]
    while frontier:
        frontier = [c for p in frontier for c in children.get(p, [])]
        out += frontier
    return out


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie left to init counts as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(proc: subprocess.Popen | None) -> None:
    """Terminate the process group (then kill it), and any descendant that left the group; reap all."""
    if proc is None:
        return
    stray = descendants(proc.pid)
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid in stray:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    while any(alive(p) for p in stray) and time.monotonic() < deadline:
        time.sleep(0.1)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def clean_env(**updates: str) -> dict[str, str]:
    """This process's environment without its PREFECT_* settings (the tests' own harness points
    them elsewhere), plus `updates`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(updates)
    return env


@dataclass
class Server:
    api_url: str
    home: Path  # the server's PREFECT_HOME: give it to the clients too, so none reads the user's profile
    proc: subprocess.Popen
    log: Path

    def env(self, **updates: str) -> dict[str, str]:
        """The environment for a process that talks to this server."""
        return clean_env(PREFECT_HOME=str(self.home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                         PREFECT_API_URL=self.api_url, **updates)


def wait_for_health(server: Server, timeout: float = SERVER_STARTUP_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"`prefect server start` exited with code {server.proc.returncode} before it was "
                        f"healthy:\n{tail(server.log)}")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the Prefect server did not answer {server.api_url}/health within {timeout} s:\n{tail(server.log)}")


@contextlib.contextmanager
def prefect_server(tmp: Path, **settings: str) -> Iterator[Server]:
    """`prefect server start` on a free loopback port, healthy, with `settings` (PREFECT_* variables)
    in its environment; stopped, with everything it started, when the block ends."""
    port = free_port()
    home = tmp / "prefect-home"
    log = tmp / "server.log"
    server = None
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=clean_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", **settings),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=tmp)
        server = Server(f"http://127.0.0.1:{port}/api", home, proc, log)
        wait_for_health(server)
        yield server
    finally:
        if server is not None:
            stop(server.proc)
