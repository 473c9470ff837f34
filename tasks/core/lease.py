"""One writer per work dir: a lease file with a heartbeat.

Two pipeline runs on one work dir (two `crawl2chat run`, or a served deployment run beside a CLI
run) would interleave their stage outputs, checkpoints and result records. So a run holds the work
dir for its whole life:

    with hold_work_dir(work_dir, label="crawl2chat run") as lease:
        ...
        lease.check()          # raises LeaseLost if another process has taken the work dir over
        write_something()

The lease is a small JSON file, `<work_dir>/.lease.json`, naming its holder:

    {"version": 1, "host": "node7", "host_id": "<boot id>/pid:[4026531836]", "pid": 4242,
     "start_time": "123456", "token": "<32 hex digits>", "label": "crawl2chat run",
     "taken_at": 1718000000.0, "heartbeat_at": 1718000030.0}

(`start_time` is field 22 of /proc/<pid>/stat, null where /proc is absent; times are Unix seconds.)

Why a file with a heartbeat and not only flock(): flock is unreliable across hosts on network
filesystems (a no-op or host-local on some NFS and most FUSE mounts), and a lock says nothing
about a holder that hangs. A lease file works on any filesystem that can create a file
exclusively, can be read by a person (`cat .lease.json` says who holds the work dir), and its
heartbeat lets another host tell a live holder from a dead one.

When is a lease stale, so that a newcomer may take it over?
- its holder is on this host (same host name, boot and pid namespace) and its pid is gone, or the
  pid now belongs to another process (a different start time: the pid was reused); or
- its heartbeat is older than `stale_after_s`: a holder on another host stopped refreshing (it
  died, or it hangs). Hosts' clocks are compared here, so `stale_after_s` must exceed their skew.

What this cannot promise: a holder that freezes (SIGSTOP, a VM pause) for longer than
`stale_after_s` is taken over, and when it wakes it may write once before its heartbeat notices
that the lease is gone. `lease.check()` before a write narrows that window to one heartbeat; no
lease without a fencing token checked by the storage itself closes it.

Standard library only, so any entry point can use it before importing anything heavy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

LEASE_NAME = ".lease.json"
FORMAT_VERSION = 1
POLL_S = 0.2  # how often a waiting contender looks again
MAX_CLAIMS = 100  # abandoned takeover claims skipped before giving up (see _claim)

Log = Callable[[str], None]


class WorkDirBusy(RuntimeError):
    """Another live process holds the work dir."""


class LeaseLost(RuntimeError):
    """The lease this process held was taken over or deleted; stop writing to the work dir."""


# --- Who a process is ---------------------------------------------------------------------------


def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or None where there is
    no /proc or no such process. With the pid it identifies a process: pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 is the command name in parentheses and may itself hold spaces and ')': split after
    # the last ')'. What follows starts at field 3, so field 22 is index 19.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _host_id() -> str | None:
    """What must match, beyond the host name, for a pid in a lease to be checkable here: the boot
    (a pid from before a reboot means nothing) and the pid namespace (two containers may share a
    host name, but not their pids). None where /proc is absent."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OSError, OverflowError):  # a pid out of range
        return False
    return True


@dataclass(frozen=True)
class Holder:
    """The content of a lease file (and of a takeover claim, see _claim)."""

    host: str
    host_id: str | None
    pid: int
    start_time: str | None
    token: str
    label: str
    taken_at: float
    heartbeat_at: float

    @classmethod
    def me(cls, label: str) -> "Holder":
        now = time.time()
        return cls(host=socket.gethostname(), host_id=_host_id(), pid=os.getpid(),
                   start_time=_proc_start_time(os.getpid()), token=secrets.token_hex(16),
                   label=label, taken_at=now, heartbeat_at=now)

    def to_json(self) -> str:
        return json.dumps({"version": FORMAT_VERSION, **asdict(self)}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Holder":
        d = json.loads(text)
        return cls(host=str(d["host"]), host_id=d.get("host_id"), pid=int(d["pid"]),
                   start_time=d.get("start_time"), token=str(d["token"]),
                   label=str(d.get("label", "")), taken_at=float(d["taken_at"]),
                   heartbeat_at=float(d["heartbeat_at"]))

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname() and self.host_id == _host_id()

    def describe(self) -> str:
        label = f" ({_one_line(self.label)})" if self.label else ""
        return f"pid {self.pid} on host {self.host}{label} since {_clock(self.taken_at)}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# --- Reading and writing lease files ------------------------------------------------------------
# A lease file is never written in place: it is created whole (a temp file linked to its name) and
# refreshed whole (a temp file renamed over it), so a reader sees an old or a new version, never
# half of one. Nor is it fsynced: a lease only matters while its holder runs, and after a crash of
# the machine a damaged file is handled as unreadable (below).


def _temp_beside(path: Path, text: str) -> Path:
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
    tmp.write_text(text)
    return tmp


def _create_exclusive(path: Path, text: str) -> bool:
    """Create `path` holding `text` unless it exists. Of several processes, on one host or many,
    at most one succeeds. True if we created it."""
    tmp = _temp_beside(path, text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        # Over NFS a link whose reply was lost is retried and reports EEXIST although it
        # succeeded: a link count of 2 on our temp file says it did (see open(2), O_EXCL).
        return os.stat(tmp).st_nlink == 2
    except OSError:
        # No hard links on this filesystem (some FUSE and SMB mounts): O_EXCL instead, which is
        # exclusive too, but a reader may see the file empty for a moment (see _why_stale).
        return _create_with_o_excl(path, text)
    finally:
        tmp.unlink(missing_ok=True)


def _create_with_o_excl(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _overwrite(path: Path, text: str) -> None:
    tmp = _temp_beside(path, text)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Seen:
    """One look at a lease file. `key` tells versions of different holders apart: the holder's
    token, or for an unreadable file the identity of that file."""

    holder: Holder | None  # None: the file is there but unreadable
    key: str
    mtime: float


def _look(path: Path) -> Seen | None:
    """The lease file at `path`, or None if there is none."""
    try:
        with open(path) as f:
            st = os.fstat(f.fileno())
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        holder = Holder.from_json(text)
        return Seen(holder, holder.token, st.st_mtime)
    except (ValueError, KeyError, TypeError):
        return Seen(None, f"unreadable-{st.st_ino}-{st.st_mtime_ns}", st.st_mtime)


def _why_stale(seen: Seen, stale_after_s: float) -> str | None:
    """Why this lease no longer protects anyone (a few words for the log), or None while its holder
    may still be alive."""
    now, holder = time.time(), seen.holder
    if holder is None:
        # A file being written by O_EXCL, or damaged by a crash: stale once untouched for long.
        idle = now - seen.mtime
        return f"its file is unreadable and untouched for {idle:.0f}s" if idle > stale_after_s else None
    if holder.on_this_host():
        if not _pid_exists(holder.pid):
            return f"its process {holder.pid} is gone"
        start = _proc_start_time(holder.pid)
        if holder.start_time and start and start != holder.start_time:
            return f"pid {holder.pid} is now another process"
    silent = now - holder.heartbeat_at
    if silent > stale_after_s:
        return f"no heartbeat for {silent:.0f}s (stale after {stale_after_s:g}s)"
    return None


def _describe(seen: Seen) -> str:
    return seen.holder.describe() if seen.holder else "an unreadable lease file"


# --- Taking over a stale lease ------------------------------------------------------------------
# Several contenders may find the same stale lease at once. Renaming it away first, then creating,
# is not enough: a slow contender's rename could move away the fresh lease a faster one has just
# created. So a contender first claims the stale version itself, by exclusively creating
# `<lease>.claim-<hash of its key>-0`. One contender wins that claim; the others
# see the claim and wait like for a holder. Only the winner replaces the lease, and only after
# checking that the file still is that stale version. A claimer killed during those few
# milliseconds leaves its claim; once that claim is stale by the same rules, the next contender
# claims `...-1`, and so on.


def _claim_path(path: Path, stale: Seen, n: int) -> Path:
    # The key comes from a file anyone could have written: hash it into a safe file name.
    digest = hashlib.sha256(stale.key.encode()).hexdigest()[:16]
    return path.with_name(f"{path.name}.claim-{digest}-{n}")


def _claim(path: Path, stale: Seen, me: Holder, stale_after_s: float) -> tuple[int | None, Seen | None]:
    """(n, None) if we won claim n and may replace `stale`, else (None, the claim of whoever is
    taking it over, or None if its claimer has just finished)."""
    for n in range(MAX_CLAIMS):
        if _create_exclusive(_claim_path(path, stale, n), me.to_json()):
            return n, None
        other = _look(_claim_path(path, stale, n))
        if other is None:  # its claimer just finished: look at the lease again
            return None, None
        if _why_stale(other, stale_after_s) is None:
            return None, other
    raise WorkDirBusy(f"work dir lease {path} has {MAX_CLAIMS} abandoned takeover claims; "
                      f"delete the {path.name}.claim-* files there and retry")


def _take_over(path: Path, stale: Seen, me: Holder, stale_after_s: float) -> tuple[bool, Seen | None]:
    """Replace the stale lease `stale` by ours. (True, None) if done; (False, claim) if another
    contender is taking it over; (False, None) if the lease changed meanwhile: look again."""
    n, other = _claim(path, stale, me, stale_after_s)
    if n is None:
        return False, other
    try:
        now = _look(path)
        if now is None:  # released meanwhile
            return _create_exclusive(path, me.to_json()), None
        if now.key != stale.key or _why_stale(now, stale_after_s) is None:
            return False, None  # someone took it first, or its holder came back
        _overwrite(path, me.to_json())
        return True, None
    finally:
        for k in range(n + 1):  # ours, and the abandoned claims below it
            _claim_path(path, stale, k).unlink(missing_ok=True)


# --- A held lease -------------------------------------------------------------------------------


class Lease:
    """The lease of one work dir, held by this process. `lost` is set once the heartbeat finds
    that the lease file is no longer ours (taken over, or deleted)."""

    def __init__(self, path: Path, holder: Holder, heartbeat_s: float, stale_after_s: float, log: Log):
        self.path, self.work_dir, self.holder = path, path.parent, holder
        self.heartbeat_s, self.stale_after_s, self._log = heartbeat_s, stale_after_s, log
        self.lost = threading.Event()
        # The dead holder this lease was taken over from, if any: its run's leftovers can be
        # tidied (flows/deployment_runs.py marks its task runs Crashed). Taken once, by whoever tidies.
        self.took_over_from: Holder | None = None
        self._why_lost = ""
        self._stop = threading.Event()
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._beat_until_stopped, daemon=True,
                                        name=f"lease-heartbeat {self.work_dir}")

    def check(self) -> None:
        """Raise LeaseLost if the work dir is no longer ours; call it before writing."""
        if self.lost.is_set():
            raise LeaseLost(self._why_lost)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._beat():
                return

    def _beat(self) -> bool:
        """Refresh our heartbeat; False once the lease is lost."""
        try:
            seen = _look(self.path)
            if seen is None or seen.key != self.holder.token:
                by = f"it is now held by {_describe(seen)}" if seen else "its file was deleted"
                return self._lose(by)
            beat = replace(self.holder, heartbeat_at=time.time())
            _overwrite(self.path, beat.to_json())
            self.holder, self._last_beat = beat, time.monotonic()
        except OSError as e:
            # A flaky network filesystem: keep trying, but once others may see us as stale we
            # cannot assume the work dir is still ours.
            silent = time.monotonic() - self._last_beat
            if silent > self.stale_after_s:
                return self._lose(f"its heartbeat could not be written for {silent:.0f}s ({e})")
        return True

    def _lose(self, why: str) -> bool:
        self._why_lost = (f"lost the lease of work dir {self.work_dir}: {why}; "
                          f"stop writing there (another run may own it now)")
        self.lost.set()
        self._log(self._why_lost)
        return False

    def _start(self) -> None:
        self._thread.start()

    def _release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.heartbeat_s))
        if os.getpid() != self.holder.pid:
            return  # a forked child: the lease is its parent's
        # Between this look and the unlink another process could take over only if it found us
        # stale, which a holder that beats until now is not.
        seen = _look(self.path)
        if seen is not None and seen.key == self.holder.token:
            self.path.unlink(missing_ok=True)


# --- Acquiring ----------------------------------------------------------------------------------


def _acquire(path: Path, *, wait: float, label: str, heartbeat_s: float, stale_after_s: float,
             log: Log) -> Lease:
    deadline = time.monotonic() + wait
    while True:
        me = Holder.me(label)
        if _create_exclusive(path, me.to_json()):
            return Lease(path, me, heartbeat_s, stale_after_s, log)
        seen = _look(path)
        if seen is None:
            continue  # released between our attempt and our look
        why = _why_stale(seen, stale_after_s)
        if why is None:
            blocker = f"is in use by {_describe(seen)}"
        else:
            done, claim = _take_over(path, seen, me, stale_after_s)
            if done:
                log(f"took over the stale lease of work dir {path.parent} from "
                    f"{_describe(seen)}: {why}")
                lease = Lease(path, me, heartbeat_s, stale_after_s, log)
                lease.took_over_from = seen.holder
                return lease
            if claim is None:
                continue  # the lease changed under us: look again
            blocker = f"is being taken over by {_describe(claim)}"
        if time.monotonic() >= deadline:
            waited = f" (waited {wait:g}s)" if wait > 0 else ""
            raise WorkDirBusy(f"work dir {path.parent} {blocker}{waited}; wait for that run to "
                              f"finish, or use another work dir")
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


# --- Holding, reentrant within a process --------------------------------------------------------
# A flow that holds its work dir may call code that holds it again (a subflow, a CLI command that
# runs a flow): the inner hold must neither be refused by our own lease nor release it on its way
# out. So this process counts its holds per work dir.


@dataclass
class _Holds:
    lock: threading.Lock
    lease: Lease | None = None
    count: int = 0


_holds: dict[Path, _Holds] = {}
_holds_lock = threading.Lock()


def _holds_of(path: Path) -> _Holds:
    with _holds_lock:
        return _holds.setdefault(path, _Holds(threading.Lock()))


@contextmanager
def hold_work_dir(work_dir: str | os.PathLike, *, wait: float = 0, label: str = "",
                  heartbeat_s: float = 10, stale_after_s: float = 60,
                  log: Log | None = None) -> Iterator[Lease]:
    """Hold `work_dir` as its only writer while the block runs, or raise WorkDirBusy.

    Waits up to `wait` seconds for a live holder to finish; takes over a stale lease (see the
    module docstring) with one log line. A nested hold of the same work dir in this process (any
    thread) yields the same Lease and keeps the outer hold's settings; a thread that enters while
    another thread of this process is still acquiring waits for that acquisition.
    """
    if not 0 < heartbeat_s < stale_after_s:
        raise ValueError(f"need 0 < heartbeat_s < stale_after_s, got {heartbeat_s} and {stale_after_s}")
    log = log or logging.getLogger("crawl2chat.lease").warning
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = work.resolve() / LEASE_NAME
    holds = _holds_of(path)
    with holds.lock:
        if holds.lease is None or holds.lease.holder.pid != os.getpid():  # none, or a parent's
            holds.lease = _acquire(path, wait=wait, label=label, heartbeat_s=heartbeat_s,
                                   stale_after_s=stale_after_s, log=log)
            holds.lease._start()
            holds.count = 0
        holds.count += 1
        lease = holds.lease
    try:
        yield lease
    finally:
        with holds.lock:
            holds.count -= 1
            if holds.count == 0 and holds.lease is lease:
                holds.lease = None
                lease._release()


def held_lease(work_dir: str | os.PathLike) -> Lease | None:
    """This process's lease of `work_dir`, if it holds one (for a check before new writes)."""
    with _holds_lock:
        holds = _holds.get(Path(work_dir).resolve() / LEASE_NAME)
    lease = holds.lease if holds else None
    return lease if lease is not None and lease.holder.pid == os.getpid() else None
