"""Deliver one TaskRouter event to its task's workflow: signal-with-start on `flex-task-<TaskSid>`; and the agent's
long-poll for the pop, an update-with-start on the same workflow.

Whichever event reaches us first starts the workflow; later ones (or the same one delivered twice) only signal it,
and the workflow ignores event sids it has already seen. The gateway, `flexsf reconcile` and the sweep all deliver
through here, naming the workflow and its signals by the vocabulary's names, so none of them imports the workflow.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from flexsf.models import POP_UPDATE, Notes, PopAnswer, PopWait, TaskEvent, TaskView, TaskWorkflowInput
from flexsf.vocabulary import NOTES_SIGNAL, TASK_EVENT_SIGNAL, WORKFLOW_TYPE, workflow_id

# A completed workflow stays closed: a straggling event must not start a second log for the same task. One that
# failed, was terminated or timed out never finished its task, so the next event starts it again.
_REUSE = WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
# How much longer than the workflow's own wait the call may take (Temporal's round trips, a busy worker).
POP_RPC_MARGIN = timedelta(seconds=10)


async def signal_event(client: Client, task_queue: str, event: TaskEvent) -> WorkflowHandle[Any, TaskView]:
    return await client.start_workflow(
        WORKFLOW_TYPE,
        TaskWorkflowInput(task_sid=event.task_sid),
        id=workflow_id(event.task_sid),
        task_queue=task_queue,
        result_type=TaskView,
        start_signal=TASK_EVENT_SIGNAL,
        start_signal_args=[event],
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=_REUSE,
    )


async def await_pop(client: Client, task_queue: str, task_sid: str, request: PopWait) -> PopAnswer:
    """The agent's long-poll for the pop, by update-with-start on the workflow `signal_event` starts (same type, id,
    input and policies): the bridge may ask before TaskRouter's `reservation.accepted` callback reaches us, and then
    starts the workflow itself, whose update waits for that callback. Raises `WorkflowAlreadyStartedError` when the
    task's workflow has completed (read its result or query it instead)."""
    start = WithStartWorkflowOperation(
        WORKFLOW_TYPE,
        TaskWorkflowInput(task_sid=task_sid),
        id=workflow_id(task_sid),
        task_queue=task_queue,
        result_type=TaskView,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=_REUSE,
    )
    # The start operation keeps the call's failure for whoever awaits its handle: read here, or asyncio logs every
    # poll of a finished task as "exception never retrieved".
    started = asyncio.ensure_future(start.workflow_handle())
    try:
        return await client.execute_update_with_start_workflow(
            POP_UPDATE,
            request,
            start_workflow_operation=start,
            result_type=PopAnswer,
            rpc_timeout=request.wait + POP_RPC_MARGIN,
        )
    finally:
        await asyncio.wait([started], timeout=0.1)
        if started.done() and not started.cancelled():
            started.exception()
        else:
            started.cancel()


async def signal_notes(client: Client, task_sid: str, notes: Notes) -> None:
    await client.get_workflow_handle(workflow_id(task_sid)).signal(NOTES_SIGNAL, notes)
