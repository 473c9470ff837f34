"""What every flow shares: the machine checked and the work dir held before any work, result storage
in the work dir, and failures that name their stage."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from tasks.core.lease import WorkDirBusy, held_lease, hold_work_dir
from tasks.core.store import results_dir

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
               "evaluate.device": config.evaluate.device}
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
            held.enter_context(hold_work_dir(work, label=_run_label(), log=logger.warning))
        except (MachineUnfit, WorkDirBusy) as refusal:
            logger.error("crawl2chat: %s", refusal)
            raise
        yield str(work)


def _run_label() -> str:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return f"flow run {ctx.flow_run.name} ({ctx.flow_run.id})" if ctx and ctx.flow_run else "crawl2chat"


def in_work_dir(task, work_dir: str):
    """The task with its results (and cache records) persisted under <work>/.prefect-results.

    Set per call rather than at import, because the work dir is a run parameter. A run whose work-dir
    lease was taken over by another stops here, before it writes again.
    """
    lease = held_lease(work_dir)
    if lease is not None:
        lease.check()
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
