"""`POST /taskrouter/events`: a signed TaskRouter event callback → a signal to the task's workflow.

Answers 204 only once Temporal has the event (TaskRouter does not retry, so a 2xx must mean "durably recorded"),
403 for a missing or wrong signature, 400/413/422 for a body we cannot use (never a 5xx: that would read as our
outage), 503 when Temporal is unreachable.

Text that is not UTF-8 (a percent-encoded lone surrogate) is verified against the signature as the bytes that were
sent, then carried as U+FFFD (`flexsf.task_events.clean_text`): the event's facts are kept rather than lost over one
unreadable character.
"""

from __future__ import annotations

import base64
import hmac
import logging
from hashlib import sha1
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator

from flexsf import logs
from flexsf.settings import Settings
from flexsf.task_events import AttributesTooDeep, AttributesTooLarge, MalformedEvent, clean_params, read_event
from flexsf.vocabulary import HANDLED_EVENTS, workflow_id
from gateway.deps import SettingsDep, TemporalClientDep
from gateway.routes.metrics import IGNORED, MALFORMED, POISON, REJECTED_SIGNATURE, SIGNALLED, UNAVAILABLE
from gateway.temporal_errors import unavailable
from workflows.delivery import signal_event

log = logging.getLogger("flexsf.gateway.taskrouter")

router = APIRouter(prefix="/taskrouter", tags=["taskrouter"])

MAX_BODY_BYTES = 64 * 1024
_OUTCOME_OF_STATUS = {400: MALFORMED, 403: REJECTED_SIGNATURE, 413: POISON, 422: POISON, 503: UNAVAILABLE}
# Too large: sending it again cannot help (as for a body over the cap). Too deep: well-formed, but refused by policy.
_STATUS_OF_POISON = {AttributesTooLarge: 413, AttributesTooDeep: 422}


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
    """The form's parameters, every byte kept: what is not UTF-8 is held as `surrogateescape` code points."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise HTTPException(400, "expected an application/x-www-form-urlencoded body")
    text = body.decode("utf-8", "surrogateescape")
    return dict(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"))


class _ExactBytesValidator(RequestValidator):
    """Twilio's algorithm over the parameters as the bytes that were sent (`surrogateescape` turns them back).

    The stock validator encodes the text strictly and would raise on a parameter that is not UTF-8; a sender signs
    the bytes it sends. Used only for such a form: every other one goes through the stock validator."""

    def __init__(self, token: bytes) -> None:
        self.token = token

    def compute_signature(self, uri: str, params: dict[str, str], algorithm: str | None = None) -> str:
        text = uri + "".join(name + params[name] for name in sorted(params))
        return base64.b64encode(hmac.new(self.token, text.encode("utf-8", "surrogateescape"), sha1).digest()).decode()


@router.post(
    "/events", status_code=204, response_class=Response, responses={400: {}, 403: {}, 413: {}, 422: {}, 503: {}}
)
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
    sent = _form(body, request.headers.get("content-type", ""))
    # Everything but the signature check reads the cleaned form: a lone surrogate in a log line makes a terminal
    # handler fail, and logging then prints the whole line (customer data included) to stderr.
    form, replaced = clean_params(sent)
    validator: RequestValidator = request.app.state.request_validator
    if replaced:
        validator = _ExactBytesValidator(validator.token)
    if not validator.validate(public_url(request, settings), sent, signature):
        log.warning("rejected a TaskRouter callback with a wrong signature (event %s)", form.get("EventType", "?"))
        raise HTTPException(403, "X-Twilio-Signature does not match this request")
    seen.update(type=form.get("EventType"), verified=True)
    logs.set_task(form.get("TaskSid") or None)
    if form.get("EventType") not in HANDLED_EVENTS:
        return IGNORED
    try:
        event, repairs = read_event(form)
    except MalformedEvent as exc:
        # The reason names the parameter and the bound, never its content.
        log.warning("refused event %s for task %s: %s", form["EventType"], (form.get("TaskSid") or "?")[:64], exc)
        raise HTTPException(_STATUS_OF_POISON.get(type(exc), 400), str(exc)) from None
    replaced = sorted({*replaced, *repairs.replaced})
    try:
        await signal_event(client, settings.flexsf_task_queue, event)
    except WorkflowAlreadyStartedError:
        # A completed run refuses a new one (ALLOW_DUPLICATE_FAILED_ONLY): a straggler of a task already handled.
        log.info("event %s for closed task %s ignored", event.event_type, event.task_sid)
        return IGNORED
    except (RPCError, OSError, TimeoutError, RuntimeError) as exc:
        if (answer := unavailable(exc, "the event")) is None:
            raise
        raise answer from None
    except (ValueError, TypeError) as exc:
        # The payload converter refused it: something the bounds above did not foresee. Still the body's fault.
        log.warning(
            "refused event %s for task %s: cannot be encoded (%s)", event.event_type, event.task_sid, type(exc).__name__
        )
        raise HTTPException(422, f"the event cannot be encoded for Temporal ({type(exc).__name__})") from None
    if replaced:
        request.app.state.metrics.taskrouter_repaired(event.event_type)
        log.warning(
            "event %s for task %s: unreadable text in %s replaced by U+FFFD",
            event.event_type,
            event.task_sid,
            ", ".join(replaced),
        )
    log.info("event %s signalled to workflow %s", event.event_type, workflow_id(event.task_sid))
    return SIGNALLED
