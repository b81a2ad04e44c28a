"""TaskRouter's state for one workspace: tasks, reservations, workers and the event log.

Every state change happens under one lock and appends its events to the log while still holding it, so the
log order is the order of the changes and the callback dispatcher receives events in that order.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandboxes.twilio import demo
from sandboxes.twilio.errors import bad_request, not_found, stale_etag
from sandboxes.twilio.faults import Faults
from sandboxes.twilio.sids import new_sid

FINISHED = ("completed", "canceled")
CONCURRENT_WRITER_KEY = "sandbox_concurrent_writes"


@dataclass
class Worker:
    sid: str
    friendly_name: str
    attributes: str
    activity_name: str
    date_created: float

    @property
    def activity_sid(self) -> str:
        return demo.DEMO_ACTIVITIES[self.activity_name]

    @property
    def available(self) -> bool:
        return self.activity_name == "Available"


@dataclass
class Task:
    sid: str
    attributes: str  # kept verbatim as the JSON string the writer sent, as TaskRouter returns it
    channel: str  # unique name
    priority: int
    timeout: int
    workflow_sid: str
    date_created: float
    date_updated: float
    assignment_status: str = "pending"
    reason: str | None = None
    revision: int = 1
    reservation_sid: str | None = None
    finished_at: float | None = None

    @property
    def etag(self) -> str:
        return str(self.revision)

    def attributes_dict(self) -> dict[str, Any]:
        return json.loads(self.attributes)


@dataclass
class Reservation:
    sid: str
    task_sid: str
    worker_sid: str
    reservation_status: str
    date_created: float
    date_updated: float


@dataclass
class Event:
    seq: int
    sid: str
    event_type: str
    description: str
    resource_type: str
    resource_sid: str
    date_ms: int
    params: dict[str, str]  # the callback form, exactly as posted
    task_sid: str | None = None
    reservation_sid: str | None = None
    worker_sid: str | None = None
    task_channel: str | None = None

    def data(self) -> dict[str, str]:
        """`event_data` of the Events resource: the callback's resource-specific parameters in snake_case."""
        base = {
            "EventType",
            "EventDescription",
            "AccountSid",
            "WorkspaceSid",
            "WorkspaceName",
            "ResourceType",
            "ResourceSid",
            "Timestamp",
            "TimestampMs",
            "Sid",
        }
        return {_snake(k): v for k, v in self.params.items() if k not in base}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _etag_matches(if_match: str, etag: str) -> bool:
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') == etag


def _parse_attributes(raw: str) -> str:
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise bad_request("Attributes must be a valid JSON object") from None
    if not isinstance(parsed, dict):
        raise bad_request("Attributes must be a valid JSON object")
    return raw


class TaskRouterState:
    def __init__(
        self,
        *,
        account_sid: str,
        faults: Faults,
        retention_s: float,
        dispatch: Callable[[Event, str], None],
        callback_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.account_sid = account_sid
        self.workspace_sid = demo.DEMO_WORKSPACE_SID
        self.workspace_name = demo.DEMO_WORKSPACE_NAME
        self.faults = faults
        self.retention_s = retention_s
        self._dispatch = dispatch
        self._wall = clock
        self._initial_callback_url = callback_url
        self.lock = threading.RLock()
        self._janitor_wakeup = threading.Condition(self.lock)
        self._stopping = False
        self._janitor: threading.Thread | None = None
        self._reset_locked()

    # ----- lifecycle of the state itself -----

    def _reset_locked(self) -> None:
        self._shift_s = 0.0
        now = self._clock()
        self.event_callback_url: str | None = self._initial_callback_url
        self.events_filter: list[str] | None = None
        self.workspace_created = now
        self.workspace_updated = now
        self.tasks: dict[str, Task] = {}
        self.reservations: dict[str, Reservation] = {}
        self.events: list[Event] = []
        self._event_seq = 0
        self._last_event_ms = 0
        self.workers: dict[str, Worker] = {
            w.sid: Worker(w.sid, w.identity, demo.worker_attributes_json(w), "Available", now)
            for w in demo.DEMO_WORKERS
        }

    def reset(self) -> None:
        with self.lock:
            self._reset_locked()
            self._janitor_wakeup.notify_all()

    def start(self) -> None:
        self._stopping = False
        self._janitor = threading.Thread(target=self._run_janitor, name="twilio-sandbox-purge", daemon=True)
        self._janitor.start()

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self._janitor_wakeup.notify_all()
        if self._janitor:
            self._janitor.join(timeout=5)

    def _run_janitor(self) -> None:
        # TaskRouter deletes finished tasks some time after they complete; one thread sleeps until the next is due.
        with self.lock:
            while not self._stopping:
                now = self._clock()
                self._purge_locked(
                    lambda t, now=now: t.finished_at is not None and t.finished_at + self.retention_s <= now
                )
                due = [t.finished_at + self.retention_s for t in self.tasks.values() if t.finished_at is not None]
                self._janitor_wakeup.wait(timeout=max(0.0, min(due) - now) if due else None)

    def _clock(self) -> float:
        return self._wall() + self._shift_s

    def now(self) -> float:
        """TaskRouter's time: the wall clock, moved by `shift_clock`."""
        return self._clock()

    def shift_clock(self, seconds: float) -> None:
        """Tests: move TaskRouter's time (event timestamps, task age) by `seconds` without waiting; reset() undoes it.
        Event times stay strictly increasing whatever the shift."""
        with self.lock:
            self._shift_s += seconds

    def set_retention(self, seconds: float) -> None:
        with self.lock:
            self.retention_s = seconds
            self._janitor_wakeup.notify_all()

    # ----- workspace -----

    def update_workspace(
        self,
        *,
        event_callback_url: str | None = None,
        events_filter: str | None = None,
        clear_callback_url: bool = False,
    ) -> None:
        with self.lock:
            if clear_callback_url:
                self.event_callback_url = None
            elif event_callback_url is not None:
                self.event_callback_url = event_callback_url or None
            if events_filter is not None:
                self.events_filter = [t.strip() for t in events_filter.split(",") if t.strip()] or None
            self.workspace_updated = self._clock()

    # ----- reads -----

    def task(self, sid: str) -> Task:
        with self.lock:
            return dataclasses.replace(self._task(sid))

    def list_tasks(self, statuses: list[str] | None = None) -> list[Task]:
        with self.lock:
            found = [t for t in self.tasks.values() if not statuses or t.assignment_status in statuses]
            return [dataclasses.replace(t) for t in sorted(found, key=lambda t: (t.date_created, t.sid))]

    def worker(self, sid: str) -> Worker:
        with self.lock:
            worker = self.workers.get(sid)
            if worker is None:
                raise not_found(f"/Workers/{sid}")
            return dataclasses.replace(worker)

    def write_worker_attributes(self, sid: str, patch: dict[str, Any]) -> Worker:
        """An admin edits a worker's attributes (Console, or POST /Workers/{sid} Attributes): keys merged in; later
        reservation events carry them as WorkerAttributes."""
        with self.lock:
            worker = self.workers.get(sid)
            if worker is None:
                raise not_found(f"/Workers/{sid}")
            worker.attributes = json.dumps({**json.loads(worker.attributes), **patch})
            return dataclasses.replace(worker)

    def list_workers(self) -> list[Worker]:
        with self.lock:
            return [dataclasses.replace(w) for w in self.workers.values()]

    def reservation(self, task_sid: str, sid: str) -> Reservation:
        with self.lock:
            self._task(task_sid)
            res = self.reservations.get(sid)
            if res is None or res.task_sid != task_sid:
                raise not_found(f"/Reservations/{sid}")
            return dataclasses.replace(res)

    def list_reservations(self, task_sid: str) -> list[Reservation]:
        with self.lock:
            self._task(task_sid)
            return [dataclasses.replace(r) for r in self.reservations.values() if r.task_sid == task_sid]

    def list_events(self) -> list[Event]:
        with self.lock:
            return list(self.events)

    def _task(self, sid: str) -> Task:
        task = self.tasks.get(sid)
        if task is None:
            raise not_found(f"/Tasks/{sid}")
        return task

    # ----- writes -----

    def create_task(
        self,
        *,
        attributes: str = "{}",
        channel: str | None = None,
        priority: int | None = None,
        timeout: int | None = None,
        workflow_sid: str | None = None,
    ) -> Task:
        _parse_attributes(attributes)
        channel_name = self._channel_name(channel or "default")
        if workflow_sid not in (None, demo.DEMO_WORKFLOW_SID):
            raise bad_request(f"Workflow {workflow_sid} not found in this workspace")
        with self.lock:
            now = self._clock()
            task = Task(
                sid=new_sid("WT"),
                attributes=attributes,
                channel=channel_name,
                priority=priority or 0,
                timeout=timeout or 86400,
                workflow_sid=demo.DEMO_WORKFLOW_SID,
                date_created=now,
                date_updated=now,
            )
            self.tasks[task.sid] = task
            self.faults.choose_task(task.sid)  # callback_drop_task_fraction: decided before its first callback
            self._emit("task.created", task, f"Task {task.sid} created")
            return dataclasses.replace(task)

    def update_task(
        self,
        sid: str,
        *,
        attributes: str | None = None,
        assignment_status: str | None = None,
        reason: str | None = None,
        priority: int | None = None,
        if_match: str | None = None,
    ) -> Task:
        with self.lock:
            task = self._task(sid)
            if attributes is not None and self.faults.take_conflict():
                self._concurrent_write(task)
            if if_match is not None and not _etag_matches(if_match, task.etag):
                raise stale_etag(sid)
            if attributes is not None:
                _parse_attributes(attributes)
            if assignment_status is not None:
                self._check_transition(task, assignment_status, reason)
            if assignment_status is None and task.assignment_status in FINISHED:
                raise bad_request(f"Task {sid} is {task.assignment_status} and can no longer be updated")
            if attributes is not None or priority is not None:
                if attributes is not None:
                    task.attributes = attributes
                if priority is not None:
                    task.priority = priority
                self._touch(task)
                self._emit("task.updated", task, f"Task {sid} updated")
            if assignment_status is not None:
                self._transition(task, assignment_status, reason)
            return dataclasses.replace(task)

    def write_attributes_as_other_writer(self, sid: str, patch: dict[str, Any]) -> Task:
        """Another writer (Flex UI, a plugin) merges keys into the task's attributes."""
        with self.lock:
            task = self._task(sid)
            if task.assignment_status in FINISHED:
                raise bad_request(f"Task {sid} is {task.assignment_status} and can no longer be updated")
            merged = task.attributes_dict() | patch
            task.attributes = json.dumps(merged)
            self._touch(task)
            self._emit("task.updated", task, f"Task {sid} updated")
            return dataclasses.replace(task)

    def delete_task(self, sid: str, *, if_match: str | None = None) -> None:
        with self.lock:
            task = self._task(sid)
            if if_match is not None and not _etag_matches(if_match, task.etag):
                raise stale_etag(sid)
            self._delete_locked(task)

    def reserve(self, task_sid: str, worker_sid: str) -> Reservation:
        with self.lock:
            task = self._task(task_sid)
            if worker_sid not in self.workers:
                raise not_found(f"/Workers/{worker_sid}")
            if task.assignment_status != "pending":
                raise bad_request(f"Task {task_sid} is {task.assignment_status}; only a pending task can be reserved")
            now = self._clock()
            res = Reservation(new_sid("WR"), task_sid, worker_sid, "pending", now, now)
            self.reservations[res.sid] = res
            task.reservation_sid = res.sid
            task.assignment_status = "reserved"
            self._touch(task)
            self._emit("reservation.created", task, f"Reservation {res.sid} created for Worker {worker_sid}", res)
            return dataclasses.replace(res)

    def accept(self, task_sid: str) -> Reservation:
        with self.lock:
            task = self._task(task_sid)
            res = self._current_reservation(task)
            if res.reservation_status != "pending" or task.assignment_status != "reserved":
                raise bad_request(
                    f"Reservation {res.sid} is {res.reservation_status}; only a pending one can be accepted"
                )
            res.reservation_status = "accepted"
            res.date_updated = self._clock()
            task.assignment_status = "assigned"
            self._touch(task)
            self._emit("reservation.accepted", task, f"Reservation {res.sid} accepted by Worker {res.worker_sid}", res)
            return dataclasses.replace(res)

    def wrapup(self, task_sid: str) -> Task:
        return self.update_task(task_sid, assignment_status="wrapping")

    def complete(self, task_sid: str, reason: str) -> Task:
        return self.update_task(task_sid, assignment_status="completed", reason=reason)

    def cancel(self, task_sid: str, reason: str) -> Task:
        return self.update_task(task_sid, assignment_status="canceled", reason=reason)

    def purge_finished(self) -> list[str]:
        with self.lock:
            return self._purge_locked(lambda t: t.finished_at is not None)

    # ----- internals -----

    def _channel_name(self, channel: str) -> str:
        if channel in demo.DEMO_TASK_CHANNELS:
            return channel
        for name, sid in demo.DEMO_TASK_CHANNELS.items():
            if sid == channel:
                return name
        raise bad_request(f"TaskChannel {channel} not found in this workspace")

    def _current_reservation(self, task: Task) -> Reservation:
        if task.reservation_sid is None:
            raise bad_request(f"Task {task.sid} has no reservation")
        return self.reservations[task.reservation_sid]

    def _touch(self, task: Task) -> None:
        task.revision += 1
        task.date_updated = self._clock()

    def _concurrent_write(self, task: Task) -> None:
        attrs = task.attributes_dict()
        attrs[CONCURRENT_WRITER_KEY] = int(attrs.get(CONCURRENT_WRITER_KEY, 0)) + 1
        task.attributes = json.dumps(attrs)
        self._touch(task)
        self._emit("task.updated", task, f"Task {task.sid} updated")

    def _check_transition(self, task: Task, status: str, reason: str | None) -> None:
        allowed_from = {
            "canceled": ("pending", "reserved"),
            "wrapping": ("assigned",),
            "completed": ("assigned", "wrapping"),
        }
        if status not in allowed_from:
            raise bad_request(f"AssignmentStatus {status!r} cannot be set; use canceled, wrapping or completed")
        if task.assignment_status not in allowed_from[status]:
            raise bad_request(
                f"Task {task.sid} is {task.assignment_status}; it cannot move to {status} "
                f"(allowed from {', '.join(allowed_from[status])})"
            )
        if status in FINISHED and not reason:
            raise bad_request(f"Reason is required to move a task to {status}")

    def _transition(self, task: Task, status: str, reason: str | None) -> None:
        res = self.reservations.get(task.reservation_sid) if task.reservation_sid else None
        task.assignment_status = status
        if status in FINISHED:
            task.reason = reason
            task.finished_at = self._clock()
            self._janitor_wakeup.notify_all()
        self._touch(task)
        now = self._clock()
        if status == "wrapping":
            self._emit("task.wrapup", task, f"Task {task.sid} wrapping up")
            if res:
                res.reservation_status, res.date_updated = "wrapping", now
                self._emit("reservation.wrapup", task, f"Reservation {res.sid} wrapping up", res)
        elif status == "completed":
            self._emit("task.completed", task, f"Task {task.sid} completed")
            if res:
                res.reservation_status, res.date_updated = "completed", now
                self._emit("reservation.completed", task, f"Reservation {res.sid} completed", res)
        elif status == "canceled":
            self._emit("task.canceled", task, f"Task {task.sid} canceled")
            if res and res.reservation_status == "pending":
                res.reservation_status, res.date_updated = "canceled", now
                self._emit("reservation.canceled", task, f"Reservation {res.sid} canceled", res)

    def _purge_locked(self, due: Callable[[Task], bool]) -> list[str]:
        purged = [t for t in self.tasks.values() if due(t)]
        for task in purged:
            self._delete_locked(task)
        return [t.sid for t in purged]

    def _delete_locked(self, task: Task) -> None:
        del self.tasks[task.sid]
        for sid in [r.sid for r in self.reservations.values() if r.task_sid == task.sid]:
            del self.reservations[sid]
        self._emit("task.deleted", task, f"Task {task.sid} deleted")

    def _emit(self, event_type: str, task: Task, description: str, res: Reservation | None = None) -> None:
        # Event times are strictly increasing per workspace, so event_date_ms alone orders the log.
        date_ms = max(int(self._clock() * 1000), self._last_event_ms + 1)
        self._last_event_ms = date_ms
        now = date_ms / 1000
        self._event_seq += 1
        event_sid = new_sid("EV")
        params: dict[str, str] = {
            "EventType": event_type,
            "EventDescription": description,
            "AccountSid": self.account_sid,
            "WorkspaceSid": self.workspace_sid,
            "WorkspaceName": self.workspace_name,
            "ResourceType": "Reservation" if res else "Task",
            "ResourceSid": res.sid if res else task.sid,
            "Timestamp": str(int(now)),
            "TimestampMs": str(date_ms),
            "Sid": event_sid,
            "TaskSid": task.sid,
            "TaskAttributes": task.attributes,
            "TaskAge": str(int(now - task.date_created)),
            "TaskPriority": str(task.priority),
            "TaskAssignmentStatus": task.assignment_status,
            "TaskChannelSid": demo.DEMO_TASK_CHANNELS[task.channel],
            "TaskChannelUniqueName": task.channel,
            "TaskQueueSid": demo.DEMO_TASK_QUEUE_SID,
            "TaskQueueName": demo.DEMO_TASK_QUEUE_NAME,
            "WorkflowSid": task.workflow_sid,
            "WorkflowName": demo.DEMO_WORKFLOW_NAME,
            "TaskDateCreated": str(int(task.date_created)),
            "TaskTimeout": str(task.timeout),
        }
        if task.assignment_status == "canceled" and task.reason:
            params["TaskCanceledReason"] = task.reason
        if task.assignment_status == "completed" and task.reason:
            params["TaskCompletedReason"] = task.reason
        worker = self.workers.get(res.worker_sid) if res else None
        if res and worker:
            params |= {
                "ReservationSid": res.sid,
                "WorkerSid": worker.sid,
                "WorkerName": worker.friendly_name,
                "WorkerAttributes": worker.attributes,
                "WorkerActivitySid": worker.activity_sid,
                "WorkerActivityName": worker.activity_name,
            }
        event = Event(
            seq=self._event_seq,
            sid=event_sid,
            event_type=event_type,
            description=description,
            resource_type=params["ResourceType"],
            resource_sid=params["ResourceSid"],
            date_ms=date_ms,
            params=params,
            task_sid=task.sid,
            reservation_sid=res.sid if res else None,
            worker_sid=res.worker_sid if res else None,
            task_channel=task.channel,
        )
        self.events.append(event)
        url = self.event_callback_url
        if url and (self.events_filter is None or event_type in self.events_filter):
            self._dispatch(event, url)
