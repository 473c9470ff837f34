"""The task runner the data stages map on: threads or processes locally, Dask or Ray on a cluster.

The data flow's code is the same on every runner; only where its mapped tasks execute changes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.core.store import StageConfig


class RunnerConfig(StageConfig):
    kind: Literal["threads", "processes", "dask", "ray"] = "threads"
    workers: int = Field(2, ge=1, description="Local workers (threads, processes, or a local Dask cluster)")
    address: str | None = Field(None, description="An existing Dask scheduler or Ray cluster to use instead")


def make_task_runner(config: RunnerConfig):
    if config.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=config.workers)
    if config.kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=config.workers)
    if config.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if config.address:
            return DaskTaskRunner(address=config.address)
        # One thread per worker process: the stages are CPU-bound Python.
        return DaskTaskRunner(cluster_kwargs={"n_workers": config.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise RuntimeError("runner.kind is ray but prefect-ray is not installed: "
                           "pip install 'crawl2chat[ray]'") from None
    return RayTaskRunner(address=config.address) if config.address else RayTaskRunner()
