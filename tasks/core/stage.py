"""The @task of every stage: content-keyed verified cache, results persisted, and Prefect loaded
only when the task is used.

A stage module defines its pure functions and, at the bottom, one thin `@stage_task` wrapper. The
wrapper is a `StageTask`: importing the stage module (as a worker process does to run its pure
code) costs no Prefect import; the Prefect task is built on first use (`.submit`, `.map`,
`.with_options`, a call) and every attribute is the Prefect task's from then on.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any

from tasks.core.store import Manifest


def _map_manifests(value: Any, fn) -> Any:
    if isinstance(value, Manifest):
        return fn(value)
    if isinstance(value, list):
        return [_map_manifests(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_manifests(v, fn) for k, v in value.items()}
    return value


class StageTask:
    """A stage's Prefect task, built the first time it is used; see the module docstring."""

    def __init__(self, fn, name: str, packages: tuple[str, ...], ignore: tuple[str, ...], options: dict[str, Any],
                 cached: bool = True):
        functools.update_wrapper(self, fn)
        self.__qualname__ = fn.__qualname__.removesuffix(".fn")  # the module attribute this is
        self.fn, self.name = fn, name
        self._packages, self._ignore, self._options, self._cached = packages, ignore, options, cached
        self._task = None
        self._lock = threading.Lock()

    @property
    def task(self):
        if self._task is None:
            with self._lock:
                if self._task is None:
                    from prefect import task
                    from prefect.cache_policies import NO_CACHE

                    from tasks.core.cache_policy import StageCache

                    policy = StageCache(packages=self._packages, ignore=("work_dir", *self._ignore)) \
                        if self._cached else NO_CACHE
                    self._task = task(name=self.name, cache_policy=policy, persist_result=True,
                                      task_run_name=self.name, **self._options)(self.fn)
        return self._task

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # not built yet, or a private name: never forward these
            raise AttributeError(attr)
        return getattr(self.task, attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task(*args, **kwargs)

    def __repr__(self) -> str:
        return f"StageTask({self.name!r})"

    def __reduce__(self):
        # Pickled by reference, like a function: Dask and process workers import the stage module.
        return _module_attribute, (self.__module__, self.__qualname__)


def _module_attribute(module: str, qualname: str) -> Any:
    import importlib

    return functools.reduce(getattr, qualname.split("."), importlib.import_module(module))


def stage_task(name: str, packages: tuple[str, ...] = (), ignore: tuple[str, ...] = (), cached: bool = True,
               **options: Any):
    """Decorate a stage's wrapper function as its task.

    A run is named after its stage (a mapped run also after its file: flows/common.py). The body
    sees manifests with absolute paths and returns them so; what crosses to the next stage (and
    into the result store) holds paths relative to `work_dir`. Results go to the storage the flow
    sets (<work>/.prefect-results), so a rerun in a fresh process finds them.

    `cached=False` is for the few tasks whose answer depends on the world outside their inputs
    (what a crawl listing holds today, what a dataset's ledger says): they run every time.
    """

    def decorate(fn) -> StageTask:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def in_work_dir(*args: Any, **kwargs: Any) -> Any:
            arguments = signature.bind(*args, **kwargs).arguments
            work = arguments.get("work_dir")
            if work is None:
                return fn(**arguments)
            result = fn(**{k: _map_manifests(v, lambda m: m.located(work)) for k, v in arguments.items()})
            return _map_manifests(result, lambda m: m.relative_to(work))

        # The module attribute of this name is the StageTask, so the wrapper is found (and pickled
        # by reference, as workers need) at <stage task>.fn.
        in_work_dir.__qualname__ = f"{fn.__qualname__}.fn"
        return StageTask(in_work_dir, name, tuple(packages), tuple(ignore), options, cached)

    return decorate
