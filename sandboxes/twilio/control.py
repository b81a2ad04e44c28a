"""The sandbox-only control API under `/__sandbox__/` (JSON in, JSON out, no auth: it binds to localhost).

No real Twilio has these paths. Each one calls the same-named method of `TwilioSandbox`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from sandboxes.twilio.errors import bad_request
from sandboxes.twilio.server import Request, Response, Route, route

if TYPE_CHECKING:
    from sandboxes.twilio.sandbox import TwilioSandbox

PREFIX = "/__sandbox__"


def _body(req: Request) -> dict[str, Any]:
    body = req.json
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    return body


def routes(sb: TwilioSandbox) -> list[Route]:
    def ok(body: Any, status: int = 200) -> Response:
        return Response(status, body)

    def info(req: Request, m: re.Match[str]) -> Response:
        return ok(sb.info)

    def create_task(req: Request, m: re.Match[str]) -> Response:
        b = _body(req)
        return ok(
            sb.create_task(b.get("attributes"), b.get("channel", "voice"), int(b.get("priority", 0)), b.get("timeout")),
            201,
        )

    def get_task(req: Request, m: re.Match[str]) -> Response:
        return ok(sb.task(m["sid"]))

    def step(req: Request, m: re.Match[str]) -> Response:
        b, sid, action = _body(req), m["sid"], m["action"]
        if action == "reserve":
            return ok(sb.reserve(sid, b.get("worker_sid")))
        if action == "accept":
            return ok(sb.accept(sid))
        if action == "wrapup":
            return ok(sb.wrapup(sid))
        if action == "complete":
            return ok(sb.complete(sid, b.get("reason", "Task completed by agent")))
        if action == "cancel":
            return ok(sb.cancel(sid, b.get("reason", "Task canceled")))
        return ok(sb.write_attributes(sid, b.get("attributes") or {}))

    def lifecycle(req: Request, m: re.Match[str]) -> Response:
        b = _body(req)
        return ok(
            sb.lifecycle(
                b.get("attributes"),
                b.get("channel", "voice"),
                b.get("worker_sid"),
                bool(b.get("wrapup", False)),
                bool(b.get("complete", False)),
                b.get("reason", "Task completed by agent"),
            ),
            201,
        )

    def outbound_call(req: Request, m: re.Match[str]) -> Response:
        b = _body(req)
        if not b.get("worker_sid") or not b.get("destination"):
            raise bad_request("worker_sid and destination are required")
        return ok(
            sb.start_outbound_call(b["worker_sid"], b["destination"], b.get("caller_id"), b.get("task_attributes")), 201
        )

    def mint_token(req: Request, m: re.Match[str]) -> Response:
        b = _body(req)
        if not b.get("worker_sid"):
            raise bad_request("worker_sid is required")
        token = sb.mint_token(b["worker_sid"], float(b.get("ttl_s", 3600)), b.get("roles"))
        return ok({"token": token, "worker_sid": b["worker_sid"]}, 201)

    def get_faults(req: Request, m: re.Match[str]) -> Response:
        return ok(sb.faults.as_dict())

    def set_faults(req: Request, m: re.Match[str]) -> Response:
        try:
            sb.faults.update(**_body(req))
        except (TypeError, ValueError) as exc:
            raise bad_request(str(exc)) from None
        return ok(sb.faults.as_dict())

    def clear_faults(req: Request, m: re.Match[str]) -> Response:
        sb.faults.clear()
        return ok(sb.faults.as_dict())

    def callback_url(req: Request, m: re.Match[str]) -> Response:
        sb.set_callback_url(_body(req).get("url"))
        return ok({"callback_url": sb.state.event_callback_url})

    def retention(req: Request, m: re.Match[str]) -> Response:
        sb.set_retention(float(_body(req)["seconds"]))
        return ok({"retention_s": sb.state.retention_s})

    def purge(req: Request, m: re.Match[str]) -> Response:
        return ok({"purged": sb.purge_finished()})

    def counters(req: Request, m: re.Match[str]) -> Response:
        return ok(sb.counters())

    def deliveries(req: Request, m: re.Match[str]) -> Response:
        found = sb.deliveries(req.param("task_sid"), req.param("event_type"))
        return ok({"deliveries": [dataclasses.asdict(d) for d in found]})

    def events(req: Request, m: re.Match[str]) -> Response:
        return ok({"events": sb.events(req.param("task_sid"))})

    def tasks_without_callbacks(req: Request, m: re.Match[str]) -> Response:
        return ok({"task_sids": sb.tasks_without_callbacks()})

    def wait_idle(req: Request, m: re.Match[str]) -> Response:
        try:
            sb.wait_callbacks_idle(float(_body(req).get("timeout_s", 10)))
        except TimeoutError as exc:
            return ok({"idle": False, "message": str(exc)}, 504)
        return ok({"idle": True})

    def reset(req: Request, m: re.Match[str]) -> Response:
        sb.reset()
        return ok({"reset": True})

    def r(method: str, path: str, name: str, handler: Any) -> Route:
        return route(method, PREFIX + path, name, handler, twilio_api=False)

    return [
        r("GET", "/info", "control_info", info),
        r("POST", "/tasks", "control_create_task", create_task),
        r("GET", "/tasks/(?P<sid>WT[0-9a-f]{32})", "control_task", get_task),
        r(
            "POST",
            "/tasks/(?P<sid>WT[0-9a-f]{32})/(?P<action>reserve|accept|wrapup|complete|cancel|attributes)",
            "control_task_step",
            step,
        ),
        r("POST", "/lifecycle", "control_lifecycle", lifecycle),
        r("POST", "/outbound-calls", "control_outbound_call", outbound_call),
        r("POST", "/tokens", "control_mint_token", mint_token),
        r("GET", "/faults", "control_faults", get_faults),
        r("POST", "/faults", "control_set_faults", set_faults),
        r("DELETE", "/faults", "control_clear_faults", clear_faults),
        r("POST", "/callback-url", "control_callback_url", callback_url),
        r("PUT", "/callback-url", "control_callback_url", callback_url),
        r("POST", "/retention", "control_retention", retention),
        r("POST", "/purge", "control_purge", purge),
        r("GET", "/counters", "control_counters", counters),
        r("GET", "/deliveries", "control_deliveries", deliveries),
        r("GET", "/events", "control_events", events),
        r("GET", "/tasks-without-callbacks", "control_tasks_without_callbacks", tasks_without_callbacks),
        r("POST", "/wait-idle", "control_wait_idle", wait_idle),
        r("POST", "/reset", "control_reset", reset),
    ]
