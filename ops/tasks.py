"""Operator tools: find tasks by their search attributes, show one, relog one, reconcile lost tasks.

Everything here talks to Temporal (and, for `reconcile`, TaskRouter's Events list through `flexsf.recovery`, which
the sweep shares) through the same clients the worker uses; the CLI (`flexsf tasks …`, `flexsf relog`,
`flexsf reconcile`, `flexsf search-attributes`) only prints.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from flexsf import search_attributes as sa
from flexsf.models import RelogRequest, RelogResult, RelogSeed, Stage, TaskView, TaskWorkflowInput

# The reconciliation core lives in flexsf.recovery (the sweep activity uses it too); these names stay importable here.
from flexsf.recovery import (  # noqa: F401
    FINISHED_EVENT_TYPES,
    ReconcileAction,
    count_repairable,
    reconcile,
    repairable_query,
    tasks_query,
    workflow_exists,
    workflow_in_hand,
)
from flexsf.settings import ConfigurationError, Settings
from flexsf.vocabulary import task_sid_of, workflow_id
from workflows.task_workflow import FlexTaskWorkflow

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class OpsError(RuntimeError):
    """An operator request that cannot be done; the message says why."""


# ---- queries (tasks_query: flexsf.recovery) --------------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`90s`, `30m`, `1h`, `2d`, `1w` before now, or an ISO-8601 date-time (UTC when it has no offset)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2).lower()]: float(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (30m, 1h, 2d) nor an ISO-8601 date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class TaskRow:
    task_sid: str
    stage: str | None
    worker_sid: str | None
    record_id: str | None
    activity_id: str | None
    channel: str | None
    started: datetime | None
    status: str

    @classmethod
    def from_execution(cls, execution: WorkflowExecution) -> TaskRow:
        attrs = execution.typed_search_attributes
        return cls(
            task_sid=attrs.get(sa.FLEX_TASK_SID) or task_sid_of(execution.id),
            stage=attrs.get(sa.FLEX_STAGE),
            worker_sid=attrs.get(sa.FLEX_WORKER_SID),
            record_id=attrs.get(sa.SFDC_OBJECT_ID),
            activity_id=attrs.get(sa.SFDC_ACTIVITY_ID),
            channel=attrs.get(sa.FLEX_CHANNEL),
            started=execution.start_time,
            status=execution.status.name.lower() if execution.status else "unknown",
        )

    def as_json(self) -> dict:
        return {**asdict(self), "started": self.started.isoformat() if self.started else None}


async def list_tasks(client: Client, query: str, limit: int = 100) -> list[TaskRow]:
    return [TaskRow.from_execution(e) async for e in client.list_workflows(query, limit=limit)]


@dataclass
class TaskDetails:
    view: TaskView
    status: str
    workflow_id: str = ""
    ui_url: str | None = None

    def as_json(self) -> dict:
        """What `flexsf tasks show` prints, as data: ids and states only. The notes and the candidates' names stay
        out, as they do in the table (a JSON dump ends up in tickets and chat)."""
        view, record = self.view, self.view.record
        return {
            "task_sid": view.task_sid,
            "workflow_id": self.workflow_id,
            "workflow_status": self.status,
            "stage": view.stage.value,
            "outcome": view.outcome,
            "channel": view.channel,
            "direction": view.direction,
            "worker_sid": view.worker_sid,
            "record": {"type": record.type, "id": record.id} if record else None,
            "candidates": [c.id for c in view.pop.candidates],
            "activity_id": view.activity_id,
            "error": view.error,
            "log_note": view.log_note,
            "flags_source": view.flags_source,
            "ui_url": self.ui_url,
        }


def workflow_ui_url(base: str | None, namespace: str, workflow: str) -> str | None:
    """The workflow's page in the Temporal UI at `base` (FLEXSF_TEMPORAL_UI_URL; the same path on Temporal Cloud's
    https://cloud.temporal.io), or None without one. Task workflow ids carry no reserved characters today; quoting
    keeps a link right if that changes."""
    if not base:
        return None
    return f"{base.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows/{quote(workflow, safe='')}"


async def show_task(client: Client, task_sid: str) -> TaskDetails:
    handle = client.get_workflow_handle_for(FlexTaskWorkflow.run, workflow_id(task_sid))
    try:
        description = await handle.describe()
        view = await handle.query(FlexTaskWorkflow.view)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise OpsError(f"no workflow for task {task_sid}") from None
        raise
    status = description.status.name.lower() if description.status else "unknown"
    return TaskDetails(view=view, status=status, workflow_id=description.id)


async def relog(client: Client, task_sid: str, reason: str | None = None) -> RelogResult:
    """Write the task's activity log again: through the workflow's `relog` update while it runs, or, once it closed,
    as a new run of the same workflow id seeded from the closed run's result, amending the same Salesforce Task
    (idempotent either way; see the workflow)."""
    handle = client.get_workflow_handle_for(FlexTaskWorkflow.run, workflow_id(task_sid))
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise OpsError(f"no workflow for task {task_sid}") from None
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        return await _relog_closed(client, task_sid, description, reason)
    try:
        return await handle.execute_update(FlexTaskWorkflow.relog, RelogRequest(reason=reason))
    except WorkflowUpdateFailedError as exc:
        raise OpsError(f"relog of task {task_sid} refused: {exc.cause or exc}") from None


async def _relog_closed(
    client: Client, task_sid: str, description: WorkflowExecutionDescription, reason: str | None
) -> RelogResult:
    status = description.status.name.lower() if description.status else "unknown"
    if description.status != WorkflowExecutionStatus.COMPLETED:
        raise OpsError(
            f"the workflow of task {task_sid} ended {status} and left no result to relog from; "
            "the next TaskRouter event for it, or `flexsf reconcile`, starts it again"
        )
    closed = client.get_workflow_handle_for(FlexTaskWorkflow.run, description.id, run_id=description.run_id)
    view = await closed.result(follow_runs=False)
    if view.stage not in (Stage.LOGGED, Stage.LOGGED_UNASSOCIATED, Stage.FAILED):
        raise OpsError(f"nothing to relog for task {task_sid} at stage {view.stage.value}; it was never logged")
    if view.finished_at is None:
        # A result recorded before it kept the time: the close is the nearest known, at most the notes grace later.
        view = view.model_copy(update={"finished_at": description.close_time})
    try:
        rerun = await client.start_workflow(
            FlexTaskWorkflow.run,
            TaskWorkflowInput(task_sid=task_sid, relog_of=RelogSeed(view=view, reason=reason)),
            id=description.id,
            task_queue=description.task_queue,
            # Only this operator action reopens a completed task's id; TaskRouter events never do (flexsf/delivery.py).
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        raise OpsError(f"task {task_sid} has a workflow running again (another relog?); try again") from None
    try:
        after = await rerun.result()
    except WorkflowFailureError as exc:
        raise OpsError(f"relog of task {task_sid} failed: {exc.cause or exc}") from None
    return RelogResult(stage=after.stage, activity_id=after.activity_id, error=after.error)


# ---- reconciliation (flexsf.recovery) --------------------------------------------------------------------------------


def twilio_client_from(settings: Settings):
    """The TaskRouter client, built from settings exactly as the worker builds it."""
    from flexsf.twilio_client import twilio_client_from as build

    if not settings.twilio_workspace_sid:
        raise ConfigurationError("TWILIO_WORKSPACE_SID is required")
    return build(settings)
