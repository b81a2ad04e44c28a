"""TaskRouter events → `TaskEvent`, from a callback's form parameters or a row of the workspace Events list.

Both spell the same facts differently (`TaskSid` in callbacks, `task_sid` in the Events list), so keys are compared
without case or underscores.

Whatever is read here is carried into Temporal, which must be able to encode it (pydantic's JSON: no lone
surrogates, bounded nesting) and decode it again on every replay. So text is made encodable (a lone surrogate or an
undecodable byte becomes U+FFFD) and the JSON attributes are bounded: at most `MAX_ATTRIBUTES_DEPTH` levels and
`MAX_ATTRIBUTES_BYTES` of JSON each. A callback beyond a bound is refused (`PoisonEvent`: the sender is told why); an
Events-list row is trimmed instead (`trim=True`), since it is read to recover a task and nobody is there to be told.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flexsf.models import TaskEvent

log = logging.getLogger("flexsf.task_events")

# Flex's own attributes (conversations, conference participants) are a few levels deep; 32 leaves room for custom
# ones while staying far below what the models around them can nest (pydantic's JSON stops at about 200 levels).
MAX_ATTRIBUTES_DEPTH = 32
# Half the gateway's 64 KiB body cap, so the bound is reached before the body's is; each event's attributes are kept
# in the workflow's history and state, and a task has a handful of events.
MAX_ATTRIBUTES_BYTES = 32 * 1024
# Beyond year 9999 a timestamp cannot become a datetime (the workflow turns the completion time into one).
_MAX_TIMESTAMP_MS = 253_402_300_799_999
_MAX_TASK_AGE_S = 10**9  # some 30 years: beyond it the number is corrupt, not a call's duration
_SURROGATE = re.compile("[\ud800-\udfff]")
_TASK_SID = re.compile(r"WT[0-9A-Za-z]{1,64}")
_ATTRIBUTES = {"taskattributes": "TaskAttributes", "workerattributes": "WorkerAttributes"}


class MalformedEvent(ValueError):
    """A callback that cannot be turned into an event; the message says why (and never quotes its content)."""


class PoisonEvent(MalformedEvent):
    """Readable, but beyond what is carried into Temporal."""


class AttributesTooLarge(PoisonEvent):
    pass


class AttributesTooDeep(PoisonEvent):
    pass


@dataclass
class Repairs:
    """What reading one event changed, by parameter name only (the values are customer data)."""

    replaced: list[str] = field(default_factory=list)  # unreadable text replaced by U+FFFD
    trimmed: list[str] = field(default_factory=list)  # why attributes were cut to fit the bounds (trim=True only)

    def __bool__(self) -> bool:
        return bool(self.replaced or self.trimmed)


def clean_text(value: str) -> str:
    """`value` with every lone surrogate (also an undecodable byte kept by `surrogateescape`) as U+FFFD.

    A str from `json.loads` holds surrogates only unpaired (a valid pair becomes one code point), and none can be
    encoded as UTF-8: one left in an event fails its workflow start, or its workflow.
    """
    return _SURROGATE.sub("\ufffd", value)


def clean_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The parameters with their names and text values cleaned; and the names of those that needed it."""
    cleaned: dict[str, Any] = {}
    replaced: list[str] = []
    for key, value in params.items():
        name = clean_text(str(key))
        if isinstance(value, str) and _SURROGATE.search(value):
            value = clean_text(value)
            replaced.append(name)
        elif name != key:
            replaced.append(name)
        cleaned[name] = value
    return cleaned, replaced


def _normalized(params: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).replace("_", "").lower(): v for k, v in params.items()}


def _bounded(value: Any, depth: int, name: str, trim: bool, found: Repairs) -> Any:
    """`value` with its text cleaned; containers deeper than the bound refused, or (trim) cut to null."""
    if isinstance(value, str):
        cleaned = clean_text(value)
        if cleaned != value and name not in found.replaced:
            found.replaced.append(name)
        return cleaned
    if not isinstance(value, dict | list):
        return value
    if depth > MAX_ATTRIBUTES_DEPTH:
        reason = f"{name} is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels"
        if not trim:
            raise AttributesTooDeep(reason)
        if reason not in found.trimmed:
            found.trimmed.append(reason)
        return None
    if isinstance(value, list):
        return [_bounded(item, depth + 1, name, trim, found) for item in value]
    return {
        _bounded(str(k), depth, name, trim, found): _bounded(v, depth + 1, name, trim, found) for k, v in value.items()
    }


def _attributes(value: Any, name: str, trim: bool, found: Repairs) -> dict:
    """A JSON-object parameter, within the bounds; refused (MalformedEvent) or, with `trim`, `{}` when it cannot be."""
    try:
        return _json_object(value, name, trim, found)
    except MalformedEvent as exc:
        if not trim:
            raise
        # The event's facts (its type, task, worker) are worth more than attributes we cannot carry.
        found.trimmed.append(str(exc))
        return {}


def _json_object(value: Any, name: str, trim: bool, found: Repairs) -> dict:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_ATTRIBUTES_BYTES:
            raise AttributesTooLarge(f"{name} is larger than {MAX_ATTRIBUTES_BYTES} bytes ({size})")
        try:
            value = json.loads(value)
        except RecursionError:
            raise AttributesTooDeep(f"{name} is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels") from None
        except (TypeError, ValueError):
            raise MalformedEvent(f"{name} is not valid JSON") from None
        if not isinstance(value, dict):
            raise MalformedEvent(f"{name} must be a JSON object")
        return _bounded(value, 1, name, trim, found)
    if not isinstance(value, dict):
        raise MalformedEvent(f"{name} must be a JSON object")
    bounded = _bounded(value, 1, name, trim, found)
    size = len(json.dumps(bounded, ensure_ascii=False, separators=(",", ":"), default=str).encode())
    if size > MAX_ATTRIBUTES_BYTES:
        raise AttributesTooLarge(f"{name} is larger than {MAX_ATTRIBUTES_BYTES} bytes ({size})")
    return bounded


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _in_range(value: int | None, top: int) -> int | None:
    return value if value is not None and 0 <= value <= top else None


def _timestamp_ms(p: Mapping[str, Any]) -> int:
    """`TimestampMs`, else `Timestamp` (epoch seconds; ISO 8601 accepted too: the docs only say "the time").

    0 (unknown) when neither is a time a datetime can hold."""
    if ms := _in_range(_int(p.get("timestampms")), _MAX_TIMESTAMP_MS):
        return ms
    value = p.get("timestamp")
    if value in (None, ""):
        return 0
    try:
        return _in_range(int(float(value) * 1000), _MAX_TIMESTAMP_MS) or 0
    except (TypeError, ValueError, OverflowError):
        pass
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)
    except (ValueError, OverflowError):
        return 0


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


def read_event(
    params: Mapping[str, Any],
    *,
    sid: str | None = None,
    event_type: str | None = None,
    timestamp_ms: int | None = None,
    trim: bool = False,
) -> tuple[TaskEvent, Repairs]:
    """The event, and what had to change to carry it: unreadable text replaced by U+FFFD, and (with `trim`)
    attributes beyond the bounds cut down instead of refused."""
    params, replaced = clean_params(params)
    found = Repairs(replaced=replaced)
    p = _normalized(params)
    task_sid = p.get("tasksid")
    if not task_sid:
        raise MalformedEvent("TaskSid is missing")
    if not isinstance(task_sid, str) or not _TASK_SID.fullmatch(task_sid):
        # It names the workflow: Temporal refuses an id over 1000 characters, and nobody could find a garbled one.
        raise MalformedEvent("TaskSid is not a TaskRouter task sid")
    kind = event_type or p.get("eventtype")
    if not kind:
        raise MalformedEvent("EventType is missing")
    event_sid = sid or p.get("sid") or dedupe_key({**params, "EventType": kind})
    timestamp_ms = _timestamp_ms(p) if timestamp_ms is None else _in_range(timestamp_ms, _MAX_TIMESTAMP_MS) or 0
    attributes = {
        key: _attributes(p.get(key), name, trim, found) if key in p else {} for key, name in _ATTRIBUTES.items()
    }
    event = TaskEvent(
        sid=clean_text(event_sid),
        event_type=clean_text(kind),
        task_sid=task_sid,
        timestamp_ms=timestamp_ms,
        task_attributes=attributes["taskattributes"],
        task_assignment_status=p.get("taskassignmentstatus"),
        task_channel=p.get("taskchanneluniquename"),
        task_age=_in_range(_int(p.get("taskage")), _MAX_TASK_AGE_S),
        reason=p.get("taskcompletedreason") or p.get("taskcanceledreason"),
        worker_sid=p.get("workersid"),
        worker_name=p.get("workername"),
        worker_attributes=attributes["workerattributes"],
        reservation_sid=p.get("reservationsid"),
    )
    return event, found


def task_event(
    params: Mapping[str, Any], *, sid: str | None = None, event_type: str | None = None, timestamp_ms: int | None = None
) -> TaskEvent:
    return read_event(params, sid=sid, event_type=event_type, timestamp_ms=timestamp_ms)[0]


def event_from_events_api(row: Any, task_sid: str) -> TaskEvent | None:
    """One row of `GET /v1/Workspaces/{WS}/Events` (an SDK EventInstance), or None if it is not about this task or
    cannot be read. Never raises: one poisoned row must not cost the task (or a reconciliation) its other events."""
    row_sid, kind = getattr(row, "sid", None), getattr(row, "event_type", None)
    try:
        data = dict(getattr(row, "event_data", None) or {})
        data.setdefault("task_sid", task_sid)
        ms = getattr(row, "event_date_ms", None)
        if ms is None and getattr(row, "event_date", None) is not None:
            ms = int(row.event_date.timestamp() * 1000)
        event, found = read_event(data, sid=row_sid, event_type=kind, timestamp_ms=_int(ms) or 0, trim=True)
    except (MalformedEvent, TypeError, ValueError, AttributeError, OverflowError) as exc:
        reason = str(exc) if isinstance(exc, MalformedEvent) else f"unreadable ({type(exc).__name__})"
        log.warning("Events-list row %s (%s) of task %s skipped: %s", _safe(row_sid), _safe(kind), task_sid, reason)
        return None
    if found:
        log.warning(
            "Events-list row %s (%s) of task %s read with repairs: %s",
            event.sid,
            event.event_type,
            event.task_sid,
            "; ".join([*found.trimmed, *(f"{name}: unreadable text replaced by U+FFFD" for name in found.replaced)]),
        )
    return event


def _safe(value: Any) -> str:
    return clean_text(str(value))[:64]
