"""Agent Copilot's wrap-up notes webhook, end to end: the Twilio sandbox sends it signed as Twilio does, the gateway
finds the task's workflow by the interaction channel it indexed, and the notes land in the Salesforce Task — with no
browser and no agent-API call anywhere."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from urllib.parse import urlencode

import pytest
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator

from flexsf.models import Stage
from flexsf.search_attributes import FLEX_INTERACTION_CHANNEL_SID, FLEX_INTERACTION_SID
from gateway.limits import COPILOT_NOTES_BYTES
from gateway.routes import copilot as copilot_route
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import eventually

AGENT = tw_demo.DEMO_WORKERS[0]


def sf_tasks_for(stack, task_sid: str) -> list[dict]:
    return [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]


def interaction() -> dict[str, str]:
    """The attributes a Flex Conversations task carries for its interaction (Interactions API page)."""
    return {
        "flexInteractionSid": "KD" + secrets.token_hex(16),
        "flexInteractionChannelSid": "UO" + secrets.token_hex(16),
    }


def caller(**extra: str) -> dict[str, str]:
    return {"from": sf_demo.UNIQUE_PHONE_CONTACT.phone, "direction": "inbound", **extra}


def note(attributes: dict[str, str], event_type: str, summary: str | None, **extra) -> dict:
    return {
        "sid": extra.pop("sid", None) or "KQ" + secrets.token_hex(16),
        "event_type": event_type,
        "instance_sid": "GO" + "0" * 32,
        "interaction_sid": attributes["flexInteractionSid"],
        "channel_sid": attributes["flexInteractionChannelSid"],
        "participant_sid": "UT" + "0" * 32,
        "summary": summary,
        "sentiment": None,
        "disposition_code_sid": None,
        "generated_summary": "what the model wrote",
        "detected_language": "en-US",
        "generated_sentiment": "neutral",
        **extra,
    }


async def post_note(stack, payload: dict, *, token: str | None = None, tamper: bool = False, method: str = "POST"):
    """Sent as Twilio sends it: JSON with `bodySHA256` in the signed URL, or a GET with the payload as its query."""
    validator = RequestValidator(token or stack.gateway.auth_token)
    base = f"{stack.gateway.url}/copilot/notes"
    if method == "GET":
        url = base + "?" + urlencode({k: "" if v is None else v for k, v in payload.items()})
        return await stack.gateway.http.get(url, headers={"X-Twilio-Signature": validator.compute_signature(url, {})})
    body = json.dumps(payload).encode()
    url = f"{base}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    headers = {"X-Twilio-Signature": validator.compute_signature(url, {}), "Content-Type": "application/json"}
    if tamper:
        body = body.replace(b"what the model wrote", b"what a forger wrote!")
    return await stack.gateway.http.post(url, content=body, headers=headers)


async def logged_description(stack, sid: str, want: str) -> dict:
    """The one Salesforce Task of the task, once its Description is `want` (an amend is asynchronous)."""
    await eventually(
        lambda: [t.get("Description") for t in sf_tasks_for(stack, sid)] == [want],
        30,
        f"the Salesforce Task of {sid} described as expected",
    )
    [logged] = sf_tasks_for(stack, sid)
    return logged


async def test_notes_land_in_the_salesforce_task_from_the_webhook_alone(stack) -> None:
    stack.tw.set_copilot_url(f"{stack.gateway.url}/copilot/notes")
    attributes = interaction()
    sid = stack.tw.lifecycle(caller(**attributes), worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    stack.tw.copilot.set_agent_note(sid, summary="Customer wants a refund; approved", sentiment="positive")
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    await asyncio.to_thread(stack.tw.copilot.wait_idle, 30)

    sent = stack.tw.copilot.deliveries(sid)
    assert [(d.event_type, d.status) for d in sent] == [("note_created", 204), ("note_updated", 204)]
    assert view.notes.source == "webhook" and view.notes.note_event == "note_updated"
    logged = await logged_description(stack, sid, "Customer wants a refund; approved")
    assert logged["Id"] == view.activity_id and logged["WhoId"] == sf_demo.UNIQUE_PHONE_CONTACT.id
    # The workflow indexed what the webhook names, so the gateway found the task by a visibility query.
    described = await stack.handle(sid).describe()
    indexed = described.typed_search_attributes
    assert indexed.get(FLEX_INTERACTION_SID) == attributes["flexInteractionSid"]
    assert indexed.get(FLEX_INTERACTION_CHANNEL_SID) == attributes["flexInteractionChannelSid"]


async def test_a_task_without_an_interaction_gets_no_webhook(stack) -> None:
    stack.tw.set_copilot_url(f"{stack.gateway.url}/copilot/notes")
    plain = stack.tw.lifecycle(caller(), worker_sid=AGENT.sid, complete=True)["sid"]
    await stack.result(plain)
    assert stack.tw.copilot.deliveries(plain) == []  # copilot summarises interactions; this task has none


async def test_signatures_and_bodies_the_route_refuses(stack) -> None:
    attributes = interaction()
    good = note(attributes, "note_created", None)
    assert (await post_note(stack, good, token="0" * 32)).status_code == 403  # another account's token
    assert (await post_note(stack, good, tamper=True)).status_code == 403  # the body is not what was signed
    unsigned = await stack.gateway.http.post(f"{stack.gateway.url}/copilot/notes", json=good)
    assert unsigned.status_code == 403 and "missing" in unsigned.json()["detail"]
    # Signed, but a JSON body without bodySHA256 is covered by nothing.
    url = f"{stack.gateway.url}/copilot/notes"
    no_hash = await stack.gateway.http.post(
        url,
        json=good,
        headers={"X-Twilio-Signature": RequestValidator(stack.gateway.auth_token).compute_signature(url, {})},
    )
    assert no_hash.status_code == 403 and "bodySHA256" in no_hash.json()["detail"]

    bad_sid = await post_note(stack, {**good, "channel_sid": "UO-not-a-sid"})
    assert bad_sid.status_code == 400 and "channel_sid" in bad_sid.json()["detail"]
    nameless = await post_note(stack, {**good, "channel_sid": None, "interaction_sid": None})
    assert nameless.status_code == 400
    not_an_object = await post_note(stack, ["a", "list"])  # type: ignore[arg-type]
    assert not_an_object.status_code == 400
    oversized = await post_note(stack, {**good, "summary": "x" * (COPILOT_NOTES_BYTES + 1)})
    assert oversized.status_code == 413  # before the signature or the body is looked at
    # An event type we do not know, signed by Twilio: acknowledged and ignored.
    assert (await post_note(stack, {**good, "event_type": "note_deleted"})).status_code == 204


async def test_a_note_before_the_tasks_workflow_exists_is_delivered_once_it_does(stack, monkeypatch) -> None:
    lookups: list[str] = []
    list_workflows = stack.client.list_workflows

    def counted(query: str, **kw):
        lookups.append(query)
        return list_workflows(query, **kw)

    monkeypatch.setattr(stack.client, "list_workflows", counted)  # the gateway shares this client
    attributes = interaction()
    stack.tw.set_callback_url(None)  # the task exists at Twilio, but no callback has told us about it yet
    sid = stack.tw.create_task(caller(**attributes))["sid"]
    early = asyncio.create_task(post_note(stack, note(attributes, "note_created", "Typed early"), method="GET"))
    await eventually(lambda: lookups, 10, "the gateway looking for the note's task")
    with pytest.raises(RPCError):  # the workflow does not exist yet
        await stack.view(sid)
    stack.tw.set_callback_url(stack.gateway.events_url)
    stack.tw.reserve(sid, AGENT.sid)
    stack.tw.accept(sid)  # reservation.accepted starts the workflow, with the task's attributes
    answer = await early
    assert answer.status_code == 204, answer.text
    assert len(lookups) > 1  # found on a later look, not the first
    view = await stack.wait_for(sid, lambda v: v.notes is not None)
    assert view.notes.summary == "Typed early"
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    await stack.result(sid)
    await logged_description(stack, sid, "Typed early")


async def test_a_note_no_task_claims_is_answered_503_with_retry_after(stack, monkeypatch) -> None:
    monkeypatch.setattr(copilot_route, "MATCH_WAIT_S", 0.5)
    answer = await post_note(stack, note(interaction(), "note_updated", "Nobody's"))
    assert answer.status_code == 503 and answer.headers["Retry-After"] == str(copilot_route.RETRY_AFTER_S)


async def test_note_updated_replaces_note_created_and_a_late_note_created_changes_nothing(stack) -> None:
    attributes = interaction()
    sid = stack.tw.lifecycle(caller(**attributes), worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    created = note(attributes, "note_created", None)
    updated = note(attributes, "note_updated", "Edited by the agent", sid=created["sid"])
    assert (await post_note(stack, created)).status_code == 204
    view = await stack.wait_for(sid, lambda v: v.notes is not None)
    assert view.notes.summary == "what the model wrote"  # the generated draft until the agent completes
    assert (await post_note(stack, updated)).status_code == 204
    assert (await post_note(stack, created)).status_code == 204  # Twilio's note_created again, late
    assert (await post_note(stack, updated)).status_code == 204  # and the update again
    view = await stack.view(sid)
    assert (view.notes.summary, view.notes.note_event) == ("Edited by the agent", "note_updated")
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    logged = await logged_description(stack, sid, "Edited by the agent")
    assert logged["Id"] == view.activity_id


async def test_browser_and_webhook_notes_converge_on_one_task_with_the_newest(stack) -> None:
    stack.tw.set_copilot_url(f"{stack.gateway.url}/copilot/notes")
    attributes = interaction()
    sid = stack.tw.lifecycle(caller(**attributes), worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    token = stack.tw.mint_token(AGENT.sid)
    browser = await stack.gateway.http.post(
        f"{stack.gateway.url}/agent/tasks/{sid}/notes",
        json={"summary": "From the browser", "disposition": "Resolved"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert browser.status_code == 204, browser.text
    stack.tw.wrapup(sid)  # note_created: the generated draft must not replace the agent's submitted notes
    await asyncio.to_thread(stack.tw.copilot.wait_idle, 30)
    assert (await stack.view(sid)).notes.summary == "From the browser"
    stack.tw.copilot.set_agent_note(sid, summary="Final words from Complete")
    stack.tw.complete(sid)  # note_updated, the newest: it wins
    view = await stack.result(sid)
    await asyncio.to_thread(stack.tw.copilot.wait_idle, 30)
    assert view.notes.summary == "Final words from Complete"
    logged = await logged_description(stack, sid, "Final words from Complete")
    assert logged["Id"] == view.activity_id


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "60"}], indirect=True)
async def test_a_note_after_the_log_amends_the_same_salesforce_task(stack) -> None:
    attributes = interaction()
    sid = stack.tw.lifecycle(caller(**attributes), worker_sid=AGENT.sid, complete=True)["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.LOGGED)
    [logged] = sf_tasks_for(stack, sid)
    assert not logged.get("Description")
    answer = await post_note(stack, note(attributes, "note_updated", "Written after the log"))
    assert answer.status_code == 204, answer.text
    amended = await logged_description(stack, sid, "Written after the log")
    assert amended["Id"] == logged["Id"] == view.activity_id
