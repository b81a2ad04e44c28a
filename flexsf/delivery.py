"""Deliver one TaskRouter event to its task's workflow: signal-with-start on `flex-task-<TaskSid>`.

Whichever event reaches us first starts the workflow; later ones (or the same one delivered twice) only signal it,
and the workflow ignores event sids it has already seen. The gateway, `flexsf reconcile` and the sweep all deliver
through here, naming the workflow and its signals by the vocabulary's names, so none of them imports the workflow.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from flexsf.models import Notes, TaskEvent, TaskView, TaskWorkflowInput
from flexsf.vocabulary import NOTES_SIGNAL, TASK_EVENT_SIGNAL, WORKFLOW_TYPE, workflow_id


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
        # A completed workflow stays closed: a straggling event must not start a second log for the same task. One
        # that failed, was terminated or timed out never finished its task, so the next event starts it again.
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
    )


async def signal_notes(client: Client, task_sid: str, notes: Notes) -> None:
    await client.get_workflow_handle(workflow_id(task_sid)).signal(NOTES_SIGNAL, notes)
