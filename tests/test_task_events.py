"""Pure logic: TaskRouter callbacks and Events-list rows become the same typed event."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from flexsf.flex_config import apply_overrides, flags_from_ui_attributes
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


def test_feature_flags_from_flex_ui_attributes_with_overrides() -> None:
    ui = {"custom_data": {"features": {"salesforce_integration": {"enabled": True, "screen_pop": True, "x": 1}}}}
    flags = flags_from_ui_attributes(ui)
    assert flags.enabled and flags.screen_pop and not flags.activity_logging
    assert not flags_from_ui_attributes({}).enabled
    merged = apply_overrides(flags, FeatureOverrides(screen_pop=False, activity_logging=True))
    assert (merged.screen_pop, merged.activity_logging, merged.enabled) == (False, True, True)
