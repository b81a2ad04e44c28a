"""Recovering tasks TaskRouter finished without us: the core `flexsf reconcile` and the sweep share.

TaskRouter does not retry a callback. A task whose every callback was lost (the gateway or Temporal down for a whole
short call) has no workflow, and nothing would ever log it. Its events are still in the workspace's Events list for
30 days, so `recover()` lists the tasks that finished in a window and, for each one without a workflow in hand,
delivers its events by signal-with-start (`flexsf.delivery`), exactly as the gateway would have: it is then logged
like any other task, once.

Also here: the visibility queries over task workflows (`tasks_query`), and the count of tasks parked in a stage an
operator repairs (`count_repairable`), for the sweep's gauge and `flexsf tasks list --stage`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from twilio.base.exceptions import TwilioException

from flexsf import search_attributes as sa
from flexsf.delivery import signal_event
from flexsf.models import Stage, TaskEvent
from flexsf.task_events import clean_text, event_from_events_api
from flexsf.vocabulary import (
    TASK_CANCELED,
    TASK_COMPLETED,
    TASK_DELETED,
    TASK_SYSTEM_DELETED,
    WORKFLOW_TYPE,
    workflow_id,
)

# How a task ends in the Events list: finished, or purged (a task deleted before it finished is still the workflow's
# to log; it asks TaskRouter how it ended). One list call (one page, mostly) per type per window.
FINISHED_EVENT_TYPES = (TASK_COMPLETED, TASK_CANCELED, TASK_DELETED, TASK_SYSTEM_DELETED)
# TaskRouter's largest page (twilio.com/docs/taskrouter/api/event, "PageSize … maximum is 1000"); twilio-python's
# list() otherwise asks for the server's default of 50 per page.
EVENTS_PAGE_SIZE = 1000
# Tasks looked at (workflow described, events delivered) at once.
CONCURRENCY = 16
# Stages a task waits in for an operator (or the org's API budget) rather than moving on by itself.
REPAIRABLE_STAGES = (Stage.FAILED, Stage.WAITING_FOR_API_BUDGET)


@dataclass
class ReconcileAction:
    task_sid: str
    # "started": its events were delivered to a new workflow; "exists": left alone; "failed": not (or not fully)
    # delivered, `reason` says why
    action: str
    events: int = 0
    finished: str | None = None
    reason: str | None = None


@dataclass
class Recovery:
    """What one pass over a window did."""

    actions: list[ReconcileAction] = field(default_factory=list)
    # Events-list calls made (pages fetched): the finished-task lists and each started task's own list.
    api_calls: int = 0
    # When the earliest task reported "failed" finished: a sweep keeps its cursor before it, to try it again.
    earliest_failed: datetime | None = None

    @property
    def started(self) -> list[str]:
        return [a.task_sid for a in self.actions if a.action == "started"]

    @property
    def failed(self) -> int:
        return sum(a.action == "failed" for a in self.actions)


# ---- TaskRouter's Events list ----------------------------------------------------------------------------------------


def _events(twilio, workspace_sid: str, **filters) -> tuple[list, int]:
    """Every row of the Events list matching `filters`, and the pages (API calls) it took."""
    page = twilio.taskrouter.v1.workspaces(workspace_sid).events.page(page_size=EVENTS_PAGE_SIZE, **filters)
    rows, pages = list(page), 1
    while (page := page.next_page()) is not None:
        rows.extend(page)
        pages += 1
    return rows, pages


def _whole_second_after(moment: datetime) -> datetime:
    """twilio-python sends dates to the second, truncated: round an end up so the last fraction is not left out."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def _row_ms(row) -> int | None:
    ms = getattr(row, "event_date_ms", None)
    if isinstance(ms, int):
        return ms
    date = getattr(row, "event_date", None)
    return int(date.timestamp() * 1000) if isinstance(date, datetime) else None


# ---- workflows -------------------------------------------------------------------------------------------------------


async def workflow_exists(client: Client, task_sid: str) -> bool:
    return await _workflow_status(client, task_sid) is not None


async def workflow_in_hand(client: Client, task_sid: str) -> bool:
    """Running or done: its log is (or will be) written. A run that failed, was terminated or timed out is not, and
    a new run may start (flexsf/delivery.py allows a duplicate of a failed run only)."""
    return await _workflow_status(client, task_sid) in (
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.COMPLETED,
        WorkflowExecutionStatus.CONTINUED_AS_NEW,
    )


async def _workflow_status(client: Client, task_sid: str) -> WorkflowExecutionStatus | None:
    try:
        description = await client.get_workflow_handle(workflow_id(task_sid)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return description.status


# ---- recovery --------------------------------------------------------------------------------------------------------


async def recover(
    client: Client,
    twilio,
    workspace_sid: str,
    task_queue: str,
    since: datetime,
    until: datetime | None = None,
    history: timedelta = timedelta(days=1),
    progress: Callable[[], None] | None = None,
) -> Recovery:
    """Every task TaskRouter finished in [`since`, `until` or now] that has no workflow in hand gets one, fed its
    events from the Events list (created, accepted, completed …, looked up to `history` before the window), so it is
    logged like any other. Tasks whose workflow is running or closed are left alone, so a second pass over the same
    window changes nothing. A task that cannot be done is reported "failed" and the others still are; only Temporal
    being unreachable stops the run (every other task would fail too). `progress` is called as tasks are done (an
    activity's heartbeat)."""
    recovery = Recovery()
    window = {"start_date": since} | ({"end_date": _whole_second_after(until)} if until is not None else {})
    finished: dict[str, str] = {}
    finished_ms: dict[str, int] = {}
    for event_type in FINISHED_EVENT_TYPES:
        rows, pages = await asyncio.to_thread(_events, twilio, workspace_sid, event_type=event_type, **window)
        recovery.api_calls += pages
        for row in rows:
            data = getattr(row, "event_data", None)
            sid = (data.get("task_sid") if isinstance(data, dict) else None) or getattr(row, "resource_sid", None)
            if isinstance(sid, str) and sid.startswith("WT"):
                sid = clean_text(sid)  # printed, and sent to Temporal: must be UTF-8
                finished.setdefault(sid, event_type)
                if (ms := _row_ms(row)) is not None:
                    finished_ms[sid] = min(ms, finished_ms.get(sid, ms))
        if progress:
            progress()

    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(task_sid: str) -> ReconcileAction:
        async with gate:
            try:
                action = await _reconcile_task(
                    client, twilio, workspace_sid, task_queue, task_sid, since - history, recovery
                )
            except Exception as exc:  # one task must not stop the others
                if _temporal_down(exc):
                    raise
                action = ReconcileAction(task_sid, "failed", reason=_why(exc))
            if progress:
                progress()
        action.finished = finished[task_sid]
        return action

    tasks = [asyncio.ensure_future(one(task_sid)) for task_sid in sorted(finished)]
    try:
        recovery.actions = list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    failed_ms = [
        finished_ms[a.task_sid] for a in recovery.actions if a.action == "failed" and a.task_sid in finished_ms
    ]
    if failed_ms:
        recovery.earliest_failed = datetime.fromtimestamp(min(failed_ms) / 1000, UTC)
    return recovery


async def reconcile(
    client: Client, twilio, workspace_sid: str, task_queue: str, since: datetime, history: timedelta = timedelta(days=1)
) -> list[ReconcileAction]:
    """`flexsf reconcile`: `recover()` from `since` until now; what it did to each finished task."""
    return (await recover(client, twilio, workspace_sid, task_queue, since, history=history)).actions


async def _reconcile_task(
    client: Client, twilio, workspace_sid: str, task_queue: str, task_sid: str, start: datetime, recovery: Recovery
) -> ReconcileAction:
    if await workflow_in_hand(client, task_sid):
        return ReconcileAction(task_sid, "exists")
    rows, pages = await asyncio.to_thread(_events, twilio, workspace_sid, task_sid=task_sid, start_date=start)
    recovery.api_calls += pages
    events: list[TaskEvent] = sorted(
        (e for e in (event_from_events_api(r, task_sid) for r in rows) if e is not None),
        key=lambda e: e.timestamp_ms,
    )
    if not events:
        # Nothing was started: "started with 0 events" would hide a task that still has no log.
        reason = f"none of its {len(rows)} Events-list row(s) could be read" if rows else "no Events-list rows for it"
        return ReconcileAction(task_sid, "failed", reason=reason)
    for index, event in enumerate(events):
        try:
            await signal_event(client, task_queue, event)
        except WorkflowAlreadyStartedError:
            break  # it finished between two of our events (or someone else started it): it has its log
        except Exception as exc:
            if _temporal_down(exc):
                raise
            reason = f"event {index + 1} of {len(events)} ({event.event_type}) not delivered: {_why(exc)}"
            return ReconcileAction(task_sid, "failed", events=index, reason=reason)
    return ReconcileAction(task_sid, "started", events=len(events))


def _temporal_down(exc: BaseException) -> bool:
    """Unreachable Temporal fails every task alike: the run stops, as it always has."""
    return isinstance(exc, RPCError) and exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


def _why(exc: Exception) -> str:
    """Why a task failed, in words that carry no event content (an exception's message may quote it)."""
    if isinstance(exc, RPCError):
        return f"Temporal refused it ({exc.status.name if exc.status else 'unknown'}: {exc.message})"
    if isinstance(exc, TwilioException):
        status, code = getattr(exc, "status", None), getattr(exc, "code", None)
        return f"Twilio refused to list its events (HTTP {status}, code {code})" if status else type(exc).__name__
    return f"unexpected {type(exc).__name__}"


# ---- visibility queries ----------------------------------------------------------------------------------------------


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tasks_query(
    *,
    stage: str | Stage | None = None,
    worker_sid: str | None = None,
    task_sid: str | None = None,
    channel: str | None = None,
    direction: str | None = None,
    record_id: str | None = None,
    activity_id: str | None = None,
    since: datetime | None = None,
) -> str:
    """A visibility query over task workflows, e.g. `FlexWorkerSid = 'WK…' AND FlexStage = 'awaiting_selection'`."""
    clauses = [f"WorkflowType = {_literal(WORKFLOW_TYPE)}"]
    for key, value in (
        (sa.FLEX_STAGE, stage),
        (sa.FLEX_WORKER_SID, worker_sid),
        (sa.FLEX_TASK_SID, task_sid),
        (sa.FLEX_CHANNEL, channel),
        (sa.FLEX_DIRECTION, direction),
        (sa.SFDC_OBJECT_ID, record_id),
        (sa.SFDC_ACTIVITY_ID, activity_id),
    ):
        if value:
            clauses.append(f"{key.name} = {_literal(str(value))}")
    if since is not None:
        clauses.append(f"StartTime >= {_literal(since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ'))}")
    return " AND ".join(clauses)


def repairable_query(
    task_queue: str | None = None, stages: Iterable[Stage] = REPAIRABLE_STAGES, **filters: str | datetime | None
) -> str:
    """Running task workflows parked in a repairable stage (on `task_queue`, when given; `filters` as
    `tasks_query` takes them)."""
    either = " OR ".join(f"{sa.FLEX_STAGE.name} = {_literal(str(stage))}" for stage in stages)
    query = f"{tasks_query(**filters)} AND ExecutionStatus = 'Running' AND ({either})"  # type: ignore[arg-type]
    return query + (f" AND TaskQueue = {_literal(task_queue)}" if task_queue else "")


async def count_repairable(client: Client, task_queue: str | None = None) -> int:
    """How many tasks wait in a repairable stage now (Temporal's visibility, a second or so behind)."""
    return (await client.count_workflows(repairable_query(task_queue))).count
