"""End to end, the rest of the seed's behaviour (issue 15): which tasks are logged, the handle time, channel names,
notes precedence, and a Flex configuration change while a task is open.

Through Temporal, the gateway and the two sandboxes, as tests/test_task_workflow_e2e.py.
"""

from __future__ import annotations

import pytest

from flexsf.delivery import signal_notes
from flexsf.models import Notes, Stage
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT


def sf_tasks_for(stack, task_sid: str) -> list[dict]:
    return [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]


def canceled_in_the_queue(stack) -> str:
    """Offered to an agent, and canceled before anyone accepted it (the caller hung up while it rang)."""
    sid = stack.tw.create_task({"name": sf_demo.DEMO_LEAD.name, "from": CONTACT.phone})["sid"]
    stack.tw.reserve(sid, AGENT.sid)
    stack.tw.cancel(sid, reason="caller hung up")
    return sid


# ---- which tasks are logged ----------------------------------------------------------------------------------------


async def test_a_task_nobody_accepted_is_not_logged_by_default(stack) -> None:
    sid = canceled_in_the_queue(stack)
    view = await stack.result(sid)
    assert view.outcome == "Canceled" and view.worker_sid is None
    assert view.stage == Stage.NOT_LOGGED and view.flags.activity_logging is True
    assert "no agent accepted" in view.log_note and "FLEXSF_LOG_UNHANDLED_TASKS" in view.log_note
    assert sf_tasks_for(stack, sid) == [] and stack.sf.counters().get("sobject_upsert:Task", 0) == 0


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_LOG_UNHANDLED_TASKS": "true"}], indirect=True)
async def test_the_setting_logs_tasks_nobody_accepted_as_the_integration_users(stack) -> None:
    sid = canceled_in_the_queue(stack)
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED_UNASSOCIATED and view.log_note is None
    [logged] = sf_tasks_for(stack, sid)
    assert logged["Subject"].startswith("Canceled Inbound voice at") and logged["Id"] == view.activity_id
    assert logged["OwnerId"] == sf_demo.INTEGRATION_USER_ID and not logged.get("CallDurationInSeconds")


async def test_a_task_an_agent_accepted_is_logged_whatever_the_setting(stack) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED and len(sf_tasks_for(stack, sid)) == 1


# ---- handle time ---------------------------------------------------------------------------------------------------


def event_ms(stack, sid: str, event_type: str) -> int:
    return next(e["event_date_ms"] for e in stack.tw.events(sid) if e["event_type"] == event_type)


async def test_the_call_duration_is_the_time_the_agent_handled_it_not_the_task_age(stack) -> None:
    # TaskRouter's time runs 45 s behind and catches up: 10 s in the queue, 30 s on the call, 5 s of wrap-up. Callback
    # timestamps stay in the past, where the gateway's freshness check allows them.
    stack.tw.shift_clock(-45)
    sid = stack.tw.create_task({"from": CONTACT.phone, "direction": "inbound"})["sid"]
    stack.tw.shift_clock(10)
    stack.tw.reserve(sid, AGENT.sid)
    stack.tw.accept(sid)
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    stack.tw.shift_clock(30)
    stack.tw.wrapup(sid)
    stack.tw.shift_clock(5)
    stack.tw.complete(sid)
    view = await stack.result(sid)

    handled = round((event_ms(stack, sid, "task.wrapup") - event_ms(stack, sid, "reservation.accepted")) / 1000)
    assert handled in (30, 31)  # the shift, plus the moments the test itself took
    [logged] = sf_tasks_for(stack, sid)
    assert logged["CallDurationInSeconds"] == handled == view.handle_time_s
    # The raw task age (queue, call and wrap-up) stays on the task's view.
    assert view.task_age_s is not None and view.task_age_s >= 45 > handled


# ---- channels ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "channel_type", "name"),
    [("chat", "sms", "sms"), ("chat", "whatsapp", "whatsapp"), ("sms", None, "sms"), ("email", None, "email")],
)
async def test_a_messaging_task_is_logged_under_its_own_channel_and_not_as_a_call(
    stack, channel, channel_type, name
) -> None:
    # Flex Conversations routes SMS and WhatsApp on the `chat` TaskChannel and says which in `channelType`.
    attributes = {"from": CONTACT.phone, "direction": "inbound"} | (
        {"channelType": channel_type} if channel_type else {}
    )
    sid = stack.tw.lifecycle(attributes, channel=channel, worker_sid=AGENT.sid)["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.channel == name
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    [logged] = sf_tasks_for(stack, sid)
    assert logged["Subject"].startswith(f"Completed Inbound {name} at"), logged["Subject"]
    assert logged["TaskSubtype"] == "Task" and not logged.get("CallType") and not logged.get("CallDurationInSeconds")
    assert logged["WhoId"] == CONTACT.id and view.channel == name


# ---- notes precedence ----------------------------------------------------------------------------------------------


CONVERSATIONS = {"conversations": {"outcome": "Sale", "content": "from the task's attributes"}}


async def task_with_notes_and_conversations(stack) -> tuple[str, dict]:
    sid = stack.tw.lifecycle({"from": CONTACT.phone, **CONVERSATIONS}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    await signal_notes(stack.client, sid, Notes(disposition="Resolved", summary="from the copilot"))
    await stack.wait_for(sid, lambda v: v.notes is not None)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    await stack.result(sid)
    [logged] = sf_tasks_for(stack, sid)
    return sid, logged


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "0"}], indirect=True)
async def test_copilot_notes_win_over_the_tasks_conversations_values_by_default(stack) -> None:
    _, logged = await task_with_notes_and_conversations(stack)
    assert (logged["CallDisposition"], logged["Description"]) == ("Resolved", "from the copilot")


@pytest.mark.parametrize(
    "stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "0", "FLEXSF_NOTES_PRECEDENCE": "task"}], indirect=True
)
async def test_the_tasks_values_win_when_configured(stack) -> None:
    _, logged = await task_with_notes_and_conversations(stack)
    assert (logged["CallDisposition"], logged["Description"]) == ("Sale", "from the task's attributes")


# ---- a configuration change while a task is open --------------------------------------------------------------------


def set_flex_flags(stack, **changes: bool) -> None:
    flags = {**tw_demo.SALESFORCE_FEATURE_FLAGS, **changes}
    stack.tw.flex_configuration.update(
        {
            "account_sid": stack.tw.account_sid,
            "ui_attributes": {"custom_data": {"features": {"salesforce_integration": flags}}},
        }
    )


# A TTL of 0: the worker reads Flex's configuration for every new task, so the change reaches the next task at once.
@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_FLEX_CONFIG_TTL_S": "0"}], indirect=True)
async def test_an_open_task_keeps_its_flags_when_flex_changes_them_and_a_new_task_gets_the_new_ones(stack) -> None:
    open_sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    opened = await stack.wait_for(open_sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert opened.flags.activity_logging is True

    set_flex_flags(stack, activity_logging=False)  # an admin turns logging off mid-call
    new_sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    new = await stack.result(new_sid)
    assert new.flags.activity_logging is False and new.stage == Stage.NOT_LOGGED
    assert sf_tasks_for(stack, new_sid) == []

    stack.tw.wrapup(open_sid)
    stack.tw.complete(open_sid)
    done = await stack.result(open_sid)
    assert done.flags.activity_logging is True and done.stage == Stage.LOGGED
    assert [t["Id"] for t in sf_tasks_for(stack, open_sid)] == [done.activity_id]
