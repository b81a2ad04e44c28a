"""What a real Flex account may do that the sandbox used to let slide (issue #12): response headers in lower case, a
fetch without an ETag, callbacks without `Sid`, token validation answered with a 4xx, a restricted API key refused
the Events list. Each test switches the sandbox into that behaviour and checks what the product does with it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from twilio.base.exceptions import TwilioException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from activities.models import ReconcileRequest, SaveRecordRequest
from activities.twilio import TwilioActivities
from flexsf import vocabulary
from flexsf.models import RecordRef, Stage, TaskEvent
from flexsf.task_events import task_event
from gateway.auth import InvalidToken, TokenServiceUnavailable, TokenValidator
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import TwilioSandbox
from sandboxes.twilio import demo as tw_demo
from sandboxes.twilio.receiver import CallbackReceiver
from sandboxes.twilio.state import CONCURRENT_WRITER_KEY
from sandboxes.twilio.taskrouter import UNCONDITIONAL_ATTRIBUTE_WRITES
from tests.fixtures_stack import eventually, settings_from
from workflows.task_facts import TaskFacts

AGENT = tw_demo.DEMO_WORKERS[0]
# The one record with its number: the screen pop writes it to the task's attributes without asking the agent.
ACCOUNT = sf_demo.UNIQUE_PHONE_ACCOUNT
RECORD = RecordRef(id=ACCOUNT.id, type="Account")


def activities(client: Client, sb: TwilioSandbox) -> TwilioActivities:
    return TwilioActivities(client, sb.workspace_sid)


def save_record(client: Client, sb: TwilioSandbox, task_sid: str):
    return ActivityEnvironment().run(
        activities(client, sb).save_record_on_task, SaveRecordRequest(task_sid=task_sid, record=RECORD)
    )


def attributes_of(sb: TwilioSandbox, task_sid: str) -> dict:
    return json.loads(sb.task(task_sid)["attributes"])


# ---- 2. the ETag header's case, and a fetch without one ------------------------------------------------------------


def test_lower_case_mode_reaches_the_sdk_as_lower_case_keys(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox
) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.create_task({})["sid"]
    sb.faults.update(response_header_case="lower")
    headers = twilio_client.taskrouter.v1.workspaces(sb.workspace_sid).tasks(sid).fetch_with_http_info().headers
    # A plain dict with the server's spelling: `headers.get("ETag")` misses it.
    assert headers.get("etag") == sb.state.task(sid).etag
    assert "ETag" not in headers


def test_lower_case_etag_still_guards_the_attribute_write(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox
) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.create_task({"keep": "me"})["sid"]
    # Another writer changes the task between our fetch and our write: only an If-Match stops us overwriting it.
    sb.faults.update(response_header_case="lower", conflict_next=1)

    result = save_record(twilio_client, sb, sid)

    assert result.written and result.attempts == 2
    attributes = attributes_of(sb, sid)
    assert attributes["sfdcObjectId"] == ACCOUNT.id and attributes["keep"] == "me"
    assert attributes[CONCURRENT_WRITER_KEY] == 1  # the other writer's change survived
    counters = sb.counters()
    assert counters.get(UNCONDITIONAL_ATTRIBUTE_WRITES, 0) == 0
    assert counters["task_update"] == 2  # a 412, then the merged write


def test_a_fetch_without_etag_is_never_followed_by_a_blind_write(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox
) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.create_task({"keep": "me"})["sid"]
    sb.faults.update(task_fetch_without_etag=True)

    with pytest.raises(ApplicationError) as caught:
        save_record(twilio_client, sb, sid)

    assert caught.value.type == vocabulary.TASK_ATTRIBUTES_UNGUARDED
    assert not caught.value.non_retryable  # the next fetch may carry one
    assert vocabulary.TASK_ATTRIBUTES_UNGUARDED not in vocabulary.NON_RETRYABLE_TYPES
    assert sb.counters().get("task_update", 0) == 0
    assert attributes_of(sb, sid) == {"keep": "me"}

    sb.faults.update(task_fetch_without_etag=False)
    assert save_record(twilio_client, sb, sid).written
    assert sb.counters().get(UNCONDITIONAL_ATTRIBUTE_WRITES, 0) == 0


async def test_lower_case_headers_end_to_end_the_write_keeps_if_match(stack) -> None:
    stack.tw.faults.update(response_header_case="lower", conflict_next=1)
    sid = stack.tw.lifecycle({"from": ACCOUNT.phone, "keep": "me"}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)

    attributes = attributes_of(stack.tw, sid)
    assert attributes["sfdcObjectId"] == ACCOUNT.id and attributes["keep"] == "me"
    assert attributes[CONCURRENT_WRITER_KEY] == 1
    assert stack.tw.counters().get(UNCONDITIONAL_ATTRIBUTE_WRITES, 0) == 0
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED
    assert [t["Id"] for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid] == [view.activity_id]


async def test_no_etag_end_to_end_the_write_waits_for_one(stack) -> None:
    stack.tw.faults.update(task_fetch_without_etag=True)
    sid = stack.tw.lifecycle({"from": ACCOUNT.phone, "keep": "me"}, worker_sid=AGENT.sid)["sid"]
    counters = stack.tw.counters
    await eventually(lambda: counters().get("task_fetch", 0) >= 2 or counters().get("task_update", 0), what="a fetch")
    assert counters().get("task_update", 0) == 0  # retried fetches, no write
    assert "sfdcObjectId" not in attributes_of(stack.tw, sid)

    stack.tw.faults.update(task_fetch_without_etag=False)
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert attributes_of(stack.tw, sid)["sfdcObjectId"] == ACCOUNT.id
    assert stack.tw.counters().get(UNCONDITIONAL_ATTRIBUTE_WRITES, 0) == 0


# ---- 5. callbacks without Sid (and without TimestampMs) ------------------------------------------------------------


def test_the_sandbox_can_send_only_the_documented_parameters(
    fresh_twilio_sandbox: TwilioSandbox, callback_receiver: CallbackReceiver
) -> None:
    sb = fresh_twilio_sandbox
    sb.set_callback_url(callback_receiver.url)
    sb.faults.update(callback_omit_params=["Sid", "TimestampMs"])
    sb.lifecycle({}, worker_sid=AGENT.sid)
    received = callback_receiver.wait_for(3)
    sb.wait_callbacks_idle()

    validator = RequestValidator(sb.auth_token)
    for request in received:
        assert "Sid" not in request.form and "TimestampMs" not in request.form
        assert {"EventType", "ResourceSid", "Timestamp", "TaskSid"} <= set(request.form)
        assert validator.validate(request.url, request.form, request.headers["X-Twilio-Signature"])
    # The Events list still has every event's sid: only the callbacks leave it out.
    assert all(e["sid"].startswith("EV") for e in sb.events())


async def signalled_events(stack, task_sid: str) -> list[TaskEvent]:
    """Every TaskEvent the task's workflow was signalled with, in history order (duplicates included)."""
    converter = stack.client.data_converter
    found = []
    async for event in stack.handle(task_sid).fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        attrs = event.workflow_execution_signaled_event_attributes
        if attrs.signal_name == "task_event":
            [decoded] = await converter.decode(attrs.input.payloads, [TaskEvent])
            found.append(decoded)
    return found


async def test_sidless_callbacks_are_deduplicated_and_the_task_logged_once(stack) -> None:
    stack.tw.faults.update(callback_omit_params=["Sid", "TimestampMs"], callback_duplicate_fraction=1.0)
    sid = stack.tw.lifecycle({"from": ACCOUNT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    await asyncio.to_thread(stack.tw.wait_callbacks_idle, 30)

    deliveries = stack.tw.deliveries(task_sid=sid)
    assert deliveries and all("Sid" not in d.params and "TimestampMs" not in d.params for d in deliveries)
    assert [d.status for d in deliveries] == [204] * len(deliveries)  # none refused as malformed
    # Each event reached the workflow twice under one key, and different events under different keys.
    keys = Counter(e.sid for e in await signalled_events(stack, sid))
    handled = {d.event_sid for d in deliveries if d.event_type in vocabulary.HANDLED_EVENTS}
    assert len(keys) == len(handled) and set(keys.values()) == {2}
    # A duplicate changes nothing: the workflow's facts count the pair once.
    original, duplicate = [d for d in deliveries if d.event_type == vocabulary.RESERVATION_ACCEPTED]
    facts = TaskFacts()
    facts.apply(task_event(original.params))
    facts.apply(task_event(duplicate.params))
    assert facts.event_count == 1

    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED and view.outcome == "Completed"
    assert [t["Id"] for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid] == [view.activity_id]
    assert stack.sf.counters().get("sobject_upsert:Task") == 1
    assert stack.tw.counters()["task_update"] == 1


# ---- 9. token validation: the body decides, not the status -----------------------------------------------------------


@pytest.fixture
async def validator(fresh_twilio_sandbox: TwilioSandbox):
    sb = fresh_twilio_sandbox
    settings = settings_from(
        {"TWILIO_ACCOUNT_SID": sb.account_sid, "TWILIO_AUTH_TOKEN": sb.auth_token, "TWILIO_API_BASE_URL": sb.url}
    )
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        yield TokenValidator.from_settings(settings, http)


@pytest.mark.parametrize(
    ("status", "body"), [(200, "validation"), (401, "validation"), (403, "validation"), (401, "error"), (400, "error")]
)
async def test_an_invalid_token_is_invalid_whatever_status_twilio_answers(
    validator: TokenValidator, fresh_twilio_sandbox: TwilioSandbox, status: int, body: str
) -> None:
    sb = fresh_twilio_sandbox
    sb.faults.update(token_invalid_status=status, token_invalid_body=body)
    with pytest.raises(InvalidToken, match="expired"):
        await validator.validate(sb.mint_token(AGENT.sid, ttl_s=-60))
    with pytest.raises(InvalidToken, match="Invalid Access Token"):
        await validator.validate("not-a-token")
    assert (await validator.validate(sb.mint_token(AGENT.sid))).worker_sid == AGENT.sid


@pytest.mark.parametrize("status", [500, 503])
async def test_a_5xx_from_token_validation_is_unavailable(
    validator: TokenValidator, fresh_twilio_sandbox: TwilioSandbox, status: int, caplog
) -> None:
    sb = fresh_twilio_sandbox
    sb.faults.update(fail_next=[status], endpoints=["token_validate"])
    # The reason is for the agent (retry later); the status is the operator's, in the log.
    with pytest.raises(TokenServiceUnavailable, match="retry later"):
        await validator.validate(sb.mint_token(AGENT.sid))
    assert f"HTTP {status}" in caplog.text


async def test_refused_gateway_credentials_are_unavailable_not_an_invalid_token(
    fresh_twilio_sandbox: TwilioSandbox, caplog
) -> None:
    sb = fresh_twilio_sandbox
    settings = settings_from(
        {"TWILIO_ACCOUNT_SID": sb.account_sid, "TWILIO_AUTH_TOKEN": "0" * 32, "TWILIO_API_BASE_URL": sb.url}
    )
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        validator = TokenValidator.from_settings(settings, http)
        # 401 code 20003 is about our credentials, not the agent's token: the agent did nothing wrong.
        with pytest.raises(TokenServiceUnavailable, match="retry later"):
            await validator.validate(sb.mint_token(AGENT.sid))
        assert "code 20003" in caplog.text


async def test_a_4xx_that_is_not_json_is_unavailable() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(401, text="<html>Unauthorized</html>"))
    async with httpx.AsyncClient(transport=transport) as http:
        validator = TokenValidator(http, "https://iam.twilio.com/v1/Accounts/AC1/Tokens/validate", ("AC1", "x"))
        with pytest.raises(TokenServiceUnavailable):
            await validator.validate("a-token")


# ---- 10. the Events list refused to a restricted API key -----------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [(401, 20003), (403, 20403)])
def test_the_sandbox_refuses_only_the_events_list(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox, status: int, code: int
) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.create_task({})["sid"]
    sb.faults.update(refused_endpoints={"events_list": status})
    workspace = twilio_client.taskrouter.v1.workspaces(sb.workspace_sid)
    assert workspace.tasks(sid).fetch().sid == sid
    with pytest.raises(TwilioException) as caught:
        workspace.events.list(task_sid=sid)
    response = caught.value.args[1]
    assert response.status_code == status and json.loads(response.text)["code"] == code
    with pytest.raises(TwilioException):  # every time, not once
        workspace.events.list(task_sid=sid)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_events_list_is_a_configuration_error_naming_the_key(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox, status: int
) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.create_task({})["sid"]
    sb.faults.update(refused_endpoints={"events_list": status})
    with pytest.raises(ApplicationError) as caught:
        ActivityEnvironment().run(activities(twilio_client, sb).reconcile_task, ReconcileRequest(task_sid=sid))
    assert caught.value.type == vocabulary.TWILIO_CONFIGURATION
    assert caught.value.non_retryable and vocabulary.TWILIO_CONFIGURATION in vocabulary.NON_RETRYABLE_TYPES
    assert "TWILIO_API_KEY" in str(caught.value) and str(status) in str(caught.value)

    sb.faults.update(refused_endpoints={})
    result = ActivityEnvironment().run(activities(twilio_client, sb).reconcile_task, ReconcileRequest(task_sid=sid))
    assert result.status == "active"
