"""`POST /taskrouter/events`: a signed TaskRouter event callback → a signal to the task's workflow.

Answers 204 only once Temporal has the event (TaskRouter does not retry, so a 2xx must mean "durably recorded"),
403 for a missing or wrong signature, 400/413/422 for a body we cannot use (never a 5xx: that would read as our
outage), 503 when Temporal is unreachable.

Trust, in order, before anything is signalled or logged from the request:
1. the body is at most `gateway.limits.TASKROUTER_CALLBACK_BYTES` (`gateway.body_limit`, before this route runs);
2. `X-Twilio-Signature` matches the URL Twilio signed — `FLEXSF_PUBLIC_BASE_URL` + the path, never the request's
   `Host` — and the form as sent (403; refusals are counted, and logged as one line per minute at most);
3. the signed `AccountSid` and `WorkspaceSid` are ours (403: a callback of another account or workspace);
4. the signed `Timestamp` is at most `FLEXSF_CALLBACK_MAX_AGE_S` old and at most `FUTURE_SKEW_S` ahead (403: a
   captured callback replayed later);
5. a `TaskSid` is `WT` and 32 lowercase hex digits (400).
Only then is anything of the request logged, and then through `gateway.sanitize.printable`.

Text that is not UTF-8 (a percent-encoded lone surrogate) is verified against the signature as the bytes that were
sent, then carried as U+FFFD (`flexsf.task_events.clean_text`): the event's facts are kept rather than lost over one
unreadable character.
"""

from __future__ import annotations

import base64
import hmac
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from hashlib import sha1
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.types import Scope
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator

from flexsf import logs
from flexsf.delivery import signal_event
from flexsf.settings import ConfigurationError, Settings
from flexsf.task_events import AttributesTooDeep, AttributesTooLarge, MalformedEvent, clean_params, read_event
from flexsf.vocabulary import HANDLED_EVENTS, workflow_id
from gateway.deps import SettingsDep, TemporalClientDep
from gateway.limits import TASKROUTER, BodyLimit
from gateway.routes.metrics import IGNORED, MALFORMED, POISON, REJECTED_SIGNATURE, SIGNALLED, UNAVAILABLE
from gateway.sanitize import printable
from gateway.temporal_errors import unavailable

log = logging.getLogger("flexsf.gateway.taskrouter")

router = APIRouter(prefix="/taskrouter", tags=["taskrouter"])

# A signed callback refused by policy (another account or workspace, a stale or future Timestamp): not our outage,
# not a forgery, not poison.
REFUSED = "refused"
_OUTCOME_OF_STATUS = {400: MALFORMED, 403: REJECTED_SIGNATURE, 413: POISON, 422: POISON, 503: UNAVAILABLE}
# Too large: sending it again cannot help (as for a body over the cap). Too deep: well-formed, but refused by policy.
_STATUS_OF_POISON = {AttributesTooLarge: 413, AttributesTooDeep: 422}
TASK_SID = re.compile(r"WT[0-9a-f]{32}")
# How far ahead of our clock a callback's Timestamp may be (clocks disagree by a little, even under NTP).
FUTURE_SKEW_S = 60.0
# At most one log line per this many seconds about refused callbacks (the metrics count every one).
REFUSAL_LOG_INTERVAL_S = 60.0


class RefusalLog:
    """Refused callbacks as at most one warning per interval: the first refusal at once, then the count of each
    reason since the last line, on the first refusal after the interval. A flood of forgeries is a line a minute at
    most, not a line a request; `flexsf_taskrouter_events_total` counts each. Reasons are ours, never request data."""

    def __init__(
        self,
        interval_s: float = REFUSAL_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        what: str = "TaskRouter callbacks",
    ):
        self.interval_s = interval_s
        self.what = what
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._last: float | None = None

    def note(self, reason: str) -> None:
        self._counts[reason] += 1
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return
        since = "" if self._last is None else f" in the last {math.ceil(now - self._last)}s"
        summary = ", ".join(f"{count} {why}" for why, count in sorted(self._counts.items()))
        log.warning("%s refused%s: %s", self.what, since, summary)
        self._counts.clear()
        self._last = now


def _refusals(request: Request) -> RefusalLog:
    state = request.app.state
    if getattr(state, "taskrouter_refusals", None) is None:
        state.taskrouter_refusals = RefusalLog()
    return state.taskrouter_refusals


def public_url(request: Request, settings: Settings) -> str:
    """The URL Twilio signed: the configured public base + this path (+ query). Never the request's `Host`: only
    `flexsf dev` runs without a base (`create_app(dev=True)`), and then its own socket's address stands in."""
    base = settings.flexsf_public_base_url
    if not base:
        if not getattr(request.app.state, "dev", False):
            raise HTTPException(503, "the gateway has no FLEXSF_PUBLIC_BASE_URL")  # create_app refuses this
        server = request.scope.get("server")
        if not server:
            raise HTTPException(503, "the gateway cannot tell the URL it is called on")
        base = f"{request.scope.get('scheme', 'http')}://{server[0]}:{server[1]}"
    url = base.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


def _sent_at(form: dict[str, str]) -> float | None:
    """The signed `Timestamp` in epoch seconds (ISO 8601 accepted too: the docs only say "the time"), else
    `TimestampMs`; None when neither is a time."""
    value = (form.get("Timestamp") or "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
        return seconds if math.isfinite(seconds) else None
    ms = (form.get("TimestampMs") or "").strip()
    return int(ms) / 1000 if ms.isdigit() and len(ms) <= 15 else None


def _refuse(request: Request, seen: dict, reason: str, detail: str) -> HTTPException:
    seen["outcome"] = REFUSED
    _refusals(request).note(reason)
    return HTTPException(403, detail)


def _check_trust(request: Request, settings: Settings, form: dict[str, str], seen: dict) -> None:
    """Steps 3-5 of the module's list, on a callback whose signature checked out."""
    if form.get("AccountSid") != settings.twilio_account_sid:
        raise _refuse(request, seen, "for another account", "the callback is for another Twilio account")
    if form.get("WorkspaceSid") != settings.twilio_workspace_sid:
        raise _refuse(request, seen, "for another workspace", "the callback is for another TaskRouter workspace")
    sent_at = _sent_at(form)
    if sent_at is None:
        raise HTTPException(400, "Timestamp is missing or not a time")
    age = time.time() - sent_at
    if age > settings.flexsf_callback_max_age_s:
        raise _refuse(
            request,
            seen,
            "with a stale Timestamp",
            f"the callback's Timestamp is more than {settings.flexsf_callback_max_age_s:g} seconds old",
        )
    if age < -FUTURE_SKEW_S:
        raise _refuse(request, seen, "with a future Timestamp", "the callback's Timestamp is in the future")
    task_sid = form.get("TaskSid")
    if task_sid and not TASK_SID.fullmatch(task_sid):
        raise HTTPException(400, "TaskSid is not a TaskRouter task sid (WT and 32 lowercase hex digits)")


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
    seen: dict = {"type": None, "verified": False, "outcome": None}
    try:
        outcome = await _deliver(request, settings, client, seen)
    except HTTPException as exc:
        outcome = seen["outcome"] or _OUTCOME_OF_STATUS.get(exc.status_code, UNAVAILABLE)
        request.app.state.metrics.taskrouter_event(seen["type"], outcome, verified=seen["verified"])
        raise
    request.app.state.metrics.taskrouter_event(seen["type"], outcome, verified=True)
    return Response(status_code=204)


def count_oversized_callback(scope: Scope, limit: BodyLimit) -> None:
    """A callback refused for its size before this route ran (`gateway.body_limit`), counted as the route would."""
    metrics = getattr(getattr(scope.get("app"), "state", None), "metrics", None)
    if limit is TASKROUTER and metrics is not None:
        metrics.taskrouter_event(None, POISON, verified=False)


def check_settings(settings: Settings, *, dev: bool = False) -> None:
    """What the webhook needs to trust a callback, checked when the gateway starts: the URL Twilio signs (never the
    request's Host; only `flexsf dev` may leave it unset) and the account and workspace a callback must name."""
    missing = [
        f"{name}: {why}"
        for name, value, why in (
            (
                "FLEXSF_PUBLIC_BASE_URL",
                settings.flexsf_public_base_url or dev,
                "the URL Twilio calls the gateway on (e.g. https://flexsf.example.com), which callback signatures "
                "cover; the gateway never takes it from the request's Host header",
            ),
            ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid, "callbacks naming another account are refused"),
            ("TWILIO_WORKSPACE_SID", settings.twilio_workspace_sid, "callbacks naming another workspace are refused"),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError("the gateway cannot start without:\n  " + "\n  ".join(missing))


async def _deliver(request: Request, settings: Settings, client, seen: dict) -> str:
    """Check and deliver one callback; the outcome for the metrics, or an HTTPException."""
    body = await request.body()  # at most TASKROUTER_CALLBACK_BYTES: gateway.body_limit refused anything larger
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        _refusals(request).note("without a signature")
        raise HTTPException(403, "X-Twilio-Signature is missing")
    sent = _form(body, request.headers.get("content-type", ""))
    # Everything but the signature check reads the cleaned form: a lone surrogate in a log line makes a terminal
    # handler fail, and logging then prints the whole line (customer data included) to stderr.
    form, replaced = clean_params(sent)
    validator: RequestValidator = request.app.state.request_validator
    if replaced:
        validator = _ExactBytesValidator(validator.token)
    if not validator.validate(public_url(request, settings), sent, signature):
        # Nothing of a forged request is logged (not even its EventType): it is the sender's text.
        _refusals(request).note("with a wrong signature")
        raise HTTPException(403, "X-Twilio-Signature does not match this request")
    seen.update(type=form.get("EventType"), verified=True)
    _check_trust(request, settings, form, seen)
    logs.set_task(form.get("TaskSid") or None)
    event_type = printable(form.get("EventType") or "?")
    if not form.get("EventType"):
        # Every TaskRouter callback names its event: a signed body without one is broken, not an event to ignore.
        raise HTTPException(400, "EventType is missing")
    if form.get("EventType") not in HANDLED_EVENTS:
        return IGNORED
    try:
        event, repairs = read_event(form)
    except MalformedEvent as exc:
        # The reason names the parameter and the bound, never its content.
        log.warning(
            "refused event %s for task %s: %s", event_type, printable(form.get("TaskSid") or "?"), printable(exc, 200)
        )
        raise HTTPException(_STATUS_OF_POISON.get(type(exc), 400), str(exc)) from None
    replaced = sorted({*replaced, *repairs.replaced})
    try:
        await signal_event(client, settings.flexsf_task_queue, event)
    except WorkflowAlreadyStartedError:
        # A completed run refuses a new one (ALLOW_DUPLICATE_FAILED_ONLY): a straggler of a task already handled.
        log.info("event %s for closed task %s ignored", event_type, event.task_sid)
        return IGNORED
    except (RPCError, OSError, TimeoutError, RuntimeError) as exc:
        if (answer := unavailable(exc, f"event {event_type} of task {event.task_sid}")) is None:
            raise
        raise answer from None
    except (ValueError, TypeError) as exc:
        # The payload converter refused it: something the bounds above did not foresee. Still the body's fault.
        log.warning(
            "refused event %s for task %s: cannot be encoded (%s)", event_type, event.task_sid, type(exc).__name__
        )
        raise HTTPException(422, "the event cannot be encoded for Temporal") from None
    if replaced:
        request.app.state.metrics.taskrouter_repaired(event.event_type)
        log.warning(
            "event %s for task %s: unreadable text in %s replaced by U+FFFD",
            event_type,
            event.task_sid,
            printable(", ".join(replaced), 200),
        )
    log.info("event %s signalled to workflow %s", event_type, workflow_id(event.task_sid))
    return SIGNALLED
