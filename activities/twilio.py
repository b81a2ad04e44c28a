"""Twilio activities: the task's flags, its attributes, and what TaskRouter says happened to it."""

from __future__ import annotations

import json

from temporalio.exceptions import ApplicationError
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from activities.errors import twilio_errors, twilio_status
from activities.interfaces import TwilioSteps, implements
from activities.models import (
    ReconcileRequest,
    ReconcileResult,
    SaveRecordRequest,
    SaveRecordResult,
)
from flexsf import metrics, vocabulary
from flexsf.models import TaskEvent
from flexsf.task_events import event_from_events_api
from flexsf.twilio_client import response_header

# Concurrent writers (Flex UI, Studio, other plugins) may keep moving the ETag; past this, let Temporal back off.
MAX_MERGE_ATTEMPTS = 8
FINISHED_EVENTS = {*vocabulary.FINISHED_EVENTS, *vocabulary.GONE_EVENTS}
FINISHED_STATUSES = {"completed", "canceled"}


def merged_attributes(current: dict, record_id: str, record_type: str | None) -> dict | None:
    """The task attributes with the record added, or None when they already hold it."""
    if current.get("sfdcObjectId") == record_id and current.get("sfdcObjectType") == record_type:
        return None
    merged = dict(current)
    merged["sfdcObjectId"] = record_id
    if record_type:
        merged["sfdcObjectType"] = record_type
    return merged


def unseen_and_trimmed(events: list[TaskEvent], seen: set[str], attributes_at: int) -> list[TaskEvent]:
    """What the workflow does not know yet, and only what it uses: the attributes of the newest event (when newer
    than the ones it holds) and the worker's attributes of an acceptance (the log's owner). Sorted by time."""
    fresh = [e for e in events if e.sid not in seen]
    newest = max((e for e in fresh if e.task_attributes), key=lambda e: e.timestamp_ms, default=None)
    trimmed = []
    for event in fresh:
        keep_attributes = event is newest and event.timestamp_ms >= attributes_at
        keep_worker = event.event_type == vocabulary.RESERVATION_ACCEPTED
        trimmed.append(
            event.model_copy(
                update={
                    "task_attributes": event.task_attributes if keep_attributes else {},
                    "worker_attributes": event.worker_attributes if keep_worker else {},
                }
            )
        )
    return trimmed


def _refused(exc: TwilioException) -> tuple[int, int | None] | None:
    """(HTTP status, Twilio error code) when Twilio refused our credentials (401/403), else None."""
    status, code = twilio_status(exc)
    return (status, code) if status in (401, 403) else None


class TwilioActivities(TwilioSteps):
    def __init__(self, client: Client, workspace_sid: str):
        self._client = client
        self._workspace_sid = workspace_sid

    def _tasks(self):
        return self._client.taskrouter.v1.workspaces(self._workspace_sid).tasks

    @implements(TwilioSteps.save_record_on_task)
    def save_record_on_task(self, req: SaveRecordRequest) -> SaveRecordResult:
        """Merge sfdcObjectId/sfdcObjectType into the task attributes, guarded by the ETag."""
        metrics.note_attempt("twilio")
        task = self._tasks()(req.task_sid)
        for attempt in range(1, MAX_MERGE_ATTEMPTS + 1):
            with twilio_errors("save_record_on_task"):
                try:
                    fetched = task.fetch_with_http_info()
                except TwilioRestException as exc:
                    if exc.status == 404:
                        return SaveRecordResult(written=False, attempts=attempt, task_gone=True)
                    raise
                if fetched.data.assignment_status in FINISHED_STATUSES:
                    # TaskRouter refuses attribute updates of a finished task; the workflow still logs the record.
                    return SaveRecordResult(written=False, attempts=attempt, task_gone=True)
                attributes = json.loads(fetched.data.attributes or "{}")
                merged = merged_attributes(attributes, req.record.id, req.record.type)
                if merged is None:
                    return SaveRecordResult(written=False, attempts=attempt)
                etag = response_header(fetched.headers, "ETag")
                if not etag:
                    # Without If-Match TaskRouter applies the write unconditionally, over whatever the Flex UI or
                    # another plugin wrote since our fetch; a later fetch may carry the ETag, so let Temporal retry.
                    raise ApplicationError(
                        f"save_record_on_task: TaskRouter answered the fetch of {req.task_sid} without an ETag; "
                        "the attributes are not written without If-Match",
                        type=vocabulary.TASK_ATTRIBUTES_UNGUARDED,
                    )
                try:
                    task.update_with_http_info(attributes=json.dumps(merged), if_match=etag)
                    return SaveRecordResult(written=True, attempts=attempt)
                except TwilioRestException as exc:
                    if exc.status == 412:
                        continue
                    if exc.status == 404:
                        return SaveRecordResult(written=False, attempts=attempt, task_gone=True)
                    if exc.status == 400 and self._finished(task):
                        return SaveRecordResult(written=False, attempts=attempt, task_gone=True)
                    raise
        raise ApplicationError(
            f"save_record_on_task: the task's attributes changed under us {MAX_MERGE_ATTEMPTS} times in a row",
            type=vocabulary.TASK_ATTRIBUTES_CONTENDED,
        )

    @staticmethod
    def _finished(task) -> bool:
        """Whether the task completed or was canceled (or vanished) since we fetched it."""
        try:
            return task.fetch().assignment_status in FINISHED_STATUSES
        except TwilioRestException as exc:
            if exc.status == 404:
                return True
            raise

    @implements(TwilioSteps.reconcile_task)
    def reconcile_task(self, req: ReconcileRequest) -> ReconcileResult:
        """Ask TaskRouter's Events list what happened to a task whose callbacks went quiet."""
        metrics.note_attempt("twilio")
        with twilio_errors("reconcile_task"):
            try:
                rows = self._client.taskrouter.v1.workspaces(self._workspace_sid).events.list(
                    task_sid=req.task_sid, start_date=req.since or values.unset
                )
            except TwilioException as exc:
                if (refused := _refused(exc)) is None:
                    raise
                # A key without this permission stays without it: retrying for half an hour only hides the cause.
                status, code = refused
                raise ApplicationError(
                    f"reconcile_task: Twilio refused to list the TaskRouter Events of workspace {self._workspace_sid} "
                    f"(HTTP {status}, code {code}): the worker's credentials may not read TaskRouter Events. "
                    "If TWILIO_API_KEY is a restricted key, grant it read access to the workspace's Events "
                    "(or use a standard key); otherwise check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
                    type=vocabulary.TWILIO_CONFIGURATION,
                    non_retryable=True,
                ) from None
        events = [e for e in (event_from_events_api(row, req.task_sid) for row in rows) if e is not None]
        events.sort(key=lambda e: e.timestamp_ms)
        if any(e.event_type in FINISHED_EVENTS for e in events):
            status = "finished"
        else:
            status = "active" if events else "missing"
        return ReconcileResult(status=status, events=unseen_and_trimmed(events, set(req.seen), req.attributes_at))
