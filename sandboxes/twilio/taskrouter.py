"""TaskRouter v1 REST resources: Workspace, Tasks, Reservations, Workers, Events, rendered as Twilio does."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from sandboxes.twilio import demo
from sandboxes.twilio.errors import bad_request, not_found
from sandboxes.twilio.server import Counters, Request, Response, Route, route
from sandboxes.twilio.state import Event, Reservation, Task, TaskRouterState, Worker
from sandboxes.twilio.timefmt import iso, parse_iso

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
DEFAULT_EVENTS_WINDOW_S = 15 * 60  # Events list without StartDate/Minutes covers the last 15 minutes


def _int_param(req: Request, name: str) -> int | None:
    value = req.param(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None


# Counter of attribute writes that arrived without If-Match: each could have overwritten another writer's change.
UNCONDITIONAL_ATTRIBUTE_WRITES = "task_update_without_if_match"


class TaskRouterApi:
    def __init__(self, state: TaskRouterState, base_url: Callable[[], str], counters: Counters | None = None) -> None:
        self.state = state
        self._base_url = base_url
        self._counters = counters or Counters()

    def routes(self) -> list[Route]:
        ws = r"/v1/Workspaces/(?P<ws>[^/]+)"
        return [
            route("GET", ws, "workspace_fetch", self.fetch_workspace),
            route("POST", ws, "workspace_update", self.update_workspace),
            route("GET", ws + "/Tasks", "task_list", self.list_tasks),
            route("POST", ws + "/Tasks", "task_create", self.create_task),
            route("GET", ws + "/Tasks/(?P<sid>[^/]+)", "task_fetch", self.fetch_task),
            route("POST", ws + "/Tasks/(?P<sid>[^/]+)", "task_update", self.update_task),
            route("DELETE", ws + "/Tasks/(?P<sid>[^/]+)", "task_delete", self.delete_task),
            route("GET", ws + "/Tasks/(?P<task>[^/]+)/Reservations", "reservation_list", self.list_reservations),
            route(
                "GET",
                ws + "/Tasks/(?P<task>[^/]+)/Reservations/(?P<sid>[^/]+)",
                "reservation_fetch",
                self.fetch_reservation,
            ),
            route("GET", ws + "/Workers", "worker_list", self.list_workers),
            route("GET", ws + "/Workers/(?P<sid>[^/]+)", "worker_fetch", self.fetch_worker),
            route("GET", ws + "/Events", "events_list", self.list_events),
            route("GET", ws + "/Events/(?P<sid>[^/]+)", "event_fetch", self.fetch_event),
        ]

    # ----- rendering -----

    @property
    def ws_url(self) -> str:
        return f"{self._base_url()}/v1/Workspaces/{self.state.workspace_sid}"

    def render_workspace(self) -> dict[str, Any]:
        s = self.state
        return {
            "account_sid": s.account_sid,
            "date_created": iso(s.workspace_created),
            "date_updated": iso(s.workspace_updated),
            "default_activity_name": "Offline",
            "default_activity_sid": demo.DEMO_ACTIVITIES["Offline"],
            "event_callback_url": s.event_callback_url,
            "events_filter": ",".join(s.events_filter) if s.events_filter else None,
            "friendly_name": s.workspace_name,
            "multi_task_enabled": True,
            "prioritize_queue_order": "FIFO",
            "sid": s.workspace_sid,
            "timeout_activity_name": "Offline",
            "timeout_activity_sid": demo.DEMO_ACTIVITIES["Offline"],
            "url": self.ws_url,
            "links": {
                name: f"{self.ws_url}/{name.title().replace('_', '')}"
                for name in ("tasks", "workers", "events", "task_queues", "workflows", "activities")
            },
        }

    def render_task(self, task: Task) -> dict[str, Any]:
        url = f"{self.ws_url}/Tasks/{task.sid}"
        return {
            "account_sid": self.state.account_sid,
            "addons": "{}",
            "age": int(self.state.now() - task.date_created),
            "assignment_status": task.assignment_status,
            "attributes": task.attributes,
            "date_created": iso(task.date_created),
            "date_updated": iso(task.date_updated),
            "ignore_capacity": False,
            "priority": task.priority,
            "reason": task.reason,
            "routing_target": None,
            "sid": task.sid,
            "task_channel_sid": demo.DEMO_TASK_CHANNELS[task.channel],
            "task_channel_unique_name": task.channel,
            "task_queue_entered_date": iso(task.date_created),
            "task_queue_friendly_name": demo.DEMO_TASK_QUEUE_NAME,
            "task_queue_sid": demo.DEMO_TASK_QUEUE_SID,
            "timeout": task.timeout,
            "url": url,
            "virtual_start_time": iso(task.date_created),
            "workflow_friendly_name": demo.DEMO_WORKFLOW_NAME,
            "workflow_sid": task.workflow_sid,
            "workspace_sid": self.state.workspace_sid,
            "links": {
                "reservations": f"{url}/Reservations",
                "task_queue": f"{self.ws_url}/TaskQueues/{demo.DEMO_TASK_QUEUE_SID}",
                "workflow": f"{self.ws_url}/Workflows/{task.workflow_sid}",
                "workspace": self.ws_url,
            },
        }

    def render_reservation(self, res: Reservation) -> dict[str, Any]:
        worker = self.state.workers.get(res.worker_sid)
        url = f"{self.ws_url}/Tasks/{res.task_sid}/Reservations/{res.sid}"
        return {
            "account_sid": self.state.account_sid,
            "date_created": iso(res.date_created),
            "date_updated": iso(res.date_updated),
            "reservation_status": res.reservation_status,
            "sid": res.sid,
            "task_sid": res.task_sid,
            "worker_name": worker.friendly_name if worker else None,
            "worker_sid": res.worker_sid,
            "workspace_sid": self.state.workspace_sid,
            "url": url,
            "links": {
                "task": f"{self.ws_url}/Tasks/{res.task_sid}",
                "worker": f"{self.ws_url}/Workers/{res.worker_sid}",
                "workspace": self.ws_url,
            },
        }

    def render_worker(self, worker: Worker) -> dict[str, Any]:
        url = f"{self.ws_url}/Workers/{worker.sid}"
        return {
            "account_sid": self.state.account_sid,
            "activity_name": worker.activity_name,
            "activity_sid": worker.activity_sid,
            "attributes": worker.attributes,
            "available": worker.available,
            "date_created": iso(worker.date_created),
            "date_status_changed": iso(worker.date_created),
            "date_updated": iso(worker.date_created),
            "friendly_name": worker.friendly_name,
            "sid": worker.sid,
            "workspace_sid": self.state.workspace_sid,
            "url": url,
            "links": {
                "channels": f"{url}/Channels",
                "reservations": f"{url}/Reservations",
                "activity": f"{self.ws_url}/Activities/{worker.activity_sid}",
                "workspace": self.ws_url,
            },
        }

    def render_event(self, event: Event) -> dict[str, Any]:
        resource_url = (
            f"{self.ws_url}/Tasks/{event.task_sid}/Reservations/{event.resource_sid}"
            if event.resource_type == "Reservation"
            else f"{self.ws_url}/Tasks/{event.resource_sid}"
        )
        return {
            "account_sid": self.state.account_sid,
            "actor_sid": self.state.workspace_sid,
            "actor_type": "workspace",
            "actor_url": self.ws_url,
            "description": event.description,
            "event_data": event.data(),
            "event_date": iso(event.date_ms / 1000),
            "event_date_ms": event.date_ms,
            "event_type": event.event_type,
            "resource_sid": event.resource_sid,
            "resource_type": event.resource_type,
            "resource_url": resource_url,
            "sid": event.sid,
            "source": "twilio",
            "source_ip_address": "127.0.0.1",
            "url": f"{self.ws_url}/Events/{event.sid}",
            "workspace_sid": self.state.workspace_sid,
            "links": {"workspace": self.ws_url},
        }

    # ----- handlers -----

    def _check_ws(self, match: re.Match[str]) -> None:
        if match["ws"] != self.state.workspace_sid:
            raise not_found(f"/Workspaces/{match['ws']}")

    def _task_response(self, task: Task, status: int = 200, *, etag: bool = True) -> Response:
        return Response(status, self.render_task(task), {"ETag": task.etag} if etag else {})

    def fetch_workspace(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        with self.state.lock:
            return Response(200, self.render_workspace())

    def update_workspace(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        self.state.update_workspace(
            event_callback_url=req.param("EventCallbackUrl"), events_filter=req.param("EventsFilter")
        )
        with self.state.lock:
            return Response(200, self.render_workspace())

    def create_task(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        task = self.state.create_task(
            attributes=req.param("Attributes") or "{}",
            channel=req.param("TaskChannel"),
            priority=_int_param(req, "Priority"),
            timeout=_int_param(req, "Timeout"),
            workflow_sid=req.param("WorkflowSid"),
        )
        return self._task_response(task, 201)

    def fetch_task(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        return self._task_response(
            self.state.task(match["sid"]), etag=not self.state.faults.config.task_fetch_without_etag
        )

    def update_task(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        if req.param("Attributes") is not None and not req.headers.get("If-Match"):
            self._counters.add(UNCONDITIONAL_ATTRIBUTE_WRITES)
        task = self.state.update_task(
            match["sid"],
            attributes=req.param("Attributes"),
            assignment_status=req.param("AssignmentStatus"),
            reason=req.param("Reason"),
            priority=_int_param(req, "Priority"),
            if_match=req.headers.get("If-Match"),
        )
        return self._task_response(task)

    def delete_task(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        self.state.delete_task(match["sid"], if_match=req.headers.get("If-Match"))
        return Response(204)

    def list_tasks(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        tasks = self.state.list_tasks(req.params("AssignmentStatus") or None)
        return self._page(
            req, "tasks", [self.render_task(t) for t in tasks], {"AssignmentStatus": req.params("AssignmentStatus")}
        )

    def list_reservations(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        found = self.state.list_reservations(match["task"])
        status = req.param("ReservationStatus")
        with self.state.lock:
            rendered = [self.render_reservation(r) for r in found if not status or r.reservation_status == status]
        return self._page(req, "reservations", rendered, {"ReservationStatus": status})

    def fetch_reservation(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        res = self.state.reservation(match["task"], match["sid"])
        with self.state.lock:
            return Response(200, self.render_reservation(res))

    def list_workers(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        return self._page(req, "workers", [self.render_worker(w) for w in self.state.list_workers()], {})

    def fetch_worker(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        return Response(200, self.render_worker(self.state.worker(match["sid"])))

    def fetch_event(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        for event in self.state.list_events():
            if event.sid == match["sid"]:
                return Response(200, self.render_event(event))
        raise not_found(f"/Events/{match['sid']}")

    def list_events(self, req: Request, match: re.Match[str]) -> Response:
        self._check_ws(match)
        now = time.time()
        start, end = self._events_window(req, now)
        filters = {
            "task_sid": req.param("TaskSid"),
            "reservation_sid": req.param("ReservationSid"),
            "worker_sid": req.param("WorkerSid"),
            "event_type": req.param("EventType"),
            "task_channel": req.param("TaskChannel"),
            "sid": req.param("Sid"),
        }
        workflow, queue = req.param("WorkflowSid"), req.param("TaskQueueSid")
        if workflow not in (None, demo.DEMO_WORKFLOW_SID) or queue not in (None, demo.DEMO_TASK_QUEUE_SID):
            selected: list[Event] = []
        else:
            selected = [
                e
                for e in self.state.list_events()
                if start * 1000 <= e.date_ms <= end * 1000
                and all(v is None or getattr(e, k) == v for k, v in filters.items())
            ]
        # Newest first, paged by a cursor (the seq of the last event sent) so new events never shift a page.
        selected.reverse()
        cursor = req.param("PageToken")
        if cursor and cursor.startswith("PE"):
            try:
                before = int(cursor[2:])
            except ValueError:
                raise bad_request("Invalid PageToken") from None
            selected = [e for e in selected if e.seq < before]
        query = {
            "TaskSid": filters["task_sid"],
            "ReservationSid": filters["reservation_sid"],
            "WorkerSid": filters["worker_sid"],
            "EventType": filters["event_type"],
            "TaskChannel": filters["task_channel"],
            "Sid": filters["sid"],
            "WorkflowSid": workflow,
            "TaskQueueSid": queue,
            "StartDate": req.param("StartDate"),
            "EndDate": req.param("EndDate"),
            "Minutes": req.param("Minutes"),
        }
        size = self._page_size(req)
        page_events = selected[:size]
        next_token = f"PE{page_events[-1].seq}" if len(selected) > size else None
        return self._page(
            req, "events", [self.render_event(e) for e in page_events], query, already_paged=True, next_token=next_token
        )

    @staticmethod
    def _events_window(req: Request, now: float) -> tuple[float, float]:
        try:
            end = parse_iso(req.param("EndDate")) if req.param("EndDate") else now + 1
            if req.param("StartDate"):
                start = parse_iso(req.param("StartDate"))  # type: ignore[arg-type]
            elif _int_param(req, "Minutes") is not None:
                start = now - 60 * (_int_param(req, "Minutes") or 0)
            else:
                start = now - DEFAULT_EVENTS_WINDOW_S
        except ValueError:
            raise bad_request("StartDate and EndDate must be ISO-8601 date-times") from None
        return start, end

    # ----- paging, the Twilio way: `meta` with `key` and absolute page URLs -----

    @staticmethod
    def _page_size(req: Request) -> int:
        size = _int_param(req, "PageSize") or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise bad_request(f"PageSize must be between 1 and {MAX_PAGE_SIZE}")
        return size

    def _page(
        self,
        req: Request,
        key: str,
        items: list[dict[str, Any]],
        query: dict[str, Any],
        *,
        already_paged: bool = False,
        next_token: str | None = None,
    ) -> Response:
        size = self._page_size(req)
        page = _int_param(req, "Page") or 0
        if not already_paged:
            offset = page * size
            items, more = items[offset : offset + size], len(items) > offset + size
            next_token = f"PT{offset + size}" if more else None
        base = f"{self._base_url()}{req.path}"
        kept = [(k, v) for k, vs in query.items() if vs for v in (vs if isinstance(vs, list) else [vs])]

        def page_url(number: int, token: str | None) -> str:
            params = kept + [("PageSize", str(size)), ("Page", str(number))]
            if token:
                params.append(("PageToken", token))
            return f"{base}?{urlencode(params)}"

        meta = {
            "first_page_url": page_url(0, None),
            "key": key,
            "next_page_url": page_url(page + 1, next_token) if next_token else None,
            "page": page,
            "page_size": size,
            "previous_page_url": None,
            "url": page_url(page, req.param("PageToken")),
        }
        return Response(200, {key: items, "meta": meta})
