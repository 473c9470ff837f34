"""What a run of a deployment needs that a call from Python does not: the config it meant, when
it was given only some fields, and the task runs a dead earlier run left "Running", tidied."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from uuid import UUID

from prefect import get_run_logger
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from flows.config import PipelineConfig


def missing_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """Fields of a validated config (nested configs too) that its input did not give."""
    out = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name not in model.model_fields_set:
            out.append(prefix + name)
        elif isinstance(value, BaseModel):
            out += missing_fields(value, f"{prefix}{name}.")
    return out


def given_fields(raw: dict, prefix: str = "") -> list[str]:
    return [f for k, v in raw.items()
            for f in (given_fields(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [prefix + k])]


def run_config(config: PipelineConfig) -> PipelineConfig:
    """The config a deployment run is meant to have.

    Prefect merges a run's parameters into its deployment's at the top level only, so
    `prefect deployment run ... --param config='{"train": {"sft": {"steps": 50}}}'` hands the flow
    a config with every other field at its default, the work dir included. Here such a partial
    config is merged, field by field, into the deployment's own config (the preset it was served
    or deployed with), and the merge is logged. Flows called from Python, and complete configs
    (what the UI's form sends), pass through unchanged.
    """
    from prefect.context import FlowRunContext

    from flows.config import ConfigError, PipelineConfig, deep_merge, describe_validation_error

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    raw = run.parameters.get("config") if run else None
    if run is None or run.deployment_id is None or not isinstance(raw, dict) or not missing_fields(config):
        return config
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        base = client.read_deployment(run.deployment_id).parameters.get("config") or {}
    try:
        merged = PipelineConfig.model_validate(deep_merge(base, raw))
    except ValidationError as err:
        raise ConfigError(f"invalid config: {describe_validation_error(err)}") from None
    get_run_logger().info("config: the run gives %s; every other field is the deployment's",
                          ", ".join(given_fields(raw)) or "nothing")
    return merged


_RUN_ID = re.compile(r"^flow run .* \(([0-9a-f-]{36})\)$")


def crash_abandoned_task_runs(dead_label: str) -> None:
    """Mark Crashed the task runs a dead run left Running or Pending, once its work-dir lease is
    taken over: the process that would have finished them is gone, and Prefect changes only the
    flow run's state (the runner's crash report, or `crawl2chat setup`'s zombie automation), so
    without this they would show "Running" in the UI forever. The lease is taken as a flow starts,
    before it submits anything, so a retry of that same flow run has no task run of its own yet:
    every unfinished one created until now is the dead attempt's. A dead `crawl2chat run` names no
    flow run in its lease, and is left alone."""
    found = _RUN_ID.match(dead_label)
    if found is None:
        return
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId, TaskRunFilter,
                                                TaskRunFilterFlowRunId)
    from prefect.states import Crashed

    cutoff = datetime.now(timezone.utc)
    with get_client(sync_client=True) as client:
        runs, frontier = [UUID(found.group(1))], [UUID(found.group(1))]
        while frontier:  # the dead run's subflows, all levels down
            frontier = [r.id for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))]
            runs += frontier
        left = [r for r in client.read_task_runs(task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=runs)))
                if r.state and r.state.type.value in ("RUNNING", "PENDING") and r.created and r.created < cutoff]
        for run in left:
            client.set_task_run_state(run.id, Crashed(message="its process died; the work dir's next run "
                                                              "took over (crawl2chat)"), force=True)
    if left:
        get_run_logger().warning("marked %d task run(s) of the dead %s Crashed: %s", len(left), dead_label,
                                 ", ".join(sorted(r.name for r in left)))
