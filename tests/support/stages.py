"""Calling one stage's task on its own, as a flow would, and what every such test asserts of it."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.store import Manifest, entry_problem, results_dir


@dataclass
class StageCall:
    """One call of a stage's task: what it was given, and the state and manifest it ended with."""

    task: Any
    work: Path
    inputs: dict[str, Any]
    state: Any

    @property
    def manifest(self) -> Manifest:
        return self.state.result()

    def again(self):
        """The same call once more: the final state of the second run."""
        return run_stage(self.task, self.work, **self.inputs).state


def run_stage(task, work: Path, **inputs: Any) -> StageCall:
    """Call the task with its results persisted under `work` (as flows/common.py's in_work_dir does)
    and no retries, so that a failure shows at once. A task that takes a work dir is given `work`
    unless the inputs name another."""
    if "work_dir" in inspect.signature(task.fn).parameters:
        inputs = {"work_dir": str(work), **inputs}
    configured = task.with_options(result_storage=results_dir(work), retries=0)
    return StageCall(task, work, inputs, configured(**inputs, return_state=True))


def assert_intact(manifest: Manifest, work: Path, stage: str) -> None:
    """The manifest is the stage's, lists files, and every file it lists holds what it says."""
    assert manifest.stage == stage
    assert manifest.files, f"{stage} lists no files"
    problems = [p for entry in manifest.entries() if (p := entry_problem(entry, work))]
    assert not problems, problems


def one_line_failure(state) -> BaseException:
    """The exception a failed run ended with; its message must be one line."""
    assert state.is_failed(), f"expected a failure, got {state.name}"
    err = state.result(raise_on_failure=False)
    assert isinstance(err, BaseException), err
    message = str(err)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    return err
