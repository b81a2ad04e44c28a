"""Pure logic: what a task's TaskRouter events say about its channel and how long the agent handled it."""

from __future__ import annotations

import pytest

from flexsf.models import TaskEvent
from workflows.task_facts import TaskFacts, channel_name

SID = "WT" + "0" * 32


@pytest.mark.parametrize(
    ("task_channel", "channel_type", "expected"),
    [
        ("voice", None, "voice"),
        ("voice", "sms", "voice"),  # a call is a call, whatever an attribute says
        ("sms", None, "sms"),
        ("email", None, "email"),
        # Flex Conversations routes SMS, WhatsApp and webchat alike on the `chat` TaskChannel; channelType tells.
        ("chat", "sms", "sms"),
        ("chat", "whatsapp", "whatsapp"),
        ("chat", "web", "chat"),
        ("chat", "messenger", "messenger"),
        ("chat", None, "chat"),
        ("default", "email", "email"),
        ("default", None, "default"),
        ("video", None, "video"),  # another channel keeps its raw name, never becomes voice
        ("Custom_Channel", None, "custom_channel"),
        (None, "WhatsApp", "whatsapp"),
        (None, None, "default"),
        ("chat", 42, "chat"),  # attributes are anyone's to write: a non-string is no channel
        ("chat", "  ", "chat"),
    ],
)
def test_channel_names(task_channel, channel_type, expected) -> None:
    assert channel_name(task_channel, channel_type) == expected


def test_a_raw_name_is_cut_to_a_short_printable_keyword() -> None:
    assert channel_name(None, "x\u0000" + "y" * 500) == "x" + "y" * 63


def test_the_legacy_names_stay_for_runs_before_the_patch() -> None:
    facts = TaskFacts()
    facts.apply(event("e1", "task.created", 1_000, channel="chat", attributes={"channelType": "sms"}))
    assert (facts.legacy_channel_name(), facts.channel_name()) == ("chat", "sms")
    assert TaskFacts().legacy_channel_name() == "voice" and TaskFacts().channel_name() == "default"


def event(sid: str, kind: str, ms: int, **kw) -> TaskEvent:
    attributes = kw.pop("attributes", {})
    return TaskEvent(
        sid=sid,
        event_type=kind,
        task_sid=SID,
        timestamp_ms=ms,
        task_channel=kw.pop("channel", "voice"),
        task_attributes=attributes,
        **kw,
    )


def test_handle_time_runs_from_acceptance_to_wrap_up_not_the_task_age() -> None:
    facts = TaskFacts()
    for e in [
        event("e1", "task.created", 1_000),
        event("e2", "reservation.accepted", 21_000, worker_sid="WK1"),
        event("e3", "task.wrapup", 51_400),
        event("e4", "task.completed", 71_000, task_age=70),
    ]:
        facts.apply(e)
    assert facts.handle_time_s() == 30  # 30.4 s handled; queue (20 s) and wrap-up (19.6 s) are not
    assert facts.task_age_s() == 70


def test_handle_time_without_a_wrap_up_runs_to_the_finish_whatever_order_events_arrive_in() -> None:
    facts = TaskFacts()
    facts.apply(event("e4", "task.completed", 71_000, task_age=70))
    facts.apply(event("e2", "reservation.accepted", 21_000, worker_sid="WK1"))
    assert facts.handle_time_s() == 50


def test_no_handle_time_without_an_acceptance_or_a_timestamp() -> None:
    canceled = TaskFacts()
    canceled.apply(event("e1", "task.canceled", 9_000, task_age=9))
    assert canceled.handle_time_s() is None and canceled.task_age_s() == 9
    untimed = TaskFacts()
    untimed.apply(event("e2", "reservation.accepted", 0, worker_sid="WK1"))
    untimed.apply(event("e3", "task.completed", 9_000))
    assert untimed.handle_time_s() is None


def test_the_wrap_up_survives_continue_as_new() -> None:
    facts = TaskFacts()
    facts.apply(event("e2", "reservation.accepted", 21_000, worker_sid="WK1"))
    facts.apply(event("e3", "task.wrapup", 31_000))
    carried = TaskFacts.carried(facts.carry())
    carried.apply(event("e4", "task.completed", 99_000))
    assert carried.handle_time_s() == 10
