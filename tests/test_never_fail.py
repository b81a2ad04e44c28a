"""A task's workflow never fails on what Twilio refuses: flags it cannot read, Events it may not list. And one that
failed (or was terminated) anyway does not leave its task unlogged: the next event starts it again.

End to end through the sandboxes and the gateway, as tests/test_task_workflow_resilience.py.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.interfaces import PolicySteps
from flexsf.models import FALLBACK_FLAGS, FeatureFlags, Stage, TaskPolicy, TaskView, TaskWorkflowInput
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from workflows.task_workflow import FlexTaskWorkflow

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT


@pytest.fixture
def stack_overrides(request) -> dict[str, str]:
    """No notes grace unless a test asks for it: the workflow closes as soon as it has logged."""
    return {"FLEXSF_NOTES_GRACE_S": "0", **getattr(request, "param", {})}


async def popped(stack, attributes: dict) -> str:
    sid = stack.tw.lifecycle(attributes, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    return sid


async def finished(stack, task_sid: str) -> TaskView:
    stack.tw.wrapup(task_sid)
    stack.tw.complete(task_sid)
    return await stack.result(task_sid)


def assert_logged_once_to_contact(stack, task_sid: str, view: TaskView) -> None:
    assert view.stage == Stage.LOGGED, view
    logged = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]
    assert [t["Id"] for t in logged] == [view.activity_id]
    assert logged[0]["WhoId"] == CONTACT.id


async def test_flex_config_refused_logs_on_fallback_flags_and_says_so(stack) -> None:
    # A credential rotated under the worker: Flex's Configuration answers 401, and this worker never read it before.
    stack.tw.faults.update(refused_endpoints={"configuration_fetch": 401})
    sid = await popped(stack, {"from": CONTACT.phone})
    view = await finished(stack, sid)

    assert_logged_once_to_contact(stack, sid, view)
    assert view.flags == FALLBACK_FLAGS and not view.flags.copilot_notes
    assert view.flags_source == "defaults"
    assert "401" in view.flags_error
    assert view.error is None


async def test_flex_config_refused_after_a_read_keeps_the_last_flags_seen(stack) -> None:
    first = await popped(stack, {"from": CONTACT.phone})
    assert (await finished(stack, first)).flags_source == "flex"
    stack.tw.faults.update(refused_endpoints={"configuration_fetch": 403})  # the stack reads Flex for every task

    sid = await popped(stack, {"from": CONTACT.phone})
    view = await finished(stack, sid)

    assert_logged_once_to_contact(stack, sid, view)
    assert view.flags == FeatureFlags(**tw_demo.SALESFORCE_FEATURE_FLAGS)  # Flex's, not the fallback ones
    assert view.flags_source == "last_seen" and "403" in view.flags_error


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_LOST_EVENT_WINDOW_S": "1"}], indirect=True)
async def test_events_list_refused_while_reconciling_records_why_and_keeps_waiting(stack) -> None:
    stack.tw.faults.update(callback_drop_event_types=["task.completed", "task.deleted"])
    sid = await popped(stack, {"from": CONTACT.phone})
    stack.tw.faults.update(refused_endpoints={"events_list": 403})
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)  # its callback is lost: only the Events list can tell, and it refuses

    waiting = await stack.wait_for(sid, lambda v: v.error is not None and "TaskRouter Events" in v.error)
    assert "403" in waiting.error and waiting.stage == Stage.IN_PROGRESS
    description = await stack.handle(sid).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING

    stack.tw.faults.update(refused_endpoints={})  # the key is granted the permission: the next window's read works
    view = await stack.result(sid)
    assert_logged_once_to_contact(stack, sid, view)
    assert view.error is None


async def test_a_completed_task_whose_acceptance_nobody_can_tell_is_still_logged(stack) -> None:
    """Only tasks an agent accepted are logged; a completed task was accepted by someone, even when that callback was
    lost and the Events list refuses to say who."""
    stack.tw.faults.update(callback_drop_event_types=["reservation.accepted"], refused_endpoints={"events_list": 403})
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED_UNASSOCIATED, view
    assert [t["Id"] for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid] == [view.activity_id]


async def test_a_terminated_run_is_started_again_by_the_next_event(stack) -> None:
    sid = await popped(stack, {"from": CONTACT.phone})
    first = await stack.handle(sid).describe()
    await stack.handle(sid).terminate(reason="stands in for a run that failed")

    stack.tw.wrapup(sid)  # starts a new run, which recovers the acceptance from the Events list
    stack.tw.complete(sid)
    await another_run(stack, sid, first.run_id)
    view = await stack.result(sid)

    assert_logged_once_to_contact(stack, sid, view)
    assert (await stack.handle(sid).describe()).status == WorkflowExecutionStatus.COMPLETED


async def another_run(stack, task_sid: str, run_id: str, timeout: float = 30.0) -> None:
    """Wait until the task's workflow id names a run other than `run_id` (events reach the gateway asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (await stack.handle(task_sid).describe()).run_id == run_id:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no new run of {task_sid} within {timeout}s")
        await asyncio.sleep(0.05)


@activity.defn(name=PolicySteps.load_task_policy.__name__)
async def policy_never_served(req: TaskWorkflowInput) -> TaskPolicy:
    raise ApplicationError("stands in for a worker that never answers within the window", non_retryable=True)


async def test_policy_activity_failing_outright_starts_the_task_on_fallback_flags(temporal_client, task_queue) -> None:
    # The activity falls back on Twilio's failures itself; this is the workflow's own guard for everything else.
    sid = f"WT{uuid.uuid4().hex}"
    async with Worker(
        temporal_client, task_queue=task_queue, workflows=[FlexTaskWorkflow], activities=[policy_never_served]
    ):
        handle = await temporal_client.start_workflow(
            FlexTaskWorkflow.run, TaskWorkflowInput(task_sid=sid), id=workflow_id(sid), task_queue=task_queue
        )
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while (view := await handle.query(FlexTaskWorkflow.view)).flags_source != "defaults":
                assert asyncio.get_running_loop().time() < deadline, f"still {view!r}"
                await asyncio.sleep(0.05)
            assert view.flags == FALLBACK_FLAGS and "never answers" in view.flags_error
            assert view.stage == Stage.CREATED  # waiting for the task's events, not failed
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        finally:
            await handle.terminate()
