"""`/copilot/notes`: Agent Copilot's wrap-up notes webhook → the notes of the task's workflow, with no browser.

Twilio documents the webhook at twilio.com/docs/flex/developer/copilot-webhooks (Agent Copilot, public beta): set
in Console under Flex > AI features > Agent Copilot > Wrap-up notes webhook URL, sent as HTTP POST or HTTP GET
("regardless of the request method, Twilio sends the same request headers and payload"), on `note_created` (a note
was generated or typed) and on `note_updated` (the agent clicked Complete; the agent's edits included). The payload
names the note (`sid`, KQ…), the interaction (`interaction_sid`, KD…) and its channel (`channel_sid`, UO…), never the
TaskRouter task; the task's workflow indexes the same two sids from the task's attributes (`flexInteractionSid`,
`flexInteractionChannelSid`), so a visibility query finds it.

Trust, as for TaskRouter's callbacks (docs/gateway.md): the body is bounded (`gateway.limits.COPILOT_NOTES_BYTES`),
then `X-Twilio-Signature` must match the URL Twilio signed (`FLEXSF_PUBLIC_BASE_URL` + path + query) — a JSON body
through the `bodySHA256` query parameter Twilio adds for JSON, a form through its parameters, a GET through its
query — before anything of the request is read or logged. The page does not say which content type a POST carries:
both are accepted, each only as Twilio signs it.

Answers: 204 once the workflow has the notes (or when there is nothing to do: an event type we do not know, a task
already closed); 400 for a body we cannot read, 403 for a signature that does not match, 413 for a body over the
limit, 422 for notes the workflow refuses (over the per-task cap); 503 when Temporal is unreachable or no task of
this interaction is known yet after `MATCH_WAIT_S` (see `_find`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import StringConstraints, ValidationError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode
from twilio.request_validator import RequestValidator

from flexsf import logs
from flexsf.models import Notes
from flexsf.search_attributes import FLEX_INTERACTION_CHANNEL_SID, FLEX_INTERACTION_SID
from flexsf.settings import Settings
from flexsf.vocabulary import NOTES_UPDATE, WORKFLOW_ID_PREFIX, WORKFLOW_TYPE
from gateway.deps import SettingsDep, TemporalClientDep
from gateway.routes.taskrouter import RefusalLog, public_url
from gateway.sanitize import printable
from gateway.schemas import NOTES_DISPOSITION_MAX, NOTES_SENTIMENT_MAX, NOTES_SUMMARY_MAX, RequestBody
from gateway.temporal_errors import unavailable

log = logging.getLogger("flexsf.gateway.copilot")

router = APIRouter(prefix="/copilot", tags=["copilot"])

EVENTS = ("note_created", "note_updated")
# How long one delivery waits for the task's workflow to become findable: visibility lags the upsert by a moment,
# and the task's first callback may still be on its way. Kept well under the 15 s TaskRouter gives its callbacks (this
# webhook's own timeout is undocumented).
MATCH_WAIT_S = 8.0
MATCH_POLL_S = 0.25
RETRY_AFTER_S = 30
TEMPORAL_RPC_TIMEOUT = timedelta(seconds=10)

Summary = Annotated[str, StringConstraints(max_length=NOTES_SUMMARY_MAX)]
Short = Annotated[str, StringConstraints(max_length=NOTES_DISPOSITION_MAX)]


NoteSid = Annotated[str, StringConstraints(pattern=r"^KQ[0-9a-fA-F]{32}$")]
InteractionSid = Annotated[str, StringConstraints(pattern=r"^KD[0-9a-fA-F]{32}$")]
ChannelSid = Annotated[str, StringConstraints(pattern=r"^UO[0-9a-fA-F]{32}$")]
Sentiment = Annotated[str, StringConstraints(max_length=NOTES_SENTIMENT_MAX)]


class CopilotNoteIn(RequestBody):
    """The fields of the webhook's payload this product uses (the page's example shows more; they are ignored)."""

    sid: NoteSid
    event_type: Annotated[str, StringConstraints(max_length=64)]
    interaction_sid: InteractionSid | None = None
    channel_sid: ChannelSid | None = None
    summary: Summary | None = None
    sentiment: Sentiment | None = None
    disposition_code_sid: Short | None = None
    generated_summary: Summary | None = None
    generated_sentiment: Sentiment | None = None

    def to_notes(self) -> Notes:
        """Mapped as the browser's `notesSubmitted` is: the agent's text when there is one, else the generated one.
        The webhook carries a disposition code's sid, not its name: kept as the disposition (the page documents no
        name field)."""
        return Notes(
            summary=self.summary or self.generated_summary,
            sentiment=self.sentiment or self.generated_sentiment,
            disposition=self.disposition_code_sid,
            source="webhook",
            note_sid=self.sid,
            note_event=self.event_type,
        )


def _refusals(request: Request) -> RefusalLog:
    state = request.app.state
    if getattr(state, "copilot_refusals", None) is None:
        state.copilot_refusals = RefusalLog(what="Copilot wrap-up notes webhooks")
    return state.copilot_refusals


def _verified_payload(request: Request, body: bytes, url: str) -> dict[str, Any]:
    """The payload, once the signature over it checks out (403 before anything of it is read otherwise)."""
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        _refusals(request).note("without a signature")
        raise HTTPException(403, "X-Twilio-Signature is missing")
    validator: RequestValidator = request.app.state.request_validator
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "GET":
        signed: str | dict[str, str] = {}
    elif content_type == "application/json":
        if "bodySHA256" not in dict(parse_qsl(request.url.query)):
            # Twilio signs a JSON body through this parameter; without it the body is covered by nothing.
            _refusals(request).note("with an unsigned JSON body")
            raise HTTPException(403, "a JSON body must be signed through the bodySHA256 query parameter")
        try:
            signed = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPException(400, "the JSON body is not UTF-8") from None
    elif content_type == "application/x-www-form-urlencoded":
        try:
            signed = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError:
            raise HTTPException(400, "the form is not UTF-8") from None
    else:
        raise HTTPException(400, "expected application/json or application/x-www-form-urlencoded")
    if not validator.validate(url, signed, signature):
        _refusals(request).note("with a wrong signature")
        raise HTTPException(403, "X-Twilio-Signature does not match this request")
    if request.method == "GET":
        return {k: v for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "bodySHA256"}
    if isinstance(signed, dict):
        return signed
    try:
        payload = json.loads(signed)
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, "the body is not a JSON object")
    return payload


def _read(payload: dict[str, Any]) -> CopilotNoteIn:
    # A query string or a form cannot say null: an empty value stands for it.
    fields = {k: (None if v == "" else v) for k, v in payload.items() if k in CopilotNoteIn.model_fields}
    try:
        note = CopilotNoteIn.model_validate(fields)
    except ValidationError as exc:
        # The field names and the rule, never the values (customer text).
        where = ", ".join(sorted({".".join(map(str, e["loc"])) or "body" for e in exc.errors()}))
        raise HTTPException(400, f"unusable wrap-up note: check {where}") from None
    if note.event_type in EVENTS and not (note.interaction_sid or note.channel_sid):
        raise HTTPException(400, "a wrap-up note must name its interaction_sid or channel_sid")
    return note


_QUOTE_SAFE = re.compile(r"^[A-Za-z0-9]+$")


async def _find(client: Client, note: CopilotNoteIn) -> str | None:
    """The id of the task workflow this note belongs to: by the interaction channel (one task per channel and
    agent), else the interaction. Several (a transfer gives the channel a second task) → the open one started last,
    else the one started last. Waits up to MATCH_WAIT_S for one to appear in visibility; None when none did.

    Not found is answered 503 rather than held: notes come at wrap-up, long after the task's workflow started, so a
    miss is visibility lag (covered by the wait) or a task whose callbacks never reached us. Whether Twilio retries
    this webhook is undocumented; the browser path stays as the fallback for that case."""
    key, value = (
        (FLEX_INTERACTION_CHANNEL_SID, note.channel_sid)
        if note.channel_sid
        else (FLEX_INTERACTION_SID, note.interaction_sid)
    )
    assert value is not None and _QUOTE_SAFE.match(value)  # validated as a sid: safe inside the query's quotes
    query = f"WorkflowType = '{WORKFLOW_TYPE}' AND {key.name} = '{value}'"
    deadline = asyncio.get_running_loop().time() + MATCH_WAIT_S
    while True:
        found = [execution async for execution in client.list_workflows(query, page_size=20, limit=20)]
        if found:
            found.sort(
                key=lambda e: (e.status == WorkflowExecutionStatus.RUNNING, e.start_time.timestamp()), reverse=True
            )
            return found[0].id
        if asyncio.get_running_loop().time() >= deadline:
            return None
        await asyncio.sleep(MATCH_POLL_S)


_ANSWERS = {400: {}, 403: {}, 413: {}, 422: {}, 503: {}}


@router.post("/notes", status_code=204, response_class=Response, responses=_ANSWERS)
async def copilot_notes(request: Request, settings: SettingsDep, client: TemporalClientDep) -> Response:
    """Agent Copilot's wrap-up note, as a signed JSON body (or form)."""
    return await _receive(request, settings, client)


@router.get("/notes", status_code=204, response_class=Response, responses=_ANSWERS)
async def copilot_notes_by_get(request: Request, settings: SettingsDep, client: TemporalClientDep) -> Response:
    """The same note when Console's method is HTTP GET: the payload as the signed query string."""
    return await _receive(request, settings, client)


async def _receive(request: Request, settings: Settings, client: Client) -> Response:
    body = await request.body()  # at most COPILOT_NOTES_BYTES: gateway.body_limit refused anything larger
    note = _read(_verified_payload(request, body, public_url(request, settings)))
    if note.event_type not in EVENTS:
        # Signed by Twilio, but nothing we know: answered like a TaskRouter event we do not handle.
        log.info("copilot webhook %s ignored", printable(note.event_type))
        return Response(status_code=204)
    try:
        workflow_id = await _find(client, note)
    except (RPCError, OSError, TimeoutError, RuntimeError) as exc:
        if (answer := unavailable(exc, f"finding the task of wrap-up note {note.sid}")) is None:
            raise
        raise answer from None
    if workflow_id is None:
        log.warning("wrap-up note %s (%s): no task of its interaction is known yet", note.sid, note.event_type)
        raise HTTPException(
            503, "no task of this interaction is known yet; retry later", headers={"Retry-After": str(RETRY_AFTER_S)}
        )
    logs.set_task(workflow_id.removeprefix(WORKFLOW_ID_PREFIX))
    try:
        await client.get_workflow_handle(workflow_id).execute_update(
            NOTES_UPDATE, note.to_notes(), rpc_timeout=TEMPORAL_RPC_TIMEOUT
        )
    except WorkflowUpdateFailedError as exc:
        raise HTTPException(422, getattr(exc.cause, "message", None) or "the task refused the notes") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            # Closed (logged, its grace window over): nothing can take the notes any more, and a retry cannot help.
            log.info("wrap-up note %s (%s) for closed workflow %s ignored", note.sid, note.event_type, workflow_id)
            return Response(status_code=204)
        raise unavailable(exc, f"wrap-up note {note.sid}") from None
    log.info("wrap-up note %s (%s) delivered to workflow %s", note.sid, note.event_type, workflow_id)
    return Response(status_code=204)
