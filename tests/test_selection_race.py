"""The agent's choice and the search result it was made from, in one workflow task.

A worker that dies with the search result in flight leaves that result waiting; an agent who already saw the
candidates (a bridge retrying its choice) chooses in that gap, so the replacement worker gets the search result and
the choice in one workflow task. The update's validator runs before the result is applied: it used to refuse the
choice ("no candidate records"), and a handler that assumed its candidate was there could not replay such a
history. The choice is now checked once the pop is decided, and the history replays.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import UpdateWorkflowExecutionLifecycleStage
from temporalio.api.update.v1 import UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import PollWorkflowExecutionUpdateRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, Worker

import worker as worker_module
from flexsf.models import RecordRef, RecordSelection, Stage
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import eventually, settings_from, stack_env, stack_gateway
from workflows.task_workflow import FlexTaskWorkflow

AGENT = tw_demo.DEMO_WORKERS[0]
CHOSEN = sf_demo.SHARED_PHONE_RECORDS[1]


def workflow_worker(client: Client, task_queue: str) -> Worker:
    # No cache: each workflow task is a replay from the first event, as on a worker that just replaced a dead one.
    return Worker(client, task_queue=task_queue, workflows=[FlexTaskWorkflow], max_cached_workflows=0)


def activity_worker(client: Client, task_queue: str, env: dict[str, str], executor: ThreadPoolExecutor) -> Worker:
    activities = worker_module.build_activities(settings_from(env))
    return Worker(client, task_queue=task_queue, activities=activities.all(), activity_executor=executor)


async def pending(handle) -> dict[str, int]:
    """Pending activities by type, with their attempt."""
    described = (await handle.describe()).raw_description
    return {a.activity_type.name: a.attempt for a in described.pending_activities}


async def admitted(client: Client, handle, update_id: str) -> bool:
    """Whether the server holds the update (admitted, not yet handed to a worker)."""
    request = PollWorkflowExecutionUpdateRequest(
        namespace=client.namespace,
        update_ref=UpdateRef(workflow_execution=WorkflowExecution(workflow_id=handle.id), update_id=update_id),
        identity="test",
        wait_policy=WaitPolicy(
            lifecycle_stage=UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
        ),
    )
    try:
        await client.workflow_service.poll_workflow_execution_update(request, timeout=timedelta(seconds=2))
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.DEADLINE_EXCEEDED):
            return False
        raise
    return True


def workflow_tasks_between_search_result_and_choice(history) -> int:
    """Workflow tasks completed after the search's completion and before the choice was accepted: 0 is the race."""
    events = list(history.events)
    search = next(
        e.event_id
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "search_salesforce"
    )
    completed = next(
        i
        for i, e in enumerate(events)
        if e.HasField("activity_task_completed_event_attributes")
        and e.activity_task_completed_event_attributes.scheduled_event_id == search
    )
    accepted = next(
        i for i, e in enumerate(events) if e.HasField("workflow_execution_update_accepted_event_attributes")
    )
    return sum(1 for e in events[completed:accepted] if e.HasField("workflow_task_completed_event_attributes")) - 1


async def test_a_choice_in_the_workflow_task_of_its_search_result_is_applied_and_replays(
    temporal_client, clean_salesforce_sandbox, fresh_twilio_sandbox
) -> None:
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"race-{uuid.uuid4()}"
    env = stack_env(sf.info, tw.info, task_queue, FLEXSF_NOTES_GRACE_S="0")
    async with stack_gateway(temporal_client, env, tw):
        with ThreadPoolExecutor(max_workers=4) as executor:
            # 1. The task is accepted and its policy loaded; Salesforce answers 503, so the search stays pending.
            sf.faults.set(fail_rate=1.0)
            async with (
                workflow_worker(temporal_client, task_queue),
                activity_worker(temporal_client, task_queue, env, executor),
            ):
                sid = tw.lifecycle({"from": "+1 (415) 555-0100"}, worker_sid=AGENT.sid)["sid"]
                handle = temporal_client.get_workflow_handle(workflow_id(sid))
                await eventually(lambda: _search_retried(handle), timeout=60, what="the search attempted and refused")
            # 2. Salesforce is back and only activities run: the search's result waits for a workflow worker.
            sf.faults.reset()
            async with activity_worker(temporal_client, task_queue, env, executor):
                await eventually(lambda: _nothing_pending(handle), timeout=60, what="the search's result recorded")
            # 3. The agent chooses; the server holds the choice beside the search result.
            update_id = f"choice-{uuid.uuid4()}"
            choice = asyncio.ensure_future(
                handle.execute_update(
                    FlexTaskWorkflow.select_record,
                    RecordSelection(worker_sid=AGENT.sid, record_id=CHOSEN.id),
                    id=update_id,
                )
            )
            await eventually(
                lambda: admitted(temporal_client, handle, update_id), timeout=30, what="the choice admitted"
            )
            # 4. A fresh worker takes both in one workflow task.
            async with (
                workflow_worker(temporal_client, task_queue),
                activity_worker(temporal_client, task_queue, env, executor),
            ):
                chosen: RecordRef = await asyncio.wait_for(choice, 60)
                assert chosen.id == CHOSEN.id
                view = await handle.query(FlexTaskWorkflow.view)
                assert view.stage == Stage.IN_PROGRESS and view.record is not None and view.record.id == CHOSEN.id
        history = await handle.fetch_history()

    assert workflow_tasks_between_search_result_and_choice(history) == 0, "the race was not reproduced"
    replayed = await Replayer(workflows=[FlexTaskWorkflow], data_converter=pydantic_data_converter).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None, replayed.replay_failure


async def _search_retried(handle) -> bool:
    try:
        return (await pending(handle)).get("search_salesforce", 0) >= 2
    except RPCError:
        return False  # the workflow not started yet


async def _nothing_pending(handle) -> bool:
    return not await pending(handle)
