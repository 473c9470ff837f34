"""What a pipeline run did, read back from the Prefect API: each task run's final state name.

A stage that re-executed ends Completed; a cache hit ends Cached.
"""

from __future__ import annotations

import time
from collections import Counter
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)


def _flow_tree(client, root: UUID) -> list:
    """The flow run and all its subflow runs, depth first."""
    runs, frontier = [], [root]
    while frontier:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
        runs += children
        frontier = [c.id for c in children]
    return runs


def task_states(flow_run_id: UUID, settle_seconds: float = 10.0) -> list[tuple[str, str]]:
    """(task name, final state name) of every task run under the flow run, subflows included.

    Task-run states reach the API asynchronously, so this polls until every run is final and
    the count stops changing.
    """
    deadline = time.monotonic() + settle_seconds
    previous: list[tuple[str, str]] | None = None
    with get_client(sync_client=True) as client:
        while True:
            subflows = _flow_tree(client, flow_run_id)
            flow_ids = [flow_run_id] + [f.id for f in subflows]
            subflow_parents = {f.parent_task_run_id for f in subflows}
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=flow_ids)))
            states = sorted((r.name.split("[")[0], r.state.name if r.state else "Pending")
                            for r in runs if r.id not in subflow_parents)
            final = all(s in ("Completed", "Cached", "Failed", "Crashed", "Cancelled") for _, s in states)
            if (final and states == previous) or time.monotonic() > deadline:
                return states
            previous = states
            time.sleep(0.5)


def summarize(states: list[tuple[str, str]]) -> Counter:
    return Counter(state for _, state in states)
