"""Deliver one TaskRouter event to its task's workflow: signal-with-start on `flex-task-<TaskSid>`.

Whichever event reaches us first starts the workflow; later ones (or the same one delivered twice) only signal it,
and the workflow ignores event sids it has already seen.
"""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from flexsf.models import Notes, TaskEvent, TaskWorkflowInput
from flexsf.vocabulary import workflow_id
from workflows.task_workflow import FlexTaskWorkflow


async def signal_event(client: Client, task_queue: str, event: TaskEvent) -> WorkflowHandle:
    return await client.start_workflow(
        FlexTaskWorkflow.run,
        TaskWorkflowInput(task_sid=event.task_sid),
        id=workflow_id(event.task_sid),
        task_queue=task_queue,
        start_signal=FlexTaskWorkflow.task_event.__name__,
        start_signal_args=[event],
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A completed workflow stays closed: a straggling event must not start a second log for the same task. One
        # that failed, was terminated or timed out never finished its task, so the next event starts it again.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
    )


async def signal_notes(client: Client, task_sid: str, notes: Notes) -> None:
    await client.get_workflow_handle(workflow_id(task_sid)).signal(FlexTaskWorkflow.submit_notes, notes)
