"""TaskRouter events → `TaskEvent`, from a callback's form parameters or a row of the workspace Events list.

Both spell the same facts differently (`TaskSid` in callbacks, `task_sid` in the Events list), so keys are compared
without case or underscores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flexsf.models import TaskEvent


class MalformedEvent(ValueError):
    """A callback that cannot be turned into an event; the message says why."""


def _normalized(params: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).replace("_", "").lower(): v for k, v in params.items()}


def _json_object(value: Any, name: str) -> dict:
    if value in (None, ""):
        return {}
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        raise MalformedEvent(f"{name} is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise MalformedEvent(f"{name} must be a JSON object")
    return parsed


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def task_event(
    params: Mapping[str, Any], *, sid: str | None = None, event_type: str | None = None, timestamp_ms: int | None = None
) -> TaskEvent:
    p = _normalized(params)
    task_sid = p.get("tasksid")
    if not task_sid:
        raise MalformedEvent("TaskSid is missing")
    kind = event_type or p.get("eventtype")
    if not kind:
        raise MalformedEvent("EventType is missing")
    event_sid = sid or p.get("sid")
    if not event_sid:
        raise MalformedEvent("Sid is missing")
    if timestamp_ms is None:
        timestamp_ms = _int(p.get("timestampms")) or (_int(p.get("timestamp")) or 0) * 1000
    return TaskEvent(
        sid=event_sid,
        event_type=kind,
        task_sid=task_sid,
        timestamp_ms=timestamp_ms,
        task_attributes=_json_object(p.get("taskattributes"), "TaskAttributes"),
        task_assignment_status=p.get("taskassignmentstatus"),
        task_channel=p.get("taskchanneluniquename"),
        task_age=_int(p.get("taskage")),
        reason=p.get("taskcompletedreason") or p.get("taskcanceledreason"),
        worker_sid=p.get("workersid"),
        worker_name=p.get("workername"),
        worker_attributes=_json_object(p.get("workerattributes"), "WorkerAttributes"),
        reservation_sid=p.get("reservationsid"),
    )


def event_from_events_api(row: Any, task_sid: str) -> TaskEvent | None:
    """One row of `GET /v1/Workspaces/{WS}/Events` (an SDK EventInstance), or None if it is not about this task."""
    data = dict(getattr(row, "event_data", None) or {})
    data.setdefault("task_sid", task_sid)
    ms = getattr(row, "event_date_ms", None)
    if ms is None and getattr(row, "event_date", None) is not None:
        ms = int(row.event_date.timestamp() * 1000)
    try:
        return task_event(data, sid=row.sid, event_type=row.event_type, timestamp_ms=_int(ms) or 0)
    except MalformedEvent:
        return None
