"""What `crawl2chat setup` makes on a Prefect server for the crawl2chat deployments; Prefect client
calls only.

* the "gpu" global concurrency limit, which the training stages hold on CUDA (flows/train.py's
  `gpu_slot`): two training runs never share a GPU;
* the zombie automation: a run of a crawl2chat deployment whose heartbeats stop (its process was
  killed, its machine died) is set Crashed, instead of staying Running forever;
* with a webhook URL, a Custom Webhook notification block and an automation that posts to it when a
  run of a crawl2chat deployment fails or crashes (a zombie set Crashed included).

Every object is found by its name and updated in place, so a second `setup` never duplicates one.
Runs are told apart by the tag every crawl2chat deployment carries (deployments/serve.py), so the
automations leave other projects' runs on the same server alone.
"""

from __future__ import annotations

import os
from datetime import timedelta
from uuid import UUID

TAG = "crawl2chat"
GPU_LIMIT = "gpu"  # the name flows/train.py asks for
NOTIFY_BLOCK = "crawl2chat-alerts"
FAILURE_AUTOMATION = "crawl2chat: notify on failed or crashed runs"
ZOMBIE_AUTOMATION = "crawl2chat: crash runs whose heartbeats stopped"

# Prefect 3.9.1 sends a flow run heartbeat event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds
# (default 180, at least 30; PREFECT_RUNNER_HEARTBEAT_FREQUENCY is its older name). Our runs send one
# every 30 s, so a run three heartbeats late is dead, not slow.
HEARTBEAT_S = 30
ZOMBIE_AFTER_S = 3 * HEARTBEAT_S
HEARTBEAT_ENV = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}

FLOW_RUN_ENDS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}


def default_heartbeat() -> None:
    """Give the flow runs this process starts 30 s heartbeats, unless the heartbeat frequency was
    chosen (environment or profile). The runs are child processes that read their environment."""
    from prefect.settings import get_current_settings

    if "heartbeat_frequency" not in get_current_settings().flows.model_fields_set:
        os.environ.update(HEARTBEAT_ENV)


def our_runs() -> dict:
    """Events whose related resources name the crawl2chat tag: the server adds the tags of the flow
    run and of its deployment to every flow run state event, the engine its run's tags to heartbeats."""
    return {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"}


def zombie_automation(after_s: float = ZOMBIE_AFTER_S):
    """Prefect's "detect zombie flows" automation, for our runs: once a run has sent a heartbeat,
    a heartbeat or its end is expected within `after_s` seconds; if neither comes, the run is Crashed
    (a final state the UI can retry from)."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=f"A flow run of a crawl2chat deployment that sent no heartbeat for {after_s:g} s is "
                    "set Crashed. Its processes must send heartbeats every "
                    f"{HEARTBEAT_S} s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY={HEARTBEAT_S}).",
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat"} | FLOW_RUN_ENDS,
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=our_runs(),
            for_each={"prefect.resource.id"},  # one clock per flow run
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_s),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"crawl2chat: no heartbeat for {after_s:g} s: the process running this flow run died "
                    "or lost the server")],
    )


def failure_automation(block_document_id: UUID):
    """Post to the notification block when a run of a crawl2chat deployment fails or crashes.

    Only deployment runs match (their events name a deployment), so a failure inside the pipeline's
    train subflow is one message, for the run a user triggered, not one per flow level."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=FAILURE_AUTOMATION,
        description="Posts to the crawl2chat-alerts webhook when a crawl2chat deployment's run fails or crashes.",
        enabled=True,
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[our_runs(), {"prefect.resource.role": "deployment"}],
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(
            block_document_id=block_document_id,
            subject="crawl2chat: {{ deployment.name }} run {{ flow_run.name }} {{ flow_run.state.name }}",
            body="Flow run {{ flow_run.name }} ({{ flow_run.id }}) of deployment {{ flow.name }}/{{ deployment.name }} "
                 "ended {{ flow_run.state.name }}: {{ flow_run.state.message }}")],
    )


def save_webhook_block(url: str) -> UUID:
    """The Custom Webhook block the failure automation posts through (saved over any earlier one).
    Its JSON carries Slack's `text` field beside the subject and body on their own."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=NOTIFY_BLOCK, url=url,
        json_data={"text": "{{subject}}\n{{body}}", "subject": "{{subject}}", "body": "{{body}}"})
    return block.save(NOTIFY_BLOCK, overwrite=True)


def upsert_automation(client, automation) -> UUID:
    """Create the automation, or update the one of the same name (and delete any duplicate of it)."""
    existing = client.read_automations_by_name(automation.name)
    if not existing:
        return client.create_automation(automation)
    keep, *duplicates = existing
    client.update_automation(keep.id, automation)
    for duplicate in duplicates:
        client.delete_automation(duplicate.id)
    return keep.id


def setup(webhook_url: str | None = None, gpu_slots: int = 1, zombie_after_s: float = ZOMBIE_AFTER_S) -> list[str]:
    """Create or update everything above on the server of PREFECT_API_URL; one line per object."""
    from prefect import get_client

    done = []
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(GPU_LIMIT, gpu_slots)
        done.append(f"global concurrency limit {GPU_LIMIT!r}: {gpu_slots} slot(s)")
        upsert_automation(client, zombie_automation(zombie_after_s))
        done.append(f"automation {ZOMBIE_AUTOMATION!r}: no heartbeat for {zombie_after_s:g} s → Crashed")
        if webhook_url:
            block_id = save_webhook_block(webhook_url)
            done.append(f"notification block custom-webhook/{NOTIFY_BLOCK} → {webhook_url}")
            upsert_automation(client, failure_automation(block_id))
            done.append(f"automation {FAILURE_AUTOMATION!r}")
    return done
