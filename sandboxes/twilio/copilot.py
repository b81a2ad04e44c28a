"""Agent Copilot's wrap-up notes webhook, sent the way Twilio documents it, so notes reach the product with no browser.

Twilio's page: twilio.com/docs/flex/developer/copilot-webhooks (Agent Copilot, public beta). What it says, and what
this module does about it:
- a URL and a method (HTTP POST or HTTP GET) set in Console; "regardless of the request method, Twilio sends the
  same request headers and payload" → `configure(url, method)`; a GET carries the payload as its query string;
- `note_created` "when a note is created" (auto-generated, or typed by the agent instead) → sent when the task
  wraps up; `note_updated` "when an agent clicks Complete", the agent's edits included → sent when the task
  completes (both at completion when the task skipped wrap-up);
- the payload's fields are the page's example (`sid` KQ…, `event_type`, `instance_sid` GO…, `interaction_sid`
  KD…, `channel_sid` UO…, `participant_sid` UT…, `profile_connect_sid` YI…, `summary`, `sentiment`,
  `disposition_code_sid`, `generated_summary`, `detected_language`, `generated_sentiment`); in `note_created` the
  agent's fields are null, as in the example;
- "validate the request against the signature" → `X-Twilio-Signature` as Twilio signs every webhook (Webhooks
  security page): a JSON POST signs its URL with a `bodySHA256` query parameter (the hex SHA-256 of the body) and
  no parameters; a GET signs its URL, query included.
Unverified, so left out or kept strict: timestamps and other fields past the part of the example we could read; the
POST's content type (JSON here, as the example is JSON); retries (none: the page promises none, so one attempt).

Only tasks of a Flex interaction get notes (copilot summarises an interaction): their attributes carry
`flexInteractionSid` and `flexInteractionChannelSid`, as Flex Conversations tasks do (Interactions API page,
twilio.com/docs/flex/developer/conversations/interactions-api).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import requests
from twilio.request_validator import RequestValidator

from sandboxes.twilio.errors import bad_request
from sandboxes.twilio.server import Request, Response, Route, route
from sandboxes.twilio.sids import new_sid, stable_sid

if TYPE_CHECKING:
    from sandboxes.twilio.sandbox import TwilioSandbox

log = logging.getLogger("sandboxes.twilio.copilot")

USER_AGENT = "TwilioProxy/1.1"
TIMEOUT_S = 15.0  # as TaskRouter waits for its callbacks; this webhook's own timeout is undocumented
METHODS = ("POST", "GET")


def generated_summary(task_sid: str) -> str:
    """What the sandbox's "model" writes for a task when the agent types nothing: the same for the same task."""
    return f"Copilot summary of task {task_sid}: the customer asked for help and the agent resolved it."


@dataclass(frozen=True)
class NoteDelivery:
    note_sid: str
    event_type: str
    task_sid: str
    method: str
    status: int | None  # None: no answer (refused, timed out)
    error: str | None = None
    at_ms: int = 0
    payload: dict[str, Any] | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class CopilotNotes:
    def __init__(self, auth_token: str, account_sid: str, workers: int = 4) -> None:
        self._validator = RequestValidator(auth_token)
        self._instance_sid = stable_sid("GO", f"flex-instance-{account_sid}")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="twilio-sandbox-copilot")
        self._reset_locked()

    def _reset_locked(self) -> None:
        self.url: str | None = None
        self.method = "POST"
        self._agent_notes: dict[str, dict[str, Any]] = {}
        self._note_sids: dict[str, str] = {}
        self._last: dict[str, Future] = {}
        self._deliveries: list[NoteDelivery] = []
        self._outstanding = 0

    def reset(self) -> None:
        with self._lock:
            self._reset_locked()

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ----- configuration (Console's Wrap-up notes webhook URL, and what the agent types) -----

    def configure(self, url: str | None, method: str = "POST") -> None:
        if method.upper() not in METHODS:
            raise bad_request(f"method must be one of {', '.join(METHODS)}")
        with self._lock:
            self.url = url or None
            self.method = method.upper()

    def set_agent_note(self, task_sid: str, **fields: Any) -> None:
        """What the agent types or edits in the wrap-up panel: `summary`, `sentiment`, `disposition_code_sid`."""
        unknown = set(fields) - {"summary", "sentiment", "disposition_code_sid"}
        if unknown:
            raise bad_request(f"unknown note fields: {', '.join(sorted(unknown))}")
        with self._lock:
            self._agent_notes[task_sid] = dict(fields)

    # ----- the task's life (called by the sandbox as the task wraps up and completes) -----

    def wrapped_up(self, task: dict[str, Any]) -> None:
        self._send(task, "note_created")

    def completed(self, task: dict[str, Any]) -> None:
        if task["sid"] not in self._note_sids:
            self._send(task, "note_created")
        self._send(task, "note_updated")

    def _send(self, task: dict[str, Any], event_type: str) -> None:
        attributes = json.loads(task.get("attributes") or "{}")
        interaction, channel = attributes.get("flexInteractionSid"), attributes.get("flexInteractionChannelSid")
        with self._lock:
            url, method = self.url, self.method
            if not url or not interaction or not channel:
                return
            sid = task["sid"]
            note_sid = self._note_sids.setdefault(sid, new_sid("KQ"))
            agent = self._agent_notes.get(sid, {}) if event_type == "note_updated" else {}
            payload = {
                "sid": note_sid,
                "event_type": event_type,
                "instance_sid": self._instance_sid,
                "interaction_sid": interaction,
                "channel_sid": channel,
                "participant_sid": stable_sid("UT", f"{sid}-agent"),
                "profile_connect_sid": None,
                # The agent's fields: null until the agent completes; Complete keeps the generated text unless edited.
                "summary": agent.get("summary", generated_summary(sid)) if event_type == "note_updated" else None,
                "sentiment": agent.get("sentiment", "neutral") if event_type == "note_updated" else None,
                "disposition_code_sid": agent.get("disposition_code_sid"),
                "generated_summary": generated_summary(sid),
                "detected_language": "en-US",
                "generated_sentiment": "neutral",
            }
            previous = self._last.get(sid)
            self._outstanding += 1
            # One task's notes in order (created before updated); different tasks in parallel.
            self._last[sid] = self._pool.submit(self._deliver, previous, url, method, sid, payload)

    def _deliver(self, previous: Future | None, url: str, method: str, task_sid: str, payload: dict) -> None:
        try:
            if previous is not None:
                previous.result()
            self._post(url, method, task_sid, payload)
        except Exception:  # a bug here must not lose the count of outstanding deliveries
            log.exception("copilot webhook delivery crashed")
        finally:
            with self._lock:
                self._outstanding = max(0, self._outstanding - 1)  # a reset meanwhile zeroed it
                self._idle.notify_all()

    def _post(self, url: str, method: str, task_sid: str, payload: dict[str, Any]) -> None:
        joiner = "&" if urlsplit(url).query else "?"
        if method == "GET":
            target = url + joiner + urlencode({k: "" if v is None else v for k, v in payload.items()})
            body = None
        else:
            body = json.dumps(payload).encode()
            target = url + joiner + urlencode({"bodySHA256": hashlib.sha256(body).hexdigest()})
        headers = {
            "X-Twilio-Signature": self._validator.compute_signature(target, {}),
            "User-Agent": USER_AGENT,
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, error = None, None
        try:
            status = requests.request(
                method, target, data=body, headers=headers, timeout=TIMEOUT_S, allow_redirects=False
            ).status_code
        except requests.RequestException as exc:
            error = type(exc).__name__
        log.info("copilot %s %s -> %s", payload["event_type"], urlsplit(url).path, status or error)
        with self._lock:
            self._deliveries.append(
                NoteDelivery(
                    payload["sid"],
                    payload["event_type"],
                    task_sid,
                    method,
                    status,
                    error,
                    int(time.time() * 1000),
                    payload,
                )
            )

    # ----- inspection -----

    def deliveries(self, task_sid: str | None = None) -> list[NoteDelivery]:
        with self._lock:
            return [d for d in self._deliveries if task_sid is None or d.task_sid == task_sid]

    def wait_idle(self, timeout: float = 30.0) -> None:
        with self._idle:
            if not self._idle.wait_for(lambda: self._outstanding == 0, timeout=timeout):
                raise TimeoutError(f"{self._outstanding} copilot webhooks still pending after {timeout}s")


def routes(sb: TwilioSandbox) -> list[Route]:
    """Sandbox-only control paths (no real Twilio has them): Console's webhook setting, the agent's typing, and what
    was sent."""
    copilot = sb.copilot

    def body(req: Request) -> dict[str, Any]:
        value = req.json
        if not isinstance(value, dict):
            raise bad_request("The request body must be a JSON object")
        return value

    def configure(req: Request, m) -> Response:
        b = body(req)
        copilot.configure(b.get("url"), str(b.get("method") or "POST"))
        return Response(200, {"url": copilot.url, "method": copilot.method})

    def agent_note(req: Request, m) -> Response:
        copilot.set_agent_note(m["sid"], **body(req))
        return Response(200, {"task_sid": m["sid"]})

    def deliveries(req: Request, m) -> Response:
        sid = (req.query.get("task_sid") or [None])[0]
        return Response(
            200,
            [
                {
                    "note_sid": d.note_sid,
                    "event_type": d.event_type,
                    "task_sid": d.task_sid,
                    "method": d.method,
                    "status": d.status,
                    "error": d.error,
                    "delivered": d.delivered,
                }
                for d in copilot.deliveries(sid)
            ],
        )

    def wait_idle(req: Request, m) -> Response:
        try:
            copilot.wait_idle(float(body(req).get("timeout_s", 30)))
        except TimeoutError as exc:
            return Response(504, {"idle": False, "message": str(exc)})
        return Response(200, {"idle": True})

    prefix = "/__sandbox__"
    return [
        route("POST", prefix + "/copilot", "control_copilot", configure, twilio_api=False),
        route(
            "POST",
            prefix + "/tasks/(?P<sid>WT[0-9a-f]{32})/copilot-note",
            "control_copilot_note",
            agent_note,
            twilio_api=False,
        ),
        route("GET", prefix + "/copilot/deliveries", "control_copilot_deliveries", deliveries, twilio_api=False),
        route("POST", prefix + "/copilot/wait-idle", "control_copilot_wait_idle", wait_idle, twilio_api=False),
    ]
