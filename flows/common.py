"""What every flow shares: the machine checked and the work dir held before any work, result storage
in the work dir, and failures that name their stage."""

from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from prefect import get_run_logger, unmapped
from prefect.futures import PrefectFuture, wait

from flows.deployment_runs import crash_abandoned_task_runs
from tasks.core.lease import WorkDirBusy, held_lease, hold_work_dir
from tasks.core.store import Manifest, is_url, results_dir

if TYPE_CHECKING:
    from flows.config import PipelineConfig


class StageFailed(RuntimeError):
    """A stage failed; the message names the stage and the cause, on one line."""


class MachineUnfit(RuntimeError):
    """The config asks for a device this machine does not have; one line, before any work."""


def machine_problems(config: PipelineConfig) -> list[str]:
    """What the config's training and evaluation ask of this machine that it cannot give."""
    import torch

    from models.checkpoint import device_problem

    train = config.train
    devices = {"train.pretrain.device": train.pretrain.device, "train.sft.device": train.sft.device,
               "train.reward.device": train.reward.device, "train.rlhf.device": train.rlhf.device,
               "train.dpo.device": train.dpo.device,
               "evaluate.models.device": config.evaluate.models.device}
    problems = [f"{field} {problem}" for field, device in devices.items() if (problem := device_problem(device))]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    on_gpu = train.pretrain.device.startswith("cuda") or (train.pretrain.device == "auto" and gpus > 0)
    if on_gpu and gpus and train.pretrain.nproc > gpus:
        problems.append(f"train.pretrain.nproc is {train.pretrain.nproc}, but this machine has {gpus} GPU(s)")
    return problems


def check_machine(config: PipelineConfig) -> None:
    """Raise MachineUnfit, one line, when the config asks for devices this machine lacks."""
    problems = machine_problems(config)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise MachineUnfit(f"machine check: {problems[0]}{more}")


@contextlib.contextmanager
def owned_work_dir(config: PipelineConfig, check_devices: bool = True) -> Iterator[str]:
    """The run's work dir (absolute), written by this run alone while the block runs.

    First the machine is checked (training and evaluation flows), then the work dir's lease is taken
    (tasks/core/lease.py): a second run on a work dir in use is refused with one line naming the holder.
    A subflow of a run holds the same lease again (it is reentrant within a process). The cause of a
    refusal is logged before Prefect logs the failure, so it is the first line a user reads.
    """
    logger = get_run_logger()
    work = work_path(config.work_dir)
    with contextlib.ExitStack() as held:
        try:
            if check_devices:
                check_machine(config)
            lease = held.enter_context(hold_work_dir(work, label=_run_label(), log=logger.warning))
        except (MachineUnfit, WorkDirBusy) as refusal:
            logger.error("crawl2chat: %s", refusal)
            raise
        dead, lease.took_over_from = lease.took_over_from, None
        if dead is not None:
            crash_abandoned_task_runs(dead.label)
        yield str(work)


def _run_label() -> str:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return f"flow run {ctx.flow_run.name} ({ctx.flow_run.id})" if ctx and ctx.flow_run else "crawl2chat"


class StageRuns:
    """The stage runs of one flow: submitted with the work dir's result storage, their futures passed
    straight on to the next stage, and waited on once, at the end.

    Passing futures (not results) lets Prefect start a mapped element as soon as its own input is
    ready: extraction of the first WARC file runs while the URL filter works on the last one. A
    failure is turned into one line naming the first stage that failed (those downstream of it end
    NotReady and are not blamed). The final states are what a run reports as executed or cached.
    """

    def __init__(self, work_dir: str, results: str | None = None):
        self.work_dir = work_dir
        # Set once here, rather than at import, because the work dir is a run parameter.
        self.storage = result_storage(work_dir, results)
        self.runs: list[tuple[str, PrefectFuture]] = []
        self.labels: dict[Any, str] = {}  # task run id → the file it works on

    def _task(self, task):
        # A run whose work-dir lease was taken over by another stops here, before it writes again.
        lease = held_lease(self.work_dir)
        if lease is not None:
            lease.check()
        return task.with_options(result_storage=self.storage)

    def submit(self, task, *args: Any, label: str | None = None, **kwargs: Any) -> PrefectFuture:
        """One run of a stage; with `label`, named `stage[label]` (`evaluate-model[sft]`)."""
        prepared = self._task(task)
        if label is not None:
            prepared = prepared.with_options(task_run_name=f"{task.name}[{label}]")
        future = prepared.submit(*args, **kwargs)
        if label is not None:
            self.labels[future.task_run_id] = label
        self.runs.append((task.name, future))
        return future

    def map(self, task, *args: Any, **kwargs: Any) -> list[PrefectFuture]:
        """Like Prefect's `task.map` (lists are mapped over, `unmapped(...)` values are not), but
        each run is named after the file it works on: `extract[CC-MAIN-…-00001]`, a name it takes
        from its input (a file's manifest, or the future of the same file's previous stage)."""
        mapped = [v for v in (*args, *kwargs.values()) if is_mapped(v)]
        if not mapped or len({len(v) for v in mapped}) != 1:
            raise ValueError(f"map of {task.name!r} needs lists of one length to map over")

        def pick(value: Any, i: int) -> Any:
            if isinstance(value, unmapped):
                return value.value
            return value[i] if is_mapped(value) else value

        stage_task, futures = self._task(task), []  # the lease checked once per stage, not per file
        for i in range(len(mapped[0])):
            label = self._label(mapped[0][i])
            future = stage_task.with_options(task_run_name=f"{task.name}[{label}]").submit(
                *(pick(a, i) for a in args), **{k: pick(v, i) for k, v in kwargs.items()})
            self.labels[future.task_run_id] = label
            self.runs.append((task.name, future))
            futures.append(future)
        return futures

    def _label(self, value: Any) -> str:
        if isinstance(value, PrefectFuture):
            return self.labels.get(value.task_run_id, str(value.task_run_id)[:8])
        if isinstance(value, Manifest) and value.files:
            return Path(value.files[0].path.rstrip("/")).name.split(".")[0]  # a WARC file or shard, no extensions
        return str(value)

    def result(self, future: PrefectFuture) -> Any:
        """One stage's result, when the flow needs it to go on (say, the list of crawl files)."""
        self._raise_first_failure([(n, f) for n, f in self.runs if f is future])
        return future.result()

    def wait(self) -> None:
        """Wait for every run; raise StageFailed for the first that failed, in submission order."""
        try:
            self._raise_first_failure(self.runs)
        finally:
            tally = _tally.get()
            if tally is not None:
                tally += self.states()

    @staticmethod
    def _raise_first_failure(runs: list[tuple[str, PrefectFuture]]) -> None:
        wait([f for _, f in runs])
        for stage, future in runs:
            state = future.state
            if state.is_failed() or state.is_crashed() or state.is_cancelled():
                raise StageFailed(stage_error(stage, future.result(raise_on_failure=False))) from None

    def states(self) -> list[tuple[str, str]]:
        """(stage, final state name) of every run: Completed (executed), Cached, Failed, NotReady."""
        return [(stage, future.state.name) for stage, future in self.runs]


def result_storage(work_dir: str, results: str | None) -> Any:
    """Where Prefect persists stage results and cache records: `<work>/.prefect-results` by default;
    a path (a shared filesystem) or any fsspec URL (s3://bucket/prefix, gcs://...) when set, so a
    retry on another machine finds what the first attempt cached. The stage outputs those records
    point at live in the work dir, which the machines must then share too; a record whose files are
    not there is a verified miss (tasks/core/caching.py), and the stage runs again."""
    if not results:
        return results_dir(work_dir)
    if is_url(results):
        import hashlib

        from prefect.filesystems import RemoteFileSystem

        # Prefect takes remote storage as a saved block (so workers can load it by name): one per
        # URL, named after it, saved again on each run in case the server is a new one.
        name = "crawl2chat-results-" + hashlib.sha256(results.encode()).hexdigest()[:12]
        RemoteFileSystem(basepath=results.rstrip("/")).save(name, overwrite=True)
        return f"remote-file-system/{name}"
    return Path(results).resolve()


def is_mapped(value: Any) -> bool:
    # Prefect's `unmapped` is itself a tuple: it must be told apart first.
    return isinstance(value, (list, tuple)) and not isinstance(value, unmapped)


def stage_error(stage: str, err: BaseException | Any) -> str:
    if not isinstance(err, BaseException):
        return f"stage {stage!r} failed: {err}"
    cause = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"stage {stage!r} failed: {type(err).__name__}: {cause}"


# The stage runs of every flow run in this context, for a caller that reports them (the CLI).
_tally: contextvars.ContextVar[list | None] = contextvars.ContextVar("crawl2chat_stage_tally", default=None)


@contextlib.contextmanager
def tally_stage_runs() -> Iterator[list[tuple[str, str]]]:
    """Collect (stage, final state name) of every stage run of the flows called in the block,
    subflows included, as each flow finishes waiting for its stages."""
    runs: list[tuple[str, str]] = []
    token = _tally.set(runs)
    try:
        yield runs
    finally:
        _tally.reset(token)


def work_path(work_dir: str) -> Path:
    return Path(work_dir).resolve()
