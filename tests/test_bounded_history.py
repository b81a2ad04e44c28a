"""Bounded history (issue 13, item 4): a task kept open across many lost-event windows continues as new, carrying
its state, and each run's history stays under the limit; reconciliation hands the workflow only unseen events."""

from __future__ import annotations

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from activities.twilio import unseen_and_trimmed
from flexsf.models import Stage, TaskEvent
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import eventually

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
LIMIT = 100
# What one lost-event window can add after the check that decides to continue: a reconcile and its timer.
SLACK = 20
RUNS = 4


def event(sid: str, event_type: str, at: int, **extra) -> TaskEvent:
    return TaskEvent(sid=sid, event_type=event_type, task_sid="WT1", timestamp_ms=at, **extra)


def test_reconcile_hands_back_only_unseen_events_and_only_the_attributes_used() -> None:
    events = [
        event("EV1", "task.created", 1, task_attributes={"from": "+1"}),
        event("EV2", "reservation.accepted", 2, task_attributes={"from": "+1"}, worker_attributes={"email": "a@b"}),
        event("EV3", "task.updated", 3, task_attributes={"from": "+1", "x": 1}, worker_attributes={"email": "a@b"}),
    ]
    fresh = unseen_and_trimmed(events, {"EV1"}, attributes_at=1)
    assert [e.sid for e in fresh] == ["EV2", "EV3"]
    assert fresh[0].task_attributes == {} and fresh[0].worker_attributes == {"email": "a@b"}
    assert fresh[1].task_attributes == {"from": "+1", "x": 1} and fresh[1].worker_attributes == {}
    # Attributes older than those the workflow holds are not sent again; everything seen comes back as nothing.
    assert unseen_and_trimmed(events, {"EV1", "EV2"}, attributes_at=5)[0].task_attributes == {}
    assert unseen_and_trimmed(events, {"EV1", "EV2", "EV3"}, attributes_at=3) == []


async def runs_of(stack, task_sid: str) -> list:
    query = f"WorkflowId = '{workflow_id(task_sid)}'"
    return [e async for e in stack.client.list_workflows(query)]


async def history_length(stack, task_sid: str, run_id: str) -> int:
    handle = stack.client.get_workflow_handle(workflow_id(task_sid), run_id=run_id)
    return len((await handle.fetch_history()).events)


@pytest.mark.parametrize(
    "stack_overrides",
    [{"FLEXSF_NOTES_GRACE_S": "0", "FLEXSF_LOST_EVENT_WINDOW_S": "0.5", "FLEXSF_HISTORY_EVENTS_LIMIT": str(LIMIT)}],
    indirect=True,
)
async def test_a_task_open_across_many_lost_event_windows_keeps_each_history_short(stack) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == CONTACT.id

    async def continued_enough() -> bool:
        closed = [r for r in await runs_of(stack, sid) if r.status == WorkflowExecutionStatus.CONTINUED_AS_NEW]
        return len(closed) >= RUNS

    # Every half second the workflow asks TaskRouter about the quiet task: RUNS runs' worth of windows.
    await eventually(continued_enough, timeout=180, what=f"{RUNS} continue-as-new runs")
    view = await stack.view(sid)
    assert view.stage == Stage.IN_PROGRESS and view.record.id == CONTACT.id and view.worker_sid == AGENT.sid

    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid, timeout=60)
    assert view.stage == Stage.LOGGED and view.outcome == "Completed"
    logged = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid]
    assert len(logged) == 1 and logged[0]["WhoId"] == CONTACT.id and logged[0]["OwnerId"] != ""
    # The pop ran once, in the first run: no later run searched again or rewrote the attributes.
    counters = stack.sf.counters()
    assert counters.get("search", 0) + counters.get("parameterized_search", 0) == 1, counters
    assert stack.tw.counters()["task_update"] == 1

    runs = await runs_of(stack, sid)
    assert len(runs) > RUNS
    lengths = [await history_length(stack, sid, r.run_id) for r in runs]
    assert max(lengths) <= LIMIT + SLACK, lengths
    # Each continued run's reconciles carried nothing it had seen: no event payload grows with the task's age.
    for run in runs:
        history = await stack.client.get_workflow_handle(workflow_id(sid), run_id=run.run_id).fetch_history()
        started = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
        assert started.ByteSize() < 16_000
