"""`POST /taskrouter/events`: a signed TaskRouter event callback → a signal to the task's workflow.

Answers 204 only once Temporal has the event (TaskRouter does not retry, so a 2xx must mean "durably recorded"),
403 for a missing or wrong signature, 400/413 for a body we cannot use, 503 when Temporal is unreachable.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator

from flexsf import logs
from flexsf.settings import Settings
from flexsf.task_events import MalformedEvent, task_event
from flexsf.vocabulary import HANDLED_EVENTS
from gateway.deps import SettingsDep, TemporalClientDep
from gateway.routes.metrics import IGNORED, MALFORMED, REJECTED_SIGNATURE, SIGNALLED, UNAVAILABLE
from gateway.temporal_errors import unavailable
from workflows.delivery import signal_event

log = logging.getLogger("flexsf.gateway.taskrouter")

router = APIRouter(prefix="/taskrouter", tags=["taskrouter"])

MAX_BODY_BYTES = 64 * 1024
_OUTCOME_OF_STATUS = {400: MALFORMED, 403: REJECTED_SIGNATURE, 413: MALFORMED, 503: UNAVAILABLE}


def public_url(request: Request, settings: Settings) -> str:
    """The URL Twilio signed: the configured public base + this path (+ query), else the URL we were called on."""
    base = settings.flexsf_public_base_url
    if not base:
        return str(request.url)
    url = base.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > MAX_BODY_BYTES:
                raise HTTPException(413, f"body is larger than {MAX_BODY_BYTES} bytes")
        except ValueError:
            raise HTTPException(400, "Content-Length is not a number") from None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body is larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _form(body: bytes, content_type: str) -> dict[str, str]:
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise HTTPException(400, "expected an application/x-www-form-urlencoded body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "body is not valid UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


@router.post("/events", status_code=204, response_class=Response, responses={400: {}, 403: {}, 413: {}, 503: {}})
async def taskrouter_event(request: Request, settings: SettingsDep, client: TemporalClientDep) -> Response:
    seen: dict = {"type": None, "verified": False}
    try:
        outcome = await _deliver(request, settings, client, seen)
    except HTTPException as exc:
        request.app.state.metrics.taskrouter_event(
            seen["type"], _OUTCOME_OF_STATUS.get(exc.status_code, UNAVAILABLE), verified=seen["verified"]
        )
        raise
    request.app.state.metrics.taskrouter_event(seen["type"], outcome, verified=True)
    return Response(status_code=204)


async def _deliver(request: Request, settings: Settings, client, seen: dict) -> str:
    """Check and deliver one callback; the outcome for the metrics, or an HTTPException."""
    body = await _read_body(request)
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        raise HTTPException(403, "X-Twilio-Signature is missing")
    form = _form(body, request.headers.get("content-type", ""))
    validator: RequestValidator = request.app.state.request_validator
    if not validator.validate(public_url(request, settings), form, signature):
        log.warning("rejected a TaskRouter callback with a wrong signature (event %s)", form.get("EventType", "?"))
        raise HTTPException(403, "X-Twilio-Signature does not match this request")
    seen.update(type=form.get("EventType"), verified=True)
    logs.set_task(form.get("TaskSid") or None)
    if form.get("EventType") not in HANDLED_EVENTS:
        return IGNORED
    try:
        event = task_event(form)
    except MalformedEvent as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        await signal_event(client, settings.flexsf_task_queue, event)
    except WorkflowAlreadyStartedError:
        # REJECT_DUPLICATE: the task's workflow has closed; this straggler concerns a task already handled.
        log.info("event %s for closed task %s ignored", event.event_type, event.task_sid)
        return IGNORED
    except (RPCError, OSError, TimeoutError, RuntimeError) as exc:
        if (answer := unavailable(exc, "the event")) is None:
            raise
        raise answer from None
    log.info("event %s signalled to workflow %s", event.event_type, logs.workflow_id_for(event.task_sid))
    return SIGNALLED
