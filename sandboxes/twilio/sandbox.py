"""`TwilioSandbox`: the whole sandbox in one object, startable in-process, and its Python control API.

The HTTP control API (`/__sandbox__/...`, see control.py) calls these same methods, so a test driving the
sandbox in-process and a shell script driving `flexsf sandbox twilio` get the same behaviour.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from sandboxes.twilio import control, copilot, demo, flex, tokens
from sandboxes.twilio.callbacks import CallbackDispatcher, Delivery
from sandboxes.twilio.errors import not_found
from sandboxes.twilio.faults import Faults
from sandboxes.twilio.flex import FlexConfiguration
from sandboxes.twilio.server import Counters, Router, SandboxHTTPServer
from sandboxes.twilio.state import TaskRouterState
from sandboxes.twilio.taskrouter import TaskRouterApi
from sandboxes.twilio.tokens import TokenAuthority

log = logging.getLogger("sandboxes.twilio")

DEFAULT_RETENTION_S = 300.0  # TaskRouter keeps finished tasks for a few minutes; the exact time is undocumented


class TwilioSandbox:
    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        callback_url: str | None = None,
        retention_s: float = DEFAULT_RETENTION_S,
        auth_token: str | None = None,
        api_key_secret: str | None = None,
        seed: int | None = None,
        callback_workers: int = 8,
    ) -> None:
        self.host = host
        self.port = port
        self.account_sid = demo.DEMO_ACCOUNT_SID
        self.auth_token = auth_token or secrets.token_hex(16)
        self.api_key_sid = demo.DEMO_API_KEY_SID
        self.api_key_secret = api_key_secret or secrets.token_urlsafe(24)
        self.workspace_sid = demo.DEMO_WORKSPACE_SID
        self.workflow_sid = demo.DEMO_WORKFLOW_SID
        self.task_queue_sid = demo.DEMO_TASK_QUEUE_SID
        self._initial_retention_s = retention_s
        self.faults = Faults(seed)
        self._counters = Counters()
        self._dispatcher = CallbackDispatcher(self.auth_token, self.faults, callback_workers)
        self.state = TaskRouterState(
            account_sid=self.account_sid,
            faults=self.faults,
            retention_s=retention_s,
            dispatch=self._dispatcher.submit,
            callback_url=callback_url,
        )
        self.flex_configuration = FlexConfiguration(self.account_sid)
        # Agent Copilot's wrap-up notes webhook: off until a URL is configured (as in Console).
        self.copilot = copilot.CopilotNotes(self.auth_token, self.account_sid)
        self._tokens = TokenAuthority(
            account_sid=self.account_sid, api_key_sid=self.api_key_sid, secret=secrets.token_hex(32)
        )
        self._taskrouter = TaskRouterApi(self.state, lambda: self.url, self._counters)
        self._router = Router(faults=self.faults, counters=self._counters, credentials=self._credentials)
        self._router.add(
            *self._taskrouter.routes(),
            *flex.routes(self.flex_configuration, lambda: self.url),
            *tokens.routes(self._tokens, self.account_sid, self.faults),
            *control.routes(self),
            *copilot.routes(self),
        )
        self._server: SandboxHTTPServer | None = None

    # ----- running -----

    def start(self) -> TwilioSandbox:
        self._server = SandboxHTTPServer((self.host, self.port), self._router)
        self.port = self._server.server_address[1]
        self._dispatcher.start()
        self.state.start()
        self._server.start_in_thread()
        log.info("twilio sandbox listening on %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.state.stop()
        self._dispatcher.stop()
        self.copilot.stop()

    def __enter__(self) -> TwilioSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"{self.url}/__sandbox__"

    @property
    def workers(self) -> list[dict[str, Any]]:
        return [w.summary() for w in demo.DEMO_WORKERS]

    @property
    def info(self) -> dict[str, Any]:
        """Everything a client needs to talk to this sandbox (includes its credentials: it is a sandbox)."""
        return {
            "url": self.url,
            "control_url": self.control_url,
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "api_key_sid": self.api_key_sid,
            "api_key_secret": self.api_key_secret,
            "workspace_sid": self.workspace_sid,
            "workflow_sid": self.workflow_sid,
            "task_queue_sid": self.task_queue_sid,
            "task_channels": dict(demo.DEMO_TASK_CHANNELS),
            "callback_url": self.state.event_callback_url,
            "copilot_notes_url": self.copilot.url,
            "retention_s": self.state.retention_s,
            "workers": self.workers,
        }

    def _credentials(self) -> set[tuple[str, str]]:
        return {(self.account_sid, self.auth_token), (self.api_key_sid, self.api_key_secret)}

    # ----- scripting a task's life (what callers and agents do in real Flex) -----

    def create_task(
        self,
        attributes: dict[str, Any] | None = None,
        channel: str = "voice",
        priority: int = 0,
        timeout: int | None = None,
    ) -> dict[str, Any]:
        """An inbound task, as Flex's Studio/Conversations flow would create it; emits task.created."""
        task = self.state.create_task(
            attributes=json.dumps(attributes or {}), channel=channel, priority=priority, timeout=timeout
        )
        return self._taskrouter.render_task(task)

    def reserve(self, task_sid: str, worker_sid: str | None = None) -> dict[str, Any]:
        """Offer the task to a worker (default: the first demo agent); emits reservation.created."""
        res = self.state.reserve(task_sid, worker_sid or demo.DEMO_WORKERS[0].sid)
        return self._taskrouter.render_reservation(res)

    def accept(self, task_sid: str) -> dict[str, Any]:
        """The agent accepts; the task becomes assigned; emits reservation.accepted."""
        return self._taskrouter.render_reservation(self.state.accept(task_sid))

    def wrapup(self, task_sid: str) -> dict[str, Any]:
        """The call ends; emits task.wrapup and reservation.wrapup (and copilot's note_created, when configured)."""
        task = self._taskrouter.render_task(self.state.wrapup(task_sid))
        self.copilot.wrapped_up(task)
        return task

    def complete(self, task_sid: str, reason: str = "Task completed by agent") -> dict[str, Any]:
        """Emits task.completed and reservation.completed (and copilot's note_updated, when configured)."""
        task = self._taskrouter.render_task(self.state.complete(task_sid, reason))
        self.copilot.completed(task)
        return task

    def cancel(self, task_sid: str, reason: str = "Task canceled") -> dict[str, Any]:
        """Only a pending or reserved task can be canceled; emits task.canceled (+ reservation.canceled)."""
        return self._taskrouter.render_task(self.state.cancel(task_sid, reason))

    def write_worker_attributes(self, worker_sid: str, patch: dict[str, Any]) -> None:
        """An admin merges keys into a worker's attributes (`sfdcUserId`, a changed `email`)."""
        self.state.write_worker_attributes(worker_sid, patch)

    def write_attributes(self, task_sid: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Another writer (the Flex UI) merges keys into the attributes: bumps the ETag, emits task.updated."""
        return self._taskrouter.render_task(self.state.write_attributes_as_other_writer(task_sid, patch))

    def lifecycle(
        self,
        attributes: dict[str, Any] | None = None,
        channel: str = "voice",
        worker_sid: str | None = None,
        wrapup: bool = False,
        complete: bool = False,
        reason: str = "Task completed by agent",
    ) -> dict[str, Any]:
        """create -> reserve -> accept, and optionally -> wrapup -> complete. Returns the task as it ends up."""
        sid = self.create_task(attributes, channel)["sid"]
        self.reserve(sid, worker_sid)
        self.accept(sid)
        if wrapup or complete:
            self.wrapup(sid)
        if complete:
            self.complete(sid, reason)
        return self.task(sid)

    def start_outbound_call(
        self,
        worker_sid: str,
        destination: str,
        caller_id: str | None = None,
        task_attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What Flex's StartOutboundCall action produces: a voice task already reserved by and assigned to the
        calling worker, carrying the caller's taskAttributes."""
        attributes: dict[str, Any] = {
            "type": "outbound",
            "direction": "outbound",
            "name": destination,
            "outbound_to": destination,
            "from": caller_id or demo.DEMO_CALLER_ID,
            **(task_attributes or {}),
        }
        sid = self.create_task(attributes, "voice")["sid"]
        self.reserve(sid, worker_sid)
        self.accept(sid)
        return self.task(sid)

    # ----- inspection -----

    def task(self, task_sid: str) -> dict[str, Any]:
        return self._taskrouter.render_task(self.state.task(task_sid))

    def tasks(self) -> list[dict[str, Any]]:
        return [self._taskrouter.render_task(t) for t in self.state.list_tasks()]

    def reservations(self, task_sid: str) -> list[dict[str, Any]]:
        return [self._taskrouter.render_reservation(r) for r in self.state.list_reservations(task_sid)]

    def events(self, task_sid: str | None = None) -> list[dict[str, Any]]:
        """Every recorded event (Events resource shape), oldest first, whether or not its callback was sent."""
        return [
            self._taskrouter.render_event(e)
            for e in self.state.list_events()
            if task_sid is None or e.task_sid == task_sid
        ]

    def callback_params(self, task_sid: str) -> list[dict[str, str]]:
        """The parameters each of the task's events is posted (and signed) with, oldest first, whether or not its
        callback was sent: what a test needs to forge a validly signed callback of its own."""
        return [dict(e.params) for e in self.state.list_events() if e.task_sid == task_sid]

    def counters(self) -> dict[str, int]:
        """REST calls per endpoint (task_fetch, task_update, ...) plus callbacks_* totals."""
        counts = self._counters.snapshot()
        deliveries = self._dispatcher.deliveries()
        attempts = [d for d in deliveries if d.outcome != "dropped"]
        counts |= {
            "callbacks_sent": len(attempts),
            "callbacks_delivered": sum(d.outcome == "delivered" for d in attempts),
            "callbacks_failed": sum(d.outcome in ("failed", "error") for d in attempts),
            "callbacks_dropped": sum(d.outcome == "dropped" for d in deliveries),
            "callbacks_duplicated": sum(d.duplicate and d.attempt == 1 for d in attempts),
            "tasks_without_callbacks": len(self.faults.tasks_without_callbacks()),
        }
        return counts

    def tasks_without_callbacks(self) -> list[str]:
        """The tasks `callback_drop_task_fraction` chose, in creation order: every callback of each was dropped."""
        return self.faults.tasks_without_callbacks()

    def deliveries(self, task_sid: str | None = None, event_type: str | None = None) -> list[Delivery]:
        return [
            d
            for d in self._dispatcher.deliveries()
            if (task_sid is None or d.task_sid == task_sid) and (event_type is None or d.event_type == event_type)
        ]

    def wait_callbacks_idle(self, timeout: float = 10.0) -> None:
        """Block until every queued callback has been delivered, failed or dropped."""
        self._dispatcher.wait_idle(timeout)

    # ----- control -----

    def mint_token(self, worker_sid: str, ttl_s: float = 3600, roles: list[str] | None = None) -> str:
        """A Flex agent token for a demo worker, as the Flex UI would hold; roles default to the worker's."""
        try:
            return self._tokens.mint(worker_sid, ttl_s, roles)
        except KeyError:
            raise not_found(f"/Workers/{worker_sid}") from None

    def set_callback_url(self, url: str | None) -> None:
        self.state.update_workspace(event_callback_url=url, clear_callback_url=url is None)

    def set_copilot_url(self, url: str | None, method: str = "POST") -> None:
        """Console's Agent Copilot "Wrap-up notes webhook URL" and method (None: no webhook)."""
        self.copilot.configure(url, method)

    def set_retention(self, seconds: float) -> None:
        self.state.set_retention(seconds)

    def shift_clock(self, seconds: float) -> None:
        """Move TaskRouter's time by `seconds` (negative: into the past), so a test can have a task queue, be handled
        and wrap up for given times without waiting for them. reset() puts the clock back."""
        self.state.shift_clock(seconds)

    def purge_finished(self) -> list[str]:
        """Delete every completed/canceled task now (emits task.deleted for each); returns their sids."""
        return self.state.purge_finished()

    def time_requests(self, hook) -> None:
        """Benchmarks: `hook(request, response, started_wall_s, handler_s)` after every REST/control request
        (time inside the sandbox's handler, not the HTTP parsing around it); None turns it off."""
        self._router.on_request = hook

    def reset_counters(self) -> None:
        self._counters.reset()

    def reset(self) -> None:
        """Back to a fresh start: no tasks or events, no faults, zero counters, start-up callback URL and retention."""
        self.faults.clear()
        self._counters.reset()
        with self.state.lock:
            self.state.reset()
            self._dispatcher.reset()
        self.state.set_retention(self._initial_retention_s)
        self.flex_configuration.reset()
        self.copilot.reset()
