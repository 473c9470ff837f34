"""Call a function in a child process, with a hard time limit on every call.

    with Sandbox("tasks.data.html_text:extract_text", limit_s=5.0) as sandbox:
        text = sandbox.call(html, url)          # SandboxTimeout past 5 s, SandboxCrashed if it dies

Why a process and not a thread: a thread can only ask Python code to stop (an exception raised
into it lands at its next bytecode), so a call stuck inside one long C function, lxml parsing a
pathological page for minutes, ignores the limit until that function returns. A process can be
killed at any instant, and the operating system takes back everything it held.

Why not multiprocessing: the data stages may run inside Dask worker processes, which are daemonic,
and a daemonic process may not start multiprocessing children. A plain subprocess has no such rule,
and `python -m tasks.core.sandbox module:function` imports only what the function needs (no fork of a
parent full of threads, no re-import of the parent's main module).

The protocol: the parent and the child exchange pickles, each preceded by its length, over the
child's stdin (requests) and stdout (replies). The child first replies "ready" once it has imported
the function, then one reply per request: the function's result, or the exception it raised, which
the parent raises again. The parent waits for a reply no longer than the limit; past it, it kills
the child with SIGKILL, reaps it and raises `SandboxTimeout`. A child that dies mid-call (a
segfault, os._exit) raises `SandboxCrashed`. Either way the next call starts a fresh child.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

# The longest a child may take to import its function; past it the sandbox gives up (SandboxError).
# Generous: importing is not the call being limited, and a loaded machine can be slow at it.
START_LIMIT_S = 120.0

# The directory holding the `tasks` package: the child needs it on its path to run this module.
PROJECT_ROOT = str(Path(__file__).resolve().parents[2])

LENGTH = struct.Struct("!Q")  # the 8-byte length before every pickle


class SandboxError(Exception):
    """The sandbox could not run a call (its child failed to start), or the function raised an
    exception that cannot cross the pipe; the message then names its type."""


class SandboxTimeout(SandboxError):
    """The call ran past its limit; the child was killed."""


class SandboxCrashed(SandboxError):
    """The child died during the call (a segfault, os._exit, an external kill)."""


# --- Framing, shared by both sides ---------------------------------------------------------------

class _PipeClosed(Exception):
    """The other side closed its end of the pipe."""


class _Expired(Exception):
    """The deadline passed before a whole message arrived."""


def send_message(fd: int, payload: bytes) -> None:
    """Write one message: its length, then the pickle (two writes, so a large pickle is not copied)."""
    for data in (LENGTH.pack(len(payload)), payload):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]


def receive_message(fd: int, deadline: float | None = None) -> bytearray:
    """Read one message; raises `_Expired` if `deadline` (time.monotonic) passes first."""
    (length,) = LENGTH.unpack(_read_exactly(fd, LENGTH.size, deadline))
    return _read_exactly(fd, length, deadline)


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytearray:
    # poll, not select.select: select cannot watch a descriptor numbered 1024 or more, which a
    # long-lived worker with many open files can well hand out to the pipe.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buffer = bytearray()
    while len(buffer) < size:
        if deadline is not None:
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0 or not poller.poll(remaining_ms):
                raise _Expired
        chunk = os.read(fd, size - len(buffer))
        if not chunk:
            raise _PipeClosed
        buffer += chunk
    return buffer


# --- The parent's side ---------------------------------------------------------------------------

class Sandbox:
    """Calls `module:function` in a child process; each call may run at most `limit_s` seconds.

    Use it as a context manager: the child starts on entering, so its start-up overlaps with the
    caller's own work, and on leaving the child is killed and reaped. `limit_s` may be changed
    between calls. One caller at a time: a sandbox is not shared between threads.
    """

    def __init__(self, target: str, limit_s: float, start_limit_s: float = START_LIMIT_S):
        if ":" not in target:
            raise ValueError(f"target must read module:function, not {target!r}")
        self.target = target
        self.limit_s = limit_s
        self.start_limit_s = start_limit_s
        self._child: subprocess.Popen | None = None
        self._ready = False  # the child has imported the function and waits for requests
        self.owner_pid = os.getpid()

    def __enter__(self) -> "Sandbox":
        self._start_child()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._child is not None:
            self._stop_child()

    @property
    def pid(self) -> int | None:
        """The process id of the current child, if one is running."""
        return self._child.pid if self._child else None

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """The function's result for these arguments, computed in the child."""
        if self._child is None:
            self._start_child()
        if not self._ready:
            self._await_ready()
        try:
            send_message(self._child.stdin.fileno(), pickle.dumps((args, kwargs), pickle.HIGHEST_PROTOCOL))
        except BrokenPipeError:  # it died between calls
            raise SandboxCrashed(f"{self.target}: {self._stop_after_death()}") from None
        try:
            status, value = self._receive(deadline=time.monotonic() + self.limit_s)
        except _Expired:
            self._stop_child()
            raise SandboxTimeout(f"{self.target}: no result within {self.limit_s:g} s") from None
        except _PipeClosed:
            raise SandboxCrashed(f"{self.target}: {self._stop_after_death()}") from None
        if status == "error":
            raise value
        return value

    def _start_child(self) -> None:
        # The child must find `tasks.core.sandbox` whatever the parent's working directory.
        python_path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), PROJECT_ROOT) if p)
        self._child = subprocess.Popen(
            [sys.executable, "-m", "tasks.core.sandbox", self.target],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            env={**os.environ, "PYTHONPATH": python_path},
        )
        self._ready = False

    def _await_ready(self) -> None:
        """Wait for the child's first reply, outside the call's limit: importing is not the call."""
        try:
            status, value = self._receive(deadline=time.monotonic() + self.start_limit_s)
        except _Expired:
            self._stop_child()
            raise SandboxError(f"{self.target}: the child did not start within {self.start_limit_s:g} s") from None
        except _PipeClosed:
            # Not SandboxCrashed: no call was running, so no input is to blame.
            raise SandboxError(f"{self.target}: the child {self._stop_after_death()} while starting") from None
        if status == "error":  # the function could not be imported
            self._stop_child()
            raise value
        self._ready = True

    def _receive(self, deadline: float) -> tuple[str, Any]:
        return pickle.loads(receive_message(self._child.stdout.fileno(), deadline))

    def _stop_after_death(self) -> str:
        """Reap a child whose pipe closed and say how it ended. Its pipe may close a moment
        before it exits, hence the short grace before the kill."""
        return describe_exit(self._stop_child(grace_s=1.0))

    def _stop_child(self, grace_s: float = 0.0) -> int:
        """Kill the child (after `grace_s` for it to exit by itself), reap it, close its pipes;
        returns its exit status."""
        child, self._child, self._ready = self._child, None, False
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
        return child.returncode


# --- Reuse within a process ---------------------------------------------------------------------
# A child costs about 0.35 s to start (Python, the extractor, its word lists), and a data worker
# extracts many WARC files one after another: so a child that finished a file in good health waits,
# idle, for the next file of the same process. An idle child blocks on its stdin, which closes when
# this process ends, however it ends; the child then exits.

_idle: dict[str, list[Sandbox]] = {}
_idle_lock = threading.Lock()


@contextlib.contextmanager
def borrowed_sandbox(target: str, limit_s: float) -> Iterator[Sandbox]:
    """A started Sandbox for `target`, an idle one of this process if there is one; returned to the
    idle ones after the block, or stopped if the block raised."""
    with _idle_lock:
        idle = [s for s in _idle.pop(target, []) if s.owner_pid == os.getpid()]  # not a forked parent's
        sandbox = idle.pop() if idle else None
        _idle[target] = idle
    if sandbox is None:
        sandbox = Sandbox(target, limit_s).__enter__()
    sandbox.limit_s = limit_s
    try:
        yield sandbox
    except BaseException:
        sandbox.close()
        raise
    with _idle_lock:
        _idle.setdefault(target, []).append(sandbox)


@atexit.register
def _stop_idle_children() -> None:
    with _idle_lock:
        for sandbox in (s for group in _idle.values() for s in group if s.owner_pid == os.getpid()):
            sandbox.close()
        _idle.clear()


def describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:  # a signal without a name, such as a real-time one
        return f"was killed by signal {-returncode}"


# --- The child's side ----------------------------------------------------------------------------

def load_function(target: str):
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def portable_error(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a SandboxError naming its type; either
    way with the child's traceback attached as a note, since the parent's traceback ends at the pipe."""
    exc.add_note("In the sandbox child:\n" + "".join(traceback.format_exception(exc)).rstrip())
    try:
        pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
        return exc
    except Exception:
        substitute = SandboxError(f"{type(exc).__name__}: {exc}")
        substitute.__notes__ = exc.__notes__
        return substitute


def error_reply(exc: BaseException) -> bytes:
    return pickle.dumps(("error", portable_error(exc)), pickle.HIGHEST_PROTOCOL)


def serve(target: str) -> None:
    """Run requests until the parent closes the pipe."""
    # Keep the protocol's pipes to ourselves: whatever the function or a library prints goes to
    # stderr (even from C, since descriptor 1 itself now points there), and nothing that reads
    # stdin can swallow a request.
    requests, replies = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # Ctrl-C reaches the whole process group; the parent decides what it means and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    try:
        function = load_function(target)
    except Exception as exc:
        send_message(replies, error_reply(exc))
        return
    send_message(replies, pickle.dumps(("ready", None)))
    while True:
        try:
            args, kwargs = pickle.loads(receive_message(requests))
        except _PipeClosed:
            return
        try:
            # Pickled inside the try, so a result that cannot be pickled is reported, not fatal.
            reply = pickle.dumps(("ok", function(*args, **kwargs)), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            reply = error_reply(exc)
        send_message(replies, reply)


if __name__ == "__main__":
    # Serve from the importable copy of this module, so that a SandboxError the child pickles is
    # `tasks.core.sandbox.SandboxError`, which the parent can unpickle, not `__main__.SandboxError`.
    from tasks.core.sandbox import serve as serve_importable

    serve_importable(sys.argv[1])
