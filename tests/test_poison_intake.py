"""Poison at the webhook, over real HTTP against the real Temporal dev server (issue #13, "poison-proof intake").

A validly signed callback that Temporal could not carry (attributes nested too deep or too large) is answered 4xx with
its reason, counted as `poison`, and logged by TaskSid, EventType and reason only: never a 5xx, never a workflow.
Text that is merely unreadable (a lone surrogate, bytes that are not UTF-8) is kept as U+FFFD, so the event is not
lost over one character.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import uuid
from collections.abc import AsyncIterator
from hashlib import sha1
from urllib.parse import quote_from_bytes

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from flexsf.models import TaskEvent
from flexsf.task_events import MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTES_DEPTH
from flexsf.vocabulary import workflow_id
from ops.tasks import workflow_exists
from tests.fixtures_stack import Gateway, gateway_settings, run_gateway
from tests.test_gateway_webhook import event_params, new_task_sid

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Stands for customer data: it must reach neither an answer nor a log line.
CUSTOMER = "+15559870000"
FORM = "application/x-www-form-urlencoded"


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(temporal_client: Client, fresh_twilio_sandbox) -> AsyncIterator[Gateway]:
    settings = gateway_settings(fresh_twilio_sandbox, f"gateway-{uuid.uuid4()}")
    async with run_gateway(settings, temporal_client) as gw:
        yield gw


def nested(levels: int, leaf: object = CUSTOMER) -> dict:
    value: object = leaf
    for _ in range(levels - 1):
        value = {"a": value}
    return {"a": value}


def sign_bytes(gateway: Gateway, fields: dict[str, bytes]) -> str:
    """Twilio's signature (URL, then each name and value in name order, HMAC-SHA1 with the auth token) over the bytes
    that are sent, for values that are not UTF-8 text."""
    data = gateway.events_url.encode() + b"".join(name.encode() + fields[name] for name in sorted(fields))
    return base64.b64encode(hmac.new(gateway.auth_token.encode(), data, sha1).digest()).decode()


async def post_bytes(gateway: Gateway, fields: dict[str, bytes], signature: str, *, raw: str | None = None):
    """POST the form; the field named `raw` goes unencoded (its bytes as they are), every other one percent-encoded."""
    body = b"&".join(
        name.encode() + b"=" + (value if name == raw else quote_from_bytes(value).encode())
        for name, value in fields.items()
    )
    headers = {"Content-Type": FORM, "X-Twilio-Signature": signature}
    return await gateway.http.post(gateway.events_url, content=body, headers=headers)


def as_bytes(params: dict[str, str]) -> dict[str, bytes]:
    return {name: value.encode() for name, value in params.items()}


async def delivered_event(client: Client, task_sid: str) -> TaskEvent:
    """The event the gateway signalled, decoded from the workflow's history as the workflow will decode it."""
    history = [e async for e in client.get_workflow_handle(workflow_id(task_sid)).fetch_history_events()]
    [signal] = [e for e in history if e.HasField("workflow_execution_signaled_event_attributes")]
    payloads = list(signal.workflow_execution_signaled_event_attributes.input.payloads)
    [event] = await client.data_converter.decode(payloads, [TaskEvent])
    return event


async def repaired(gateway: Gateway) -> dict[str, float]:
    response = await gateway.http.get(gateway.metrics_url)
    return {
        sample.labels["type"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "flexsf_taskrouter_events_repaired_total"
    }


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flexsf.gateway.taskrouter" and r.getMessage().startswith("refused")
    ]


async def test_attributes_nested_300_deep_are_422_counted_and_logged_without_their_content(
    gateway: Gateway, temporal_client, caplog
):
    caplog.set_level(logging.INFO)
    params = event_params(new_task_sid(), TaskAttributes=json.dumps(nested(300)))
    response = await gateway.post(params, gateway.sign(params))

    assert response.status_code == 422
    assert response.json()["detail"] == f"TaskAttributes is nested deeper than {MAX_ATTRIBUTES_DEPTH} levels"
    assert not await workflow_exists(temporal_client, params["TaskSid"])
    assert (await gateway.taskrouter_events()) == {("task.created", "poison"): 1}
    [line] = refusals(caplog)
    assert params["TaskSid"] in line and "task.created" in line and "nested deeper" in line
    assert CUSTOMER not in caplog.text and CUSTOMER not in response.text


async def test_worker_attributes_nested_too_deep_are_422_too(gateway: Gateway, temporal_client):
    params = event_params(
        new_task_sid(), event_type="reservation.accepted", WorkerAttributes=json.dumps(nested(MAX_ATTRIBUTES_DEPTH + 1))
    )
    response = await gateway.post(params, gateway.sign(params))
    assert response.status_code == 422 and response.json()["detail"].startswith("WorkerAttributes is nested deeper")
    assert not await workflow_exists(temporal_client, params["TaskSid"])


async def test_oversized_attributes_are_413_counted_and_logged_without_their_content(
    gateway: Gateway, temporal_client, caplog
):
    caplog.set_level(logging.INFO)
    attributes = json.dumps({"from": CUSTOMER, "transcript": "x" * MAX_ATTRIBUTES_BYTES})
    params = event_params(new_task_sid(), TaskAttributes=attributes)
    response = await gateway.post(params, gateway.sign(params))

    assert response.status_code == 413  # within the 64 KiB body: the attributes' own bound refused it
    assert (
        response.json()["detail"] == f"TaskAttributes is larger than {MAX_ATTRIBUTES_BYTES} bytes ({len(attributes)})"
    )
    assert not await workflow_exists(temporal_client, params["TaskSid"])
    assert (await gateway.taskrouter_events()) == {("task.created", "poison"): 1}
    [line] = refusals(caplog)
    assert params["TaskSid"] in line and "larger than" in line
    assert CUSTOMER not in caplog.text


async def test_a_lone_surrogate_in_task_attributes_is_kept_as_a_replacement_character(
    gateway: Gateway, temporal_client, caplog
):
    caplog.set_level(logging.INFO)
    # JSON may escape a lone surrogate; json.loads then hands back a str no UTF-8 encoder accepts.
    params = event_params(new_task_sid(), TaskAttributes='{"from": "+15559870000", "name": "Zelda \\ud800"}')
    response = await gateway.post(params, gateway.sign(params))

    assert response.status_code == 204
    event = await delivered_event(temporal_client, params["TaskSid"])
    assert event.task_attributes == {"from": CUSTOMER, "name": "Zelda \ufffd"}
    assert (await gateway.taskrouter_events()) == {("task.created", "signalled"): 1}
    assert (await repaired(gateway)) == {"task.created": 1}
    [line] = [r.getMessage() for r in caplog.records if "U+FFFD" in r.getMessage()]
    assert params["TaskSid"] in line and "TaskAttributes" in line
    assert CUSTOMER not in caplog.text and "Zelda" not in caplog.text


@pytest.mark.parametrize("raw", [None, "WorkerName"], ids=["percent-encoded", "raw-bytes"])
async def test_a_plain_parameter_that_is_not_utf8_is_verified_as_sent_and_kept(
    gateway: Gateway, temporal_client, raw: str | None
):
    """A lone surrogate can only travel in a form as bytes that are not UTF-8 (ED A0 80); the sender signed those."""
    sid = new_task_sid()
    fields = as_bytes(event_params(sid, event_type="reservation.accepted")) | {"WorkerName": b"Ada \xed\xa0\x80\xff"}
    response = await post_bytes(gateway, fields, sign_bytes(gateway, fields), raw=raw)

    assert response.status_code == 204
    event = await delivered_event(temporal_client, sid)
    assert event.worker_name == "Ada " + "\ufffd" * 4 and event.event_type == "reservation.accepted"
    assert (await repaired(gateway)) == {"reservation.accepted": 1}

    other = new_task_sid()
    tampered = as_bytes(event_params(other)) | {"WorkerName": b"Ada \xed\xa0\x80"}
    signed_for = tampered | {"WorkerName": b"Ada \xef\xbf\xbd"}  # the same text, had it been made readable first
    response = await post_bytes(gateway, tampered, sign_bytes(gateway, signed_for), raw=raw)
    assert response.status_code == 403
    assert not await workflow_exists(temporal_client, other)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"TaskAttributes": json.dumps(nested(300))}, 422),
        ({"TaskAttributes": "[" * 10_000 + "]" * 10_000}, 422),  # deeper than Python's own parser goes
        ({"WorkerAttributes": json.dumps(nested(300))}, 422),
        ({"TaskAttributes": json.dumps({"x": "y" * 40_000})}, 413),
        ({"TaskAttributes": json.dumps({"x": "y" * 140_000})}, 413),  # over the body cap (gateway/limits.py)
        ({"TaskAttributes": '{"\\udc00": "\\ud800"}'}, 204),
        ({"WorkerName": "\ud800"}, 204),  # sent as ED A0 80, signed as sent
        ({"TaskSid": "WT" + "0" * 1200}, 400),  # longer than any workflow id Temporal accepts
        ({"Timestamp": "1e999", "TimestampMs": "9" * 40, "TaskAge": "9" * 40}, 400),  # no time: no age to check
        ({"TimestampMs": "9" * 40, "TaskAge": "9" * 40}, 204),  # absurd numbers beside a usable Timestamp
    ],
)
async def test_no_poison_is_answered_with_a_5xx(gateway: Gateway, change: dict, status: int):
    params = event_params(new_task_sid()) | change
    fields = {name: value.encode("utf-8", "surrogatepass") for name, value in params.items()}
    response = await post_bytes(gateway, fields, sign_bytes(gateway, fields))
    assert response.status_code == status, response.text
    if status != 204:
        assert response.json()["detail"]
    counted = await gateway.taskrouter_events()
    assert sum(counted.values()) == 1 and not [key for key in counted if key[1] == "unavailable"]
