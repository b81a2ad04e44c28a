"""End to end: sandbox lifecycles → signed callbacks → signal-with-start → workflow → Salesforce and Twilio.

Nothing here is mocked: a real Temporal dev server, a real worker, the real simple-salesforce and twilio clients
talking HTTP(S) to the sandboxes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest
from temporalio.client import WorkflowUpdateFailedError

from flexsf.delivery import signal_notes
from flexsf.models import Notes, RecordSelection, Stage, TaskView
from flexsf.vocabulary import HANDLED_EVENTS
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from workflows.task_workflow import FlexTaskWorkflow

AGENT = tw_demo.DEMO_WORKERS[0]


def sf_tasks_for(stack, task_sid: str) -> list[dict]:
    return [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]


async def test_single_match_writes_attributes_and_logs_one_task_with_who_id(stack) -> None:
    task = stack.tw.lifecycle(
        {"from": sf_demo.UNIQUE_PHONE_CONTACT.phone, "direction": "inbound", "keep": "me"}, worker_sid=AGENT.sid
    )
    sid = task["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == sf_demo.UNIQUE_PHONE_CONTACT.id

    attributes = json.loads(stack.tw.task(sid)["attributes"])
    assert attributes["sfdcObjectId"] == sf_demo.UNIQUE_PHONE_CONTACT.id
    assert attributes["sfdcObjectType"] == "Contact"
    assert attributes["keep"] == "me" and attributes["from"] == sf_demo.UNIQUE_PHONE_CONTACT.phone

    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED
    logged = sf_tasks_for(stack, sid)
    assert len(logged) == 1
    assert logged[0]["WhoId"] == sf_demo.UNIQUE_PHONE_CONTACT.id and not logged[0].get("WhatId")
    assert logged[0]["Id"] == view.activity_id
    assert logged[0]["CallType"] == "Inbound" and logged[0]["TaskSubtype"] == "Call"
    assert logged[0]["OwnerId"] == sf_demo.AGENT_USERS[0].id  # the worker's email maps to their Salesforce user
    # API economy: one login, one search, one owner lookup (cached per worker process), one upsert;
    # on Twilio one fetch and one conditional update of the attributes.
    sf_calls = stack.sf.counters()
    assert (sf_calls["logins"], sf_calls["search"], sf_calls["query"], sf_calls["sobject_upsert:Task"]) == (1, 1, 1, 1)
    tw_calls = stack.tw.counters()
    assert (tw_calls["task_fetch"], tw_calls["task_update"]) == (1, 1)

    # Every callback went through the gateway's webhook route, signed, and was accepted the first time.
    await asyncio.to_thread(stack.tw.wait_callbacks_idle, 30)
    deliveries = stack.tw.deliveries(task_sid=sid)
    assert [(d.attempt, d.status) for d in deliveries] == [(1, 204)] * len(deliveries)
    handled = Counter(d.event_type for d in deliveries if d.event_type in HANDLED_EVENTS)
    assert set(handled) >= {"task.created", "reservation.accepted", "task.completed"}
    counted = await stack.gateway.taskrouter_events()
    assert {t: n for (t, outcome), n in counted.items() if outcome == "signalled"} == handled


def sf_tasks_by_call_object(stack, key: str) -> list[dict]:
    return [t for t in stack.sf.records("Task") if t.get("CallObject") == key]


async def finish(stack, sid: str, *, cancel: bool = False) -> TaskView:
    if cancel:
        stack.tw.cancel(sid, reason="caller hung up")
    else:
        stack.tw.wrapup(sid)
        stack.tw.complete(sid)
    return await stack.result(sid)


async def test_account_match_relates_through_what_id(stack) -> None:
    sid = stack.tw.lifecycle({"from": sf_demo.UNIQUE_PHONE_ACCOUNT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert json.loads(stack.tw.task(sid)["attributes"])["sfdcObjectType"] == "Account"
    view = await finish(stack, sid)
    [logged] = sf_tasks_for(stack, sid)
    assert logged["WhatId"] == sf_demo.UNIQUE_PHONE_ACCOUNT.id and not logged.get("WhoId")
    assert view.record.id == sf_demo.UNIQUE_PHONE_ACCOUNT.id


async def test_person_account_is_one_candidate_and_relates_through_its_contact(stack) -> None:
    sid = stack.tw.lifecycle({"from": sf_demo.PERSON_ACCOUNT.phone}, worker_sid=AGENT.sid)["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == sf_demo.PERSON_ACCOUNT.id and not view.pop.candidates
    await finish(stack, sid)
    [logged] = sf_tasks_for(stack, sid)
    assert logged["WhoId"] == sf_demo.PERSON_ACCOUNT_CONTACT_ID and not logged.get("WhatId")


async def test_sfdc_object_id_from_the_ivr_is_popped_without_a_search(stack) -> None:
    sid = stack.tw.lifecycle(
        {"from": sf_demo.SHARED_PHONE, "sfdcObjectId": sf_demo.DEMO_CASE.id}, worker_sid=AGENT.sid
    )["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == sf_demo.DEMO_CASE.id and view.pop.record.type == "Case"
    await finish(stack, sid)
    [logged] = sf_tasks_for(stack, sid)
    assert logged["WhatId"] == sf_demo.DEMO_CASE.id
    counters = stack.sf.counters()
    assert counters.get("search", 0) == 0
    assert stack.tw.counters().get("task_update", 0) == 0  # the attributes already held the record


async def test_an_sfdc_object_id_that_is_not_a_salesforce_id_is_ignored_and_the_caller_searched(stack) -> None:
    contact = sf_demo.UNIQUE_PHONE_CONTACT
    sid = stack.tw.lifecycle({"from": contact.phone, "sfdcObjectId": "001' OR Id != '"}, worker_sid=AGENT.sid)["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == contact.id
    view = await finish(stack, sid)
    [logged] = sf_tasks_for(stack, sid)
    assert logged["WhoId"] == contact.id and stack.sf.counters().get("search") == 1


async def test_outbound_click_to_dial_is_not_popped_and_relates_to_the_dialed_record(stack) -> None:
    task = stack.tw.start_outbound_call(
        AGENT.sid,
        sf_demo.DEMO_LEAD.phone,
        task_attributes={"sfdcObjectId": sf_demo.DEMO_LEAD.id, "sfdcObjectType": "Lead"},
    )
    sid = task["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.direction == "Outbound" and view.pop.record is None and not view.pop.candidates
    view = await finish(stack, sid)
    [logged] = sf_tasks_for(stack, sid)
    assert logged["WhoId"] == sf_demo.DEMO_LEAD.id
    assert logged["CallType"] == "Outbound" and logged["Subject"].startswith("Completed Outbound voice at")
    assert stack.sf.counters().get("search", 0) == 0


async def test_several_matches_wait_for_the_agents_valid_choice(stack) -> None:
    sid = stack.tw.lifecycle({"from": sf_demo.SHARED_PHONE}, worker_sid=AGENT.sid)["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.AWAITING_SELECTION)
    assert {c.id for c in view.pop.candidates} == {r.id for r in sf_demo.SHARED_PHONE_RECORDS}
    assert {c.label for c in view.pop.candidates} >= {"Daniel Kim - Contact", "Sam Kim - Lead"}
    assert "sfdcObjectId" not in json.loads(stack.tw.task(sid)["attributes"])

    handle = stack.handle(sid)
    other = tw_demo.DEMO_WORKERS[1]
    with pytest.raises(WorkflowUpdateFailedError) as wrong_worker:
        await handle.execute_update(
            FlexTaskWorkflow.select_record,
            RecordSelection(worker_sid=other.sid, record_id=sf_demo.SHARED_PHONE_RECORDS[0].id),
        )
    assert "only the worker who accepted" in str(wrong_worker.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as not_candidate:
        await handle.execute_update(
            FlexTaskWorkflow.select_record, RecordSelection(worker_sid=AGENT.sid, record_id=sf_demo.DEMO_LEAD.id)
        )
    assert "not one of the candidate records" in str(not_candidate.value.cause)

    chosen = sf_demo.SHARED_PHONE_RECORDS[2]  # the Lead
    record = await handle.execute_update(
        FlexTaskWorkflow.select_record, RecordSelection(worker_sid=AGENT.sid, record_id=chosen.id[:15])
    )
    assert record.id == chosen.id
    attributes = json.loads(stack.tw.task(sid)["attributes"])
    assert (attributes["sfdcObjectId"], attributes["sfdcObjectType"]) == (chosen.id, "Lead")

    view = await finish(stack, sid)
    assert view.stage == Stage.LOGGED
    [logged] = sf_tasks_for(stack, sid)
    assert logged["WhoId"] == chosen.id
    history = [e async for e in handle.fetch_history_events()]
    updates = [e for e in history if e.HasField("workflow_execution_update_accepted_event_attributes")]
    assert len(updates) == 1  # rejected selections never entered history


@pytest.mark.parametrize(
    "stack_overrides", [{"FLEXSF_SELECTION_TIMEOUT_S": "0.5", "FLEXSF_NOTES_GRACE_S": "60"}], indirect=True
)
async def test_no_selection_before_timeout_logs_unassociated_and_a_late_choice_amends(stack) -> None:
    sid = stack.tw.lifecycle({"from": sf_demo.SHARED_PHONE}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.AWAITING_SELECTION)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.LOGGED_UNASSOCIATED)
    [logged] = sf_tasks_for(stack, sid)
    assert not logged.get("WhoId") and not logged.get("WhatId")

    chosen = sf_demo.SHARED_PHONE_RECORDS[0]
    await stack.handle(sid).execute_update(
        FlexTaskWorkflow.select_record, RecordSelection(worker_sid=AGENT.sid, record_id=chosen.id)
    )
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.LOGGED)
    [amended] = sf_tasks_for(stack, sid)
    assert amended["Id"] == logged["Id"] == view.activity_id and amended["WhoId"] == chosen.id


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "60"}], indirect=True)
async def test_copilot_notes_before_and_after_completion_land_on_the_same_task(stack) -> None:
    sid = stack.tw.lifecycle({"from": sf_demo.UNIQUE_PHONE_CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    await signal_notes(stack.client, sid, Notes(disposition="Callback", summary="Wants a callback"))
    await stack.wait_for(sid, lambda v: v.notes is not None)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.LOGGED)
    [logged] = sf_tasks_for(stack, sid)
    assert (logged["CallDisposition"], logged["Description"]) == ("Callback", "Wants a callback")

    await signal_notes(
        stack.client,
        sid,
        Notes(disposition="Resolved", summary="Fixed on the call", topics=["billing"], sentiment="positive"),
    )
    await stack.wait_for(sid, lambda v: v.notes.disposition == "Resolved" and v.stage == Stage.LOGGED)
    [amended] = await wait_until(lambda: [t for t in sf_tasks_for(stack, sid) if t["CallDisposition"] == "Resolved"])
    assert amended["Id"] == view.activity_id and amended["Description"] == "Fixed on the call"
    assert len(sf_tasks_for(stack, sid)) == 1


# Nobody accepted this task: it is logged only with FLEXSF_LOG_UNHANDLED_TASKS (tests/test_seed_rest.py: the default).
@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_LOG_UNHANDLED_TASKS": "true"}], indirect=True)
async def test_cancellation_is_logged_when_activity_logging_is_on(stack) -> None:
    sid = stack.tw.create_task({"name": sf_demo.DEMO_LEAD.name}, channel="chat")["sid"]
    stack.tw.reserve(sid, AGENT.sid)
    view = await finish(stack, sid, cancel=True)
    assert view.outcome == "Canceled" and view.stage == Stage.LOGGED_UNASSOCIATED
    [logged] = sf_tasks_for(stack, sid)
    assert logged["Subject"].startswith("Canceled Inbound chat at") and logged["TaskSubtype"] == "Task"


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_FEATURES__ACTIVITY_LOGGING": "false"}], indirect=True)
async def test_cancellation_is_not_logged_when_activity_logging_is_off(stack) -> None:
    sid = stack.tw.create_task({"name": sf_demo.DEMO_LEAD.name})["sid"]
    stack.tw.reserve(sid, AGENT.sid)
    view = await finish(stack, sid, cancel=True)
    assert view.stage == Stage.NOT_LOGGED and view.flags.activity_logging is False
    assert sf_tasks_for(stack, sid) == []


async def test_enabled_false_in_flex_config_does_nothing(stack) -> None:
    stack.tw.flex_configuration.update(
        {
            "account_sid": stack.tw.account_sid,
            "ui_attributes": {
                "custom_data": {
                    "features": {"salesforce_integration": {**tw_demo.SALESFORCE_FEATURE_FLAGS, "enabled": False}}
                }
            },
        }
    )
    sid = stack.tw.lifecycle({"from": sf_demo.UNIQUE_PHONE_CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    view = await stack.result(sid)
    assert view.stage == Stage.DISABLED
    assert sf_tasks_for(stack, sid) == [] and stack.sf.counters().get("search", 0) == 0
    assert "sfdcObjectId" not in json.loads(stack.tw.task(sid)["attributes"])


async def wait_until(fetch, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = fetch()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_a_straggler_after_the_log_starts_no_second_run_and_no_second_task(stack) -> None:
    """A completed task's workflow is never started again (only a failed or terminated one is), so an event delivered
    after the log — a late duplicate, a replay by a proxy — cannot write a second Salesforce Task."""
    task = stack.tw.lifecycle({"from": sf_demo.UNIQUE_PHONE_CONTACT.phone}, worker_sid=AGENT.sid)
    sid = task["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    await stack.result(sid)
    first_run = (await stack.handle(sid).describe()).run_id

    late = {
        "AccountSid": stack.tw.info["account_sid"],
        "WorkspaceSid": stack.tw.info["workspace_sid"],
        "Sid": "EV" + "f" * 32,
        "EventType": "task.completed",
        "TaskSid": sid,
        "Timestamp": str(int(time.time())),  # a replay must be fresh: a stale one is refused before Temporal
        "TaskAttributes": json.dumps({"from": sf_demo.UNIQUE_PHONE_CONTACT.phone}),
        "TaskAssignmentStatus": "completed",
        "TaskChannelUniqueName": "voice",
    }
    answer = await stack.gateway.post(late, stack.gateway.sign(late))
    assert answer.status_code == 204
    assert (await stack.handle(sid).describe()).run_id == first_run
    assert len(sf_tasks_for(stack, sid)) == 1
