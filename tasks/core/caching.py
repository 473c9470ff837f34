"""The cache key of every stage, how a cached result is verified, and the folder each stage writes to.

Pure functions: Prefect's side (the CachePolicy that calls them) is tasks/core/cache_policy.py, loaded
only when a stage's task is used, so a stage's pure code imports without Prefect.

A stage's cache key is the digest of
  * the task's name,
  * its inputs: stage configs by value, manifests by the digests of the files they list (never a
    path), and never the work dir, so a moved or copied work dir keeps every stage cached;
  * its code: the normalized source of every project module the task's module imports,
    transitively, found from the import graph (nothing listed by hand). Normalized means the AST
    without docstrings, so a comment, a docstring or reformatting reruns nothing, while any change
    of logic reruns the stage and, through its changed manifest, what depends on it;
  * the versions of the packages that shape its output.
There is no run id in the key: a fresh run reuses earlier work.

The key names the stage's output folder too, <work>/<task name>/<key>/ (`output_dir`): one key for
one thing, so a cached manifest can only point at files written by the same inputs and code.

A cache hit is verified before Prefect hands it on: the files the cached manifest lists are checked
(size, then sha256, or for large files a stat fingerprint). A missing or changed file expires the
cached record, with one log line saying why, and Prefect runs the stage again.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util  # resolve_name only: relative imports to absolute names
import json
import os
import platform
import socket
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from tasks.core.store import Manifest, entry_problem, write_json

# The packages whose modules can shape a stage's output. flows/ composes stages but computes nothing.
PROJECT_PACKAGES = ("tasks", "models")
KEY_LENGTH = 32  # hex digits: 128 bits


# --- Inputs ---------------------------------------------------------------------------------------

def _canonical(value: Any) -> Any:
    """A JSON-able, order-stable stand-in for one task input."""
    if isinstance(value, Manifest):
        return {"manifest": value.digest()}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot key a cache on an input of type {type(value).__name__}")


# --- Code: the project modules a stage runs, from the import graph ---------------------------------

# The folder that holds the project packages (a checkout's root, or site-packages for a wheel).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=None)
def module_path(name: str) -> Path | None:
    """The source file of project module `name`, or None when it is not one ("tasks.core.store.Manifest"
    names a class inside a module).

    Found on disk, never through importlib: find_spec imports a dotted name's parents, so computing a
    key would run torch's and Prefect's imports in the task's thread, beside stages importing the same
    modules in other threads (and import locks taken in opposite orders can fail with a deadlock error).
    """
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES or not all(p.isidentifier() for p in parts):
        return None
    base = PROJECT_ROOT.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


# CPython 3.11's parser is not safe to enter from two threads at once (seen here: "SystemError: AST
# constructor recursion depth mismatch" while two stages computed their keys side by side), so every
# parse and dump of a tree in this module holds this lock.
_AST_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _tree(name: str) -> ast.Module:
    source = module_path(name).read_text(encoding="utf-8")
    with _AST_LOCK:
        return ast.parse(source, filename=str(module_path(name)))


@lru_cache(maxsize=None)
def imported_modules(name: str) -> frozenset[str]:
    """Project modules that module `name` imports anywhere in its source (lazy imports in functions too)."""
    package = name if module_path(name).name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module or ""
            # `from models import checkpoint` imports the module models.checkpoint.
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            # `import a.b.c` runs a/__init__, a/b/__init__ and a/b/c.
            parts = candidate.split(".")
            if parts[0] in PROJECT_PACKAGES:
                found.update(m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if module_path(m))
    found.discard(name)
    return frozenset(found)


@lru_cache(maxsize=None)
def code_dependencies(name: str) -> tuple[str, ...]:
    """`name`, the packages it sits in, and every project module it imports, transitively, sorted."""
    parts = name.split(".")
    start = {m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if module_path(m)}
    seen, frontier = set(start), list(start)
    while frontier:
        for dep in imported_modules(frontier.pop()):
            if dep not in seen:
                seen.add(dep)
                frontier.append(dep)
    return tuple(sorted(seen))


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(source: str) -> str:
    """Digest of what code does: its AST without docstrings (comments and layout are not in it)."""
    with _AST_LOCK:
        dumped = ast.dump(_without_docstrings(ast.parse(source)))
    return hashlib.sha256(dumped.encode()).hexdigest()


@lru_cache(maxsize=None)
def code_digest(name: str) -> str:
    return source_digest(module_path(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def package_version(name: str) -> str:
    import importlib.metadata  # here, not at the top: a tenth of a second a worker need not pay

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


# --- The key ----------------------------------------------------------------------------------------

def key_payload(task_name: str, task_module: str, inputs: dict[str, Any], packages: tuple[str, ...]) -> dict:
    """Everything the key is a digest of; also what a stage's provenance record holds."""
    return {
        "task": task_name,
        "inputs": _canonical(inputs),
        "code": {m: code_digest(m) for m in code_dependencies(task_module)},
        "packages": {p: package_version(p) for p in sorted(packages)},
    }


def digest_key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]


def first_problem(result: Any, work_dir: str | None) -> str | None:
    """The first listed file of a cached result that is missing or changed (None when all hold)."""
    problems = (entry_problem(entry, work_dir) for m in _manifests_in(result) for entry in m.entries())
    return next((p for p in problems if p), None)


def expire_if_damaged(task_ctx, key: str, work_dir: str | None) -> None:
    """Before Prefect looks the key up: if the cached result's files no longer hold what it lists,
    mark the record expired, so Prefect's own lookup misses and the stage runs again."""
    store = task_ctx.result_store
    if store is None or not store.exists(key):
        return
    problem = first_problem(store.read(key).result, work_dir)
    if problem:
        from prefect import get_run_logger

        get_run_logger().warning("cached output of %r is not intact: %s; running the stage again",
                                 task_ctx.task.name, problem)
        store.write(obj=None, key=key, expiration=datetime.now(timezone.utc) - timedelta(seconds=1))


# --- The output folder and its provenance -------------------------------------------------------------

@lru_cache(maxsize=None)
def git_commit() -> str | None:
    """The project checkout's commit, when it is one (recorded, never keyed)."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def output_dir(work_dir: str | Path) -> Path:
    """The running stage's folder, <work>/<task name>/<cache key>/, with its provenance record.

    The record (provenance.json: the key's payload, plus where, when and by which run) is written
    before the stage does any work, so a crashed or surprising stage can be inspected.
    """
    from prefect.context import TaskRunContext
    from prefect.transactions import get_transaction

    ctx, transaction = TaskRunContext.get(), get_transaction()
    if ctx is None or transaction is None:
        raise RuntimeError("output_dir() is for a stage task running under Prefect")
    if not transaction.key:  # Prefect logs the policy's exception and runs the task uncached
        raise RuntimeError(f"stage {ctx.task.name!r}: no cache key, so no output folder (the run's log has "
                           "'Error encountered when computing cache key' and why)")
    task = ctx.task
    payload = task.cache_policy.payload(task, ctx.parameters)
    if digest_key(payload) != transaction.key:  # the folder must be named by the key Prefect caches on
        raise RuntimeError(f"stage {task.name!r}: output folder key differs from its cache key")
    folder = Path(work_dir) / task.name / transaction.key
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "provenance.json", {
        "key": transaction.key, **payload,
        "flow_run": str(ctx.task_run.flow_run_id), "task_run": str(ctx.task_run.id),
        "host": socket.gethostname(), "pid": os.getpid(), "python": platform.python_version(),
        "git_commit": git_commit(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    return folder


def _manifests_in(value: Any) -> Iterator[Manifest]:
    """The manifests a stage result or input holds (itself, or inside lists and dicts)."""
    if isinstance(value, Manifest):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _manifests_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _manifests_in(v)
