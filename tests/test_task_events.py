"""Pure logic: TaskRouter callbacks and Events-list rows become the same typed event."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

from flexsf import task_events
from flexsf.flex_config import apply_overrides, flags_from_ui_attributes
from flexsf.models import TaskEvent
from flexsf.settings import FeatureOverrides
from flexsf.task_events import MalformedEvent, dedupe_key, event_from_events_api, task_event

CALLBACK = {
    "EventType": "reservation.accepted",
    "Sid": "EV1",
    "TaskSid": "WT1",
    "TimestampMs": "1764079973000",
    "TaskAttributes": '{"name": "Ada", "direction": "inbound"}',
    "TaskChannelUniqueName": "voice",
    "TaskAge": "12",
    "WorkerSid": "WK1",
    "WorkerName": "ada",
    "WorkerAttributes": '{"email": "ada@example.com"}',
    "ReservationSid": "WR1",
}


def test_callback_form_parameters() -> None:
    e = task_event(CALLBACK)
    assert (e.sid, e.event_type, e.task_sid, e.timestamp_ms, e.task_age) == (
        "EV1",
        "reservation.accepted",
        "WT1",
        1764079973000,
        12,
    )
    assert e.task_attributes["name"] == "Ada" and e.worker_attributes["email"] == "ada@example.com"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"TaskSid": ""}, "TaskSid is missing"),
        ({"TaskAttributes": "{not json"}, "TaskAttributes is not valid JSON"),
        ({"TaskAttributes": "[1]"}, "TaskAttributes must be a JSON object"),
        ({"EventType": ""}, "EventType is missing"),
    ],
)
def test_malformed_callbacks_say_why(change: dict, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        task_event({**CALLBACK, **change})


# What Twilio documents a callback to carry: no Sid, no TimestampMs (twilio.com/docs/taskrouter/api/event/reference).
DOCUMENTED = {k: v for k, v in CALLBACK.items() if k not in ("Sid", "TimestampMs")} | {
    "ResourceType": "Reservation",
    "ResourceSid": "WR1",
    "Timestamp": "1764079973",
}


def test_a_callback_without_sid_gets_a_key_every_delivery_of_it_shares() -> None:
    first, again = task_event(DOCUMENTED), task_event(dict(reversed(list(DOCUMENTED.items()))))
    assert first.sid == again.sid and first.sid.startswith("reservation.accepted@WR1@1764079973")
    assert first.timestamp_ms == 1764079973000
    with_ms = {**DOCUMENTED, "TimestampMs": "1764079973123"}
    assert task_event(with_ms).sid == "reservation.accepted@WR1@1764079973123"
    assert task_event(with_ms).timestamp_ms == 1764079973123


@pytest.mark.parametrize(
    "change",
    [
        {"EventType": "reservation.wrapup"},
        {"ResourceSid": "WR2", "ReservationSid": "WR2"},
        {"Timestamp": "1764079974"},
        # Two attribute writes in the same second are two events, though type, resource and second agree.
        {"TaskAttributes": '{"name": "Ada", "direction": "inbound", "sfdcObjectId": "003"}'},
    ],
)
def test_different_events_without_sid_get_different_keys(change: dict) -> None:
    assert task_event({**DOCUMENTED, **change}).sid != task_event(DOCUMENTED).sid


def test_the_key_falls_back_to_the_reservation_or_task_sid() -> None:
    bare = {k: v for k, v in DOCUMENTED.items() if k not in ("ResourceSid", "ResourceType")}
    assert dedupe_key(bare).startswith("reservation.accepted@WR1@")
    assert dedupe_key({**bare, "EventType": "task.updated"}).startswith("task.updated@WT1@")


def test_an_iso_timestamp_is_read_too() -> None:
    assert task_event({**DOCUMENTED, "Timestamp": "2025-11-25T14:12:53Z"}).timestamp_ms == 1764079973000


def test_a_callback_with_sid_keeps_it() -> None:
    assert task_event({**DOCUMENTED, "Sid": "EV9"}).sid == "EV9"


def test_events_list_rows_use_snake_case() -> None:
    row = SimpleNamespace(
        sid="EV2",
        event_type="task.completed",
        event_date_ms=5,
        event_data={"task_sid": "WT1", "task_completed_reason": "done", "task_attributes": "{}"},
    )
    e = event_from_events_api(row, "WT1")
    assert (e.sid, e.event_type, e.reason, e.timestamp_ms) == ("EV2", "task.completed", "done", 5)


# ---- poison: what Temporal could not encode (or decode again on replay) ---------------------------------------------


def nested(levels: int, leaf: object = "deep") -> dict:
    """A JSON object `levels` deep: {"a": {"a": … leaf}}."""
    value: object = leaf
    for _ in range(levels - 1):
        value = {"a": value}
    return {"a": value}


def round_trip(event: TaskEvent) -> TaskEvent:
    """What the gateway's start signal and the workflow's replay do with the event: encode it, decode it."""
    converter = pydantic_data_converter.payload_converter
    return converter.from_payloads(converter.to_payloads([event]), [TaskEvent])[0]


def test_lone_surrogates_anywhere_become_replacement_characters_and_the_event_is_kept() -> None:
    attributes = '{"name": "Ada \\ud800", "\\udc00key": ["x\\udfff"], "pair": "\\ud83d\\ude00"}'
    # A parameter that was not UTF-8 on the wire reaches us as surrogateescape code points.
    worker_name = b"Ada \xed\xa0\x80".decode("utf-8", "surrogateescape")
    event = task_event({**CALLBACK, "TaskAttributes": attributes, "WorkerName": worker_name})
    assert event.task_attributes == {"name": "Ada \ufffd", "\ufffdkey": ["x\ufffd"], "pair": "\U0001f600"}
    assert event.worker_name == "Ada \ufffd\ufffd\ufffd"
    assert round_trip(event) == event


def test_attributes_nested_beyond_the_bound_are_refused_with_the_reason() -> None:
    limit = task_events.MAX_ATTRIBUTES_DEPTH
    assert task_event({**CALLBACK, "TaskAttributes": json.dumps(nested(limit))}).task_attributes == nested(limit)
    for name in ("TaskAttributes", "WorkerAttributes"):
        for levels in (limit + 1, 300):
            with pytest.raises(MalformedEvent, match=f"^{name} is nested deeper than {limit} levels$"):
                task_event({**CALLBACK, name: json.dumps(nested(levels, "+15551230000"))})
    # Deeper than Python's own parser can go: still a reason, never a RecursionError.
    with pytest.raises(MalformedEvent, match="nested deeper"):
        task_event({**CALLBACK, "TaskAttributes": "[" * 10_000 + "]" * 10_000})


def test_attributes_over_the_size_bound_are_refused_with_the_reason() -> None:
    limit = task_events.MAX_ATTRIBUTES_BYTES
    fits = json.dumps({"blob": "x" * (limit - 12)})
    assert len(fits) == limit and task_event({**CALLBACK, "TaskAttributes": fits}).task_attributes["blob"]
    too_big = json.dumps({"blob": "é" * limit})  # the bound is in bytes of UTF-8, not characters
    with pytest.raises(MalformedEvent, match=f"^TaskAttributes is larger than {limit} bytes") as refused:
        task_event({**CALLBACK, "TaskAttributes": too_big})
    assert "é" not in str(refused.value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"TaskSid": "WT" + "0" * 1200}, "TaskSid is not a TaskRouter task sid"),  # Temporal's ids stop at 1000
        ({"TaskSid": "WT\ud800"}, "TaskSid is not a TaskRouter task sid"),
    ],
)
def test_a_task_sid_no_workflow_could_be_named_after_is_refused(change: dict, reason: str) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        task_event({**CALLBACK, **change})


def test_times_and_ages_no_datetime_can_hold_are_unknown() -> None:
    absurd = {**DOCUMENTED, "TimestampMs": "9" * 30, "Timestamp": "1e999", "TaskAge": "9" * 30}
    event = task_event(absurd)
    assert (event.timestamp_ms, event.task_age) == (0, None)
    assert task_event({**DOCUMENTED, "Timestamp": "-62135596800"}).timestamp_ms == 0
    assert round_trip(event) == event


def row(event_data: object, sid: str = "EV3", event_type: str = "task.completed") -> SimpleNamespace:
    return SimpleNamespace(sid=sid, event_type=event_type, event_date_ms=7, event_data=event_data)


def test_poisoned_events_list_rows_are_trimmed_so_the_event_is_kept() -> None:
    deep = nested(300, "+15551230000")
    data = {"task_sid": "WT1", "task_attributes": json.dumps({"from": "+15551230000", "deep": deep})}
    event = event_from_events_api(row(data), "WT1")
    # The bound cuts the subtree, the facts and the shallow attributes (the caller's number) stay.
    assert event.task_attributes["from"] == "+15551230000" and event.event_type == "task.completed"
    cut = event.task_attributes["deep"]
    for _ in range(task_events.MAX_ATTRIBUTES_DEPTH - 2):
        cut = cut["a"]
    assert cut == {"a": None}
    assert round_trip(event) == event

    for attributes in ("x" * (task_events.MAX_ATTRIBUTES_BYTES + 1), "{not json", "[1]", "[" * 20_000):
        trimmed = event_from_events_api(row({"task_sid": "WT1", "worker_attributes": attributes}), "WT1")
        assert trimmed.worker_attributes == {} and trimmed.event_type == "task.completed"

    surrogates = event_from_events_api(row({"task_attributes": '{"n": "\\ud800"}', "worker_name": "\udfff"}), "WT1")
    assert surrogates.task_attributes == {"n": "\ufffd"} and surrogates.worker_name == "\ufffd"
    assert round_trip(surrogates) == surrogates
    # Already parsed (an SDK that decodes nested JSON): the same bounds.
    parsed = event_from_events_api(row({"task_attributes": {"n": "\ud800", "deep": deep}}), "WT1")
    assert parsed.task_attributes["n"] == "\ufffd" and round_trip(parsed) == parsed


@pytest.mark.parametrize(
    "unreadable",
    [
        row(["not", "a", "mapping"]),
        row({"task_sid": "WT" + "0" * 1200}),
        row({}, event_type=""),
        SimpleNamespace(sid="EV4", event_type="task.completed", event_data={}, event_date="yesterday"),
    ],
)
def test_an_unreadable_events_list_row_is_skipped_never_raised(unreadable: SimpleNamespace) -> None:
    assert event_from_events_api(unreadable, "WT1") is None


def test_feature_flags_from_flex_ui_attributes_with_overrides() -> None:
    ui = {"custom_data": {"features": {"salesforce_integration": {"enabled": True, "screen_pop": True, "x": 1}}}}
    flags = flags_from_ui_attributes(ui)
    assert flags.enabled and flags.screen_pop and not flags.activity_logging
    assert not flags_from_ui_attributes({}).enabled
    merged = apply_overrides(flags, FeatureOverrides(screen_pop=False, activity_logging=True))
    assert (merged.screen_pop, merged.activity_logging, merged.enabled) == (False, True, True)
