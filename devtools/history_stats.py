"""Figures read from one task workflow's history (`WorkflowHistory`, its JSON text, or that JSON parsed).

`pop_workflow_tasks`: how many workflow tasks the screen pop costs, from TaskRouter's `reservation.accepted` signal to
the workflow task that handled the attribute write's completion. Each is a round trip worker → Temporal → worker, and
under load a wait in the task queue: the pop's latency is mostly these (`flexsf bench --json` reports it).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from temporalio.client import WorkflowHistory

from flexsf.vocabulary import RESERVATION_ACCEPTED, TASK_EVENT_SIGNAL

WRITE_ACTIVITY = "save_record_on_task"
_WFT_COMPLETED = "EVENT_TYPE_WORKFLOW_TASK_COMPLETED"


def events_of(history: WorkflowHistory | str | dict) -> list[dict[str, Any]]:
    if isinstance(history, WorkflowHistory):
        history = history.to_json()
    if isinstance(history, str):
        history = json.loads(history)
    return history["events"]


def pop_workflow_tasks(history: WorkflowHistory | str | dict) -> int | None:
    """Workflow tasks from the acceptance signal to the one that sees the record written on the task: those completed
    up to the write's scheduling, and the one its completion wakes. Readable as soon as the write is scheduled. None
    when the history has no acceptance or no write (a task nobody accepted, or one whose pop found nothing to write)."""
    events = events_of(history)
    accepted = next((i for i, e in enumerate(events) if _accepted(e)), None)
    if accepted is None:
        return None
    tasks = 0
    for event in events[accepted + 1 :]:
        if event["eventType"] == _WFT_COMPLETED:
            tasks += 1
        elif _activity_type(event) == WRITE_ACTIVITY:
            return tasks + 1
    return None


def event_counts(history: WorkflowHistory | str | dict) -> dict[str, int]:
    """Events by type (without the `EVENT_TYPE_` prefix): what a change costs in history."""
    counts: dict[str, int] = {}
    for event in events_of(history):
        kind = event["eventType"].removeprefix("EVENT_TYPE_")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _accepted(event: dict) -> bool:
    attributes = event.get("workflowExecutionSignaledEventAttributes")
    if not attributes or attributes.get("signalName") != TASK_EVENT_SIGNAL:
        return False
    payloads = (attributes.get("input") or {}).get("payloads") or []
    return bool(payloads) and _decoded(payloads[0]).get("event_type") == RESERVATION_ACCEPTED


def _activity_type(event: dict) -> str | None:
    return event.get("activityTaskScheduledEventAttributes", {}).get("activityType", {}).get("name")


def _decoded(payload: dict) -> dict:
    try:
        value = json.loads(base64.b64decode(payload.get("data", "")))
    except ValueError:
        return {}  # an encrypted or binary payload: not one this reads
    return value if isinstance(value, dict) else {}
