"""The one cache policy of every stage.

A stage's cache key is the digest of
  * the task's name,
  * its inputs: stage configs by value, manifests by the digests of the files they list,
  * the source files of the modules that shape its output (the task's own module, tasks/store.py,
    and any helpers the stage names), and
  * the versions of the packages that shape its output.
There is no run id in the key: a fresh run reuses earlier work, and a changed input or changed code
invalidates exactly that stage and, through the changed manifests, everything downstream.

Prefect's built-in INPUTS policy would hash a path as a string and TASK_SOURCE only sees the task
function itself, which is why this policy exists.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from prefect.cache_policies import CachePolicy
from pydantic import BaseModel

from tasks.store import Manifest


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
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot key a cache on an input of type {type(value).__name__}")


@lru_cache(maxsize=None)
def module_digest(module_name: str) -> str:
    module = importlib.import_module(module_name)
    source = Path(inspect.getsourcefile(module) or "")
    return hashlib.sha256(source.read_bytes()).hexdigest()


@lru_cache(maxsize=None)
def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def stage_key(task_name: str, task_module: str, inputs: dict[str, Any],
              sources: tuple[str, ...], packages: tuple[str, ...]) -> str:
    modules = sorted({task_module, "tasks.store", *sources})
    payload = {
        "task": task_name,
        "inputs": _canonical(inputs),
        "sources": {m: module_digest(m) for m in modules},
        "packages": {p: package_version(p) for p in sorted(packages)},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class StageCache(CachePolicy):
    """Cache policy keyed on content: see the module docstring."""

    sources: tuple[str, ...] = field(default_factory=tuple)
    packages: tuple[str, ...] = field(default_factory=tuple)
    ignore: tuple[str, ...] = field(default_factory=tuple)  # inputs that cannot change the output

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        task = task_ctx.task
        keyed = {k: v for k, v in inputs.items() if k not in self.ignore}
        return stage_key(task.name, task.fn.__module__, keyed, self.sources, self.packages)


def stage_cache(*sources: str, packages: tuple[str, ...] = (), ignore: tuple[str, ...] = ()) -> StageCache:
    return StageCache(sources=tuple(sources), packages=tuple(packages), ignore=tuple(ignore))


def stage_task(name: str, *sources: str, packages: tuple[str, ...] = (), ignore: tuple[str, ...] = (),
               **options: Any):
    """The @task every stage uses: content-keyed cache, results persisted, a readable name.

    Results go to the flow's result storage, which the pipeline points at <work>/.prefect-results,
    so a rerun in a fresh process finds them.
    """
    from prefect import task

    return task(name=name, cache_policy=stage_cache(*sources, packages=packages, ignore=ignore),
                persist_result=True, **options)


def input_key(*inputs: Any, length: int = 12) -> str:
    """A short digest of a stage's inputs, used to name its outputs.

    Outputs of different inputs never share a name, so a cached manifest can never point at a
    file that a run with other inputs has since overwritten.
    """
    payload = json.dumps(_canonical(list(inputs)), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]
