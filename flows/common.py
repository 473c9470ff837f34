"""What every flow shares: result storage in the work dir, and failures that name their stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.futures import PrefectFuture

from tasks.store import results_dir


class StageFailed(RuntimeError):
    """A stage failed; the message names the stage and the cause, on one line."""


def in_work_dir(task, work_dir: str):
    """The task with its results (and cache records) persisted under <work>/.prefect-results.

    Set per call rather than at import, because the work dir is a run parameter.
    """
    return task.with_options(result_storage=results_dir(work_dir))


def resolve(stage: str, futures: Any) -> Any:
    """Wait for a stage's future(s); turn a failure into a StageFailed that names the stage."""
    try:
        if isinstance(futures, PrefectFuture):
            return futures.result()
        return [f.result() for f in futures]
    except StageFailed:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the stage's name
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise StageFailed(f"stage {stage!r} failed: {type(err).__name__}: {cause}") from err


def work_path(work_dir: str) -> Path:
    return Path(work_dir).resolve()
