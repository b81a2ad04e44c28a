"""End to end under faults: lost, repeated and reordered callbacks, 412 storms, awkward search terms, expired
sessions, outages, lost answers and a killed worker. Every test drives real sandbox lifecycles through the gateway
and asserts on what Salesforce, Twilio and the workflow show afterwards.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

from flexsf.models import Stage, TaskView
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from sandboxes.twilio.state import CONCURRENT_WRITER_KEY
from tests.fixtures_stack import (
    Stack,
    WorkerProcess,
    eventually,
    process_env,
    settings_from,
    stack_env,
    stack_gateway,
)

AGENT = tw_demo.DEMO_WORKERS[0]
AGENT_USER = sf_demo.AGENT_USERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def stack_overrides(request) -> dict[str, str]:
    """No notes grace unless a test asks for it: the workflow closes as soon as it has logged."""
    return {"FLEXSF_NOTES_GRACE_S": "0", **getattr(request, "param", {})}


# ---- helpers -------------------------------------------------------------------------------------------------------


def sf_tasks_for(stack, task_sid: str) -> list[dict]:
    return [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]


def sf_tasks_by_call_object(stack, task_sid: str) -> list[dict]:
    return [t for t in stack.sf.records("Task") if t.get("CallObject") == task_sid]


def task_attributes(stack, task_sid: str) -> dict:
    return json.loads(stack.tw.task(task_sid)["attributes"])


async def popped(stack, attributes: dict) -> tuple[str, TaskView]:
    """A task created, reserved and accepted by the demo agent, once the workflow has done its screen pop."""
    sid = stack.tw.lifecycle(attributes, worker_sid=AGENT.sid)["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage in (Stage.IN_PROGRESS, Stage.AWAITING_SELECTION))
    return sid, view


async def finished(stack, task_sid: str, timeout: float = 60.0) -> TaskView:
    stack.tw.wrapup(task_sid)
    stack.tw.complete(task_sid)
    return await stack.result(task_sid, timeout)


def assert_logged_once_to(stack, task_sid: str, view: TaskView, who_id: str) -> dict:
    assert view.stage == Stage.LOGGED, view
    assert view.outcome == "Completed"
    logged = sf_tasks_for(stack, task_sid)
    assert len(logged) == 1, logged
    assert logged[0]["Id"] == view.activity_id
    assert logged[0]["WhoId"] == who_id
    return logged[0]


# ---- 1. duplicate and reordered callbacks --------------------------------------------------------------------------


async def test_every_callback_delivered_twice_still_logs_one_task(stack) -> None:
    stack.tw.faults.update(callback_duplicate_fraction=1.0)
    sid, view = await popped(stack, {"from": CONTACT.phone})
    assert view.pop.record.id == CONTACT.id
    view = await finished(stack, sid)

    assert_logged_once_to(stack, sid, view, CONTACT.id)
    assert stack.sf.counters().get("sobject_upsert:Task") == 1  # the log was written once, not once per copy
    assert stack.tw.counters()["task_update"] == 1  # and the attributes once
    duplicated = [d for d in stack.tw.deliveries(task_sid=sid) if d.duplicate]
    assert {d.event_type for d in duplicated} >= {"task.created", "reservation.accepted", "task.completed"}


@pytest.mark.parametrize("mode", ["shuffle", "swap_pairs"])
async def test_reordered_callbacks_still_log_one_task_with_the_right_relation(stack, mode) -> None:
    stack.tw.faults.update(callback_reorder=mode, callback_reorder_window=3, callback_reorder_flush_s=0.2)
    sid, view = await popped(stack, {"from": CONTACT.phone, "keep": "me"})
    assert view.pop.record.id == CONTACT.id
    # Flex writes to the attributes mid-call; its event and ours may arrive in either order.
    stack.tw.write_attributes(sid, {"flex": "note"})
    view = await finished(stack, sid)

    assert_logged_once_to(stack, sid, view, CONTACT.id)
    attributes = task_attributes(stack, sid)
    assert attributes["sfdcObjectId"] == CONTACT.id and attributes["keep"] == "me" and attributes["flex"] == "note"
    stack.tw.wait_callbacks_idle()
    recorded = [e["sid"] for e in stack.tw.events(task_sid=sid)]
    delivered = [d.event_sid for d in stack.tw.deliveries(task_sid=sid) if d.attempt == 1]
    assert sorted(delivered) == sorted(recorded) and delivered != recorded  # all arrived, not in event order


# ---- 2. lost callbacks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_LOST_EVENT_WINDOW_S": "1"}], indirect=True)
async def test_lost_completion_is_found_in_the_events_list_and_logged_once(stack) -> None:
    stack.tw.faults.update(callback_drop_event_types=["task.completed", "task.deleted"])
    sid, _ = await popped(stack, {"from": CONTACT.phone})
    view = await finished(stack, sid)

    logged = assert_logged_once_to(stack, sid, view, CONTACT.id)
    assert logged["Subject"].startswith("Completed Inbound voice")
    assert stack.sf.counters().get("sobject_upsert:Task") == 1
    assert stack.tw.counters()["events_list"] >= 1  # reconciled through TaskRouter's Events list
    completions = stack.tw.deliveries(task_sid=sid, event_type="task.completed")
    assert completions and all(d.outcome == "dropped" for d in completions)


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_LOST_EVENT_WINDOW_S": "1"}], indirect=True)
async def test_lost_acceptance_is_recovered_by_reconciliation_before_completion(stack) -> None:
    stack.tw.faults.update(callback_drop_event_types=["reservation.accepted"])
    sid, view = await popped(stack, {"from": CONTACT.phone})
    assert view.worker_sid == AGENT.sid and view.pop.record.id == CONTACT.id
    assert task_attributes(stack, sid)["sfdcObjectId"] == CONTACT.id
    view = await finished(stack, sid)

    logged = assert_logged_once_to(stack, sid, view, CONTACT.id)
    assert logged["OwnerId"] == AGENT_USER.id
    accepts = stack.tw.deliveries(task_sid=sid, event_type="reservation.accepted")
    assert accepts and all(d.outcome == "dropped" for d in accepts)


async def test_lost_acceptance_is_still_logged_to_the_agent_and_record_when_completion_arrives(stack) -> None:
    # The lost-event window (30 s in the stack) never fires: the completion itself must recover who accepted.
    stack.tw.faults.update(callback_drop_event_types=["reservation.accepted"])
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    view = await stack.result(sid)

    logged = assert_logged_once_to(stack, sid, view, CONTACT.id)
    assert logged["OwnerId"] == AGENT_USER.id  # not the integration user
    assert view.worker_sid == AGENT.sid and view.pop.record.id == CONTACT.id
    assert stack.tw.counters()["events_list"] == 1  # one reconciliation, at completion
    assert all(d.outcome == "dropped" for d in stack.tw.deliveries(task_sid=sid, event_type="reservation.accepted"))


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_LOST_EVENT_WINDOW_S": "1"}], indirect=True)
async def test_acceptance_and_completion_both_lost_are_reconciled_and_logged(stack) -> None:
    stack.tw.faults.update(
        callback_drop_event_types=["reservation.accepted", "task.wrapup", "task.completed", "task.deleted"]
    )
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    view = await stack.result(sid)

    logged = assert_logged_once_to(stack, sid, view, CONTACT.id)
    assert logged["OwnerId"] == AGENT_USER.id
    assert stack.tw.counters()["events_list"] >= 1
    assert "sfdcObjectId" not in task_attributes(stack, sid)  # found after the task finished: nothing to write
    assert stack.tw.counters().get("task_update", 0) == 0


# ---- 3. 412 on the attribute write ---------------------------------------------------------------------------------


async def test_stale_etag_on_the_attribute_write_is_merged_again(stack) -> None:
    stack.tw.faults.update(conflict_next=2)
    sid, view = await popped(stack, {"from": CONTACT.phone, "keep": "me"})

    attributes = task_attributes(stack, sid)
    assert attributes["sfdcObjectId"] == CONTACT.id and attributes["sfdcObjectType"] == "Contact"
    assert attributes["keep"] == "me" and attributes["from"] == CONTACT.phone
    assert attributes[CONCURRENT_WRITER_KEY] == 2  # the other writer's change survived both retries
    assert stack.tw.counters()["task_update"] == 3  # two 412s, then the write
    view = await finished(stack, sid)
    assert_logged_once_to(stack, sid, view, CONTACT.id)


async def test_attribute_write_outlasts_a_412_storm(stack) -> None:
    stack.tw.faults.update(conflict_fraction=1.0)
    sid = stack.tw.lifecycle({"from": CONTACT.phone, "keep": "me"}, worker_sid=AGENT.sid)["sid"]
    # One activity attempt gives up after 8 conflicting writes; Temporal retries it until the storm passes.
    await eventually(lambda: stack.tw.counters().get("task_update", 0) > 8, what="a second attempt of the write")
    assert (await stack.view(sid)).stage == Stage.ACCEPTED
    stack.tw.faults.update(conflict_fraction=0.0)
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)

    attributes = task_attributes(stack, sid)
    assert attributes["sfdcObjectId"] == CONTACT.id and attributes["keep"] == "me"
    assert attributes[CONCURRENT_WRITER_KEY] > 8
    view = await finished(stack, sid)
    assert_logged_once_to(stack, sid, view, CONTACT.id)


async def test_task_completed_while_the_attribute_write_is_retried_is_still_logged(stack) -> None:
    # The first write gets a 503; before its retry the agent hangs up and completes, so TaskRouter then refuses
    # any attribute update of the finished task. The log must not be lost to that.
    stack.tw.faults.update(fail_next=[503], endpoints=["task_update"])
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await eventually(lambda: stack.tw.counters().get("task_update", 0) >= 1, what="the first attribute write")
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)

    assert_logged_once_to(stack, sid, view, CONTACT.id)
    assert "sfdcObjectId" not in task_attributes(stack, sid)  # a finished task cannot be written to
    assert stack.tw.counters()["task_update"] == 1  # the retry saw it finished and did not try (and get a 400)


# ---- 4, 5. awkward search terms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, who",
    [
        (sf_demo.RESERVED_CHARS_ACCOUNT, None),
        (sf_demo.APOSTROPHE_CONTACT, sf_demo.APOSTROPHE_CONTACT.id),
        (sf_demo.HYPHEN_CONTACT, sf_demo.HYPHEN_CONTACT.id),
    ],
    ids=["AT&T (US)", "O'Brien", "Smith-Jones"],
)
async def test_names_with_sosl_reserved_characters_find_their_single_record(stack, record, who) -> None:
    sid, view = await popped(stack, {"name": record.name, "from": "+15005550006"})
    assert view.stage == Stage.IN_PROGRESS
    assert view.pop.search_term == record.name
    assert view.pop.record is not None and view.pop.record.id == record.id
    assert task_attributes(stack, sid)["sfdcObjectId"] == record.id
    assert not any(k.startswith("error:") for k in stack.sf.counters())

    view = await finished(stack, sid)
    assert view.stage == Stage.LOGGED
    logged = sf_tasks_for(stack, sid)
    assert len(logged) == 1
    if who:
        assert logged[0]["WhoId"] == who and not logged[0].get("WhatId")
    else:
        assert logged[0]["WhatId"] == record.id and not logged[0].get("WhoId")


@pytest.mark.parametrize(
    "caller", ["+16285550147", "628.555.0147", "+1 628 555 0147", "6285550147", "tel:+16285550147"]
)
async def test_phone_in_another_format_than_stored_finds_the_record(stack, caller) -> None:
    assert CONTACT.phone == "(628) 555-0147"
    sid, view = await popped(stack, {"from": caller})
    assert view.stage == Stage.IN_PROGRESS
    assert view.pop.record is not None and view.pop.record.id == CONTACT.id
    assert task_attributes(stack, sid)["sfdcObjectId"] == CONTACT.id


async def test_shared_number_in_another_format_offers_every_holder(stack) -> None:
    # "+1 415 555 0100" vs "(415) 555-0100", "415.555.0100" and "+1 415 555 0100": one number, three records.
    sid, view = await popped(stack, {"from": "+1 (415) 555-0100"})
    assert view.stage == Stage.AWAITING_SELECTION
    assert {c.id for c in view.pop.candidates} == {r.id for r in sf_demo.SHARED_PHONE_RECORDS}


# ---- 6. Salesforce session expiry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["revoke_now", "expire_after_one_call"])
async def test_expired_session_logs_in_once_more_and_logs(stack, how) -> None:
    sid, _ = await popped(stack, {"from": CONTACT.phone})
    assert stack.sf.counters()["logins"] == 1
    if how == "revoke_now":
        stack.sf.expire_sessions()
    else:
        stack.sf.expire_sessions(after_calls=1)  # the log's first call succeeds, its next one finds the token dead
    view = await finished(stack, sid)

    assert_logged_once_to(stack, sid, view, CONTACT.id)
    counters = stack.sf.counters()
    assert counters["logins"] == 2 and stack.activities.connection.logins == 2
    assert counters["unauthorized"] == 1
    assert counters.get("sobject_upsert:Task") == 1


# ---- 7. Salesforce outages and API limits --------------------------------------------------------------------------


# Two transient refusals of the log: 503s, and UNABLE_TO_LOCK_ROW (a 400 that another transaction's lock causes).
@pytest.mark.parametrize(("fault", "counter"), [("fail_next", "fault_503"), ("lock_row_next", "fault_lock_row")])
async def test_two_transient_refusals_are_retried_and_logged_once(stack, fault, counter) -> None:
    sid, _ = await popped(stack, {"from": CONTACT.phone})
    stack.sf.faults.set(**{fault: 2})
    view = await finished(stack, sid)

    assert_logged_once_to(stack, sid, view, CONTACT.id)
    counters = stack.sf.counters()
    assert counters[counter] == 2 and counters.get("sobject_upsert:Task") == 1


# An org at its daily limit (usage reported at or over it) holds the log before any call instead:
# tests/test_api_budget.py.
@pytest.mark.parametrize("outage", ["unavailable", "limit_fault"])
async def test_log_waits_out_an_outage_and_writes_once_after_recovery(stack, outage) -> None:
    sid, _ = await popped(stack, {"from": CONTACT.phone})
    counter = "fault_503" if outage == "unavailable" else "limit_exceeded"
    if outage == "unavailable":
        stack.sf.faults.set(fail_rate=1.0)
    else:
        stack.sf.faults.set(limit_exceeded=True)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    await eventually(lambda: stack.sf.counters().get(counter, 0) >= 2, what=f"two refused calls ({counter})")
    view = await stack.view(sid)
    assert view.stage == Stage.LOGGING and view.error is None  # still retrying, not failed
    assert sf_tasks_for(stack, sid) == []

    stack.sf.faults.reset()
    view = await stack.result(sid)
    assert_logged_once_to(stack, sid, view, CONTACT.id)
    assert stack.sf.counters().get("sobject_upsert:Task") == 1


# ---- 8. the write commits, the answer is lost ----------------------------------------------------------------------


async def test_lost_upsert_answer_does_not_create_a_second_task_with_external_id(stack) -> None:
    sid, _ = await popped(stack, {"from": CONTACT.phone})
    stack.sf.faults.set(drop_after_commit=1)
    view = await finished(stack, sid)

    assert_logged_once_to(stack, sid, view, CONTACT.id)
    counters = stack.sf.counters()
    assert counters["dropped_after_commit"] == 1
    assert counters.get("sobject_upsert:Task") == 1 and counters.get("sobject_update:Task") == 1  # retry amended
    assert len(sf_tasks_by_call_object(stack, sid)) == 0  # the external id, not CallObject, was the key


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_ACTIVITY_EXTERNAL_ID_FIELD": ""}], indirect=True)
async def test_lost_create_answer_does_not_create_a_second_task_without_external_id(stack) -> None:
    assert settings_from(stack.env).flexsf_activity_external_id_field is None
    sid, _ = await popped(stack, {"from": CONTACT.phone})
    stack.sf.faults.set(drop_after_commit=1)
    view = await finished(stack, sid)

    assert view.stage == Stage.LOGGED and view.outcome == "Completed"
    logged = sf_tasks_by_call_object(stack, sid)
    assert len(logged) == 1 and logged[0]["Id"] == view.activity_id and logged[0]["WhoId"] == CONTACT.id
    assert not logged[0].get("Flex_Task_Sid__c")
    counters = stack.sf.counters()
    assert counters["dropped_after_commit"] == 1
    assert counters.get("sobject_create:Task") == 1 and counters.get("sobject_update:Task") == 1
    assert "sobject_upsert:Task" not in counters


# ---- 9. the worker process dies mid-workflow -----------------------------------------------------------------------


async def test_worker_killed_after_the_pop_and_replaced_logs_once(
    temporal_server,
    temporal_client,
    clean_salesforce_sandbox,
    fresh_twilio_sandbox,
    worker_processes,
    tmp_path,
) -> None:
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"restart-{uuid.uuid4()}"
    env = process_env(temporal_server.address, stack_env(sf.info, tw.info, task_queue, FLEXSF_NOTES_GRACE_S="0"))
    async with stack_gateway(temporal_client, env, tw) as gateway:
        stack = Stack(temporal_client, task_queue, env, None, sf, tw, gateway)

        first = WorkerProcess(env, tmp_path / "worker-1.log")
        worker_processes.append(first)
        await eventually(first.polling, what="the first worker polling")
        sid, view = await popped(stack, {"from": CONTACT.phone, "keep": "me"})
        assert view.pop.record.id == CONTACT.id
        assert task_attributes(stack, sid)["sfdcObjectId"] == CONTACT.id
        first.kill()
        assert first.proc.returncode == -signal.SIGKILL
        assert sf_tasks_for(stack, sid) == []

        second = WorkerProcess(env, tmp_path / "worker-2.log")
        worker_processes.append(second)
        await eventually(second.polling, what="the second worker polling")
        stack.tw.wrapup(sid)
        stack.tw.complete(sid)
        view = await stack.result(sid, timeout=90)

        assert_logged_once_to(stack, sid, view, CONTACT.id)
        counters = sf.counters()
        assert counters.get("sobject_upsert:Task") == 1
        assert counters["search"] == 1  # the replacement replayed the pop from history instead of searching again
        assert counters["logins"] == 2  # one per worker process
        assert tw.counters()["task_update"] == 1
