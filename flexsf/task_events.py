"""TaskRouter events → `TaskEvent`, from a callback's form parameters or a row of the workspace Events list.

Both spell the same facts differently (`TaskSid` in callbacks, `task_sid` in the Events list), so keys are compared
without case or underscores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
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


def _timestamp_ms(p: Mapping[str, Any]) -> int:
    """`TimestampMs`, else `Timestamp` (epoch seconds; ISO 8601 accepted too: the docs only say "the time")."""
    if ms := _int(p.get("timestampms")):
        return ms
    value = p.get("timestamp")
    if value in (None, ""):
        return 0
    try:
        return int(float(value) * 1000)
    except (TypeError, ValueError):
        pass
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return 0
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def dedupe_key(params: Mapping[str, Any]) -> str:
    """What identifies a callback that has no `Sid`: the same for every delivery of one event, different for two.

    Twilio's documented callback parameters have no `Sid` (twilio.com/docs/taskrouter/api/event/reference), and the
    workflow drops an event whose sid it has seen. An event is its type, its resource and its time; when the time is
    only `Timestamp`'s whole seconds, two events of one type on one resource in one second (two attribute writes)
    differ only in content, so a digest of every parameter joins the key.
    """
    p = _normalized(params)
    kind = p.get("eventtype") or ""
    resource = p.get("resourcesid") or (p.get("reservationsid") if kind.startswith("reservation.") else None)
    resource = resource or p.get("tasksid") or ""
    if ms := _int(p.get("timestampms")):
        return f"{kind}@{resource}@{ms}"
    digest = hashlib.sha256(json.dumps(sorted(p.items()), default=str).encode()).hexdigest()[:16]
    return f"{kind}@{resource}@{p.get('timestamp') or ''}#{digest}"


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
    event_sid = sid or p.get("sid") or dedupe_key({**params, "EventType": kind})
    if timestamp_ms is None:
        timestamp_ms = _timestamp_ms(p)
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
