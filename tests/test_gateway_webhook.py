"""The gateway's TaskRouter webhook over real HTTP, against the real Temporal dev server and the Twilio sandbox.

No worker runs here: a delivered event leaves a started (scheduled) workflow, which is what we look for.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devtools.netutil import free_port
from flexsf.delivery import signal_event
from flexsf.task_events import task_event
from flexsf.vocabulary import workflow_id
from ops.tasks import workflow_exists
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import Gateway, gateway_settings, run_gateway

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(temporal_client: Client, fresh_twilio_sandbox) -> AsyncIterator[Gateway]:
    settings = gateway_settings(fresh_twilio_sandbox, f"gateway-{uuid.uuid4()}")
    async with run_gateway(settings, temporal_client) as gw:
        yield gw


def new_task_sid() -> str:
    return "WT" + uuid.uuid4().hex


def event_params(task_sid: str, event_type: str = "task.created", **extra: str) -> dict[str, str]:
    """A callback as TaskRouter sends it now, for the Twilio sandbox's account and workspace (the gateway refuses a
    callback naming another, or a stale one)."""
    now_ms = int(time.time() * 1000)
    params = {
        "AccountSid": tw_demo.DEMO_ACCOUNT_SID,
        "WorkspaceSid": tw_demo.DEMO_WORKSPACE_SID,
        "Sid": "EV" + uuid.uuid4().hex,
        "EventType": event_type,
        "TaskSid": task_sid,
        "Timestamp": str(now_ms // 1000),
        "TimestampMs": str(now_ms),
        "TaskAttributes": json.dumps({"from": "+15551230000"}),
        "TaskAssignmentStatus": "pending",
        "TaskChannelUniqueName": "voice",
    }
    params.update(extra)
    return params


async def test_signed_sandbox_lifecycle_starts_the_workflow(gateway: Gateway, temporal_client, fresh_twilio_sandbox):
    sb = fresh_twilio_sandbox
    sb.set_callback_url(gateway.events_url)
    task = await asyncio.to_thread(sb.lifecycle, {"from": "+15551230000"})
    await asyncio.to_thread(sb.wait_callbacks_idle, 30)

    deliveries = sb.deliveries(task_sid=task["sid"])
    assert {d.event_type for d in deliveries} >= {"task.created", "reservation.created", "reservation.accepted"}
    assert [d.status for d in deliveries] == [204] * len(deliveries)
    description = await temporal_client.get_workflow_handle(workflow_id(task["sid"])).describe()
    assert description.task_queue == gateway.task_queue


async def test_forged_tampered_or_missing_signature_is_403_and_signals_nothing(gateway: Gateway, temporal_client):
    forged_sid, tampered_sid, missing_sid = new_task_sid(), new_task_sid(), new_task_sid()

    forged = event_params(forged_sid)
    response = await gateway.post(forged, gateway.sign(forged, token="f" * 32))
    assert response.status_code == 403
    assert "does not match" in response.json()["detail"]

    original = event_params(new_task_sid())
    signature = gateway.sign(original)
    response = await gateway.post({**original, "TaskSid": tampered_sid}, signature)
    assert response.status_code == 403

    response = await gateway.post(event_params(missing_sid), None)
    assert response.status_code == 403
    assert "missing" in response.json()["detail"]

    for sid in (forged_sid, tampered_sid, missing_sid, original["TaskSid"]):
        assert not await workflow_exists(temporal_client, sid)


async def test_signature_for_another_url_is_403(gateway: Gateway, temporal_client):
    params = event_params(new_task_sid())
    response = await gateway.post(params, gateway.sign(params, url="https://elsewhere.example.com/taskrouter/events"))
    assert response.status_code == 403
    assert not await workflow_exists(temporal_client, params["TaskSid"])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"TaskSid": ""}, "TaskSid is missing"),
        ({"EventType": ""}, "EventType is missing"),
        ({"TaskAttributes": "{not json"}, "TaskAttributes is not valid JSON"),
        ({"TaskAttributes": "[1, 2]"}, "TaskAttributes must be a JSON object"),
        ({"WorkerAttributes": "nope"}, "WorkerAttributes is not valid JSON"),
    ],
)
async def test_malformed_event_is_400_with_its_reason(gateway: Gateway, temporal_client, change, reason):
    params = event_params(new_task_sid(), **change)
    response = await gateway.post(params, gateway.sign(params))
    assert response.status_code == 400
    assert response.json()["detail"] == reason
    if params["TaskSid"]:
        assert not await workflow_exists(temporal_client, params["TaskSid"])


async def test_unhandled_event_type_is_204_and_starts_nothing(gateway: Gateway, temporal_client):
    params = event_params(new_task_sid(), event_type="reservation.created")
    response = await gateway.post(params, gateway.sign(params))
    assert response.status_code == 204
    assert not await workflow_exists(temporal_client, params["TaskSid"])


async def test_an_event_for_a_terminated_workflow_starts_a_new_run(gateway: Gateway, temporal_client):
    """A terminated (or failed) run never finished its task: the next event gives it a new run. A completed run is
    never started again (tests/test_task_workflow_resilience.py sends stragglers to one)."""
    sid = new_task_sid()
    created = event_params(sid)
    handle = await signal_event(temporal_client, gateway.task_queue, task_event(created))
    await handle.terminate("test: an operator stopped it")

    late = event_params(sid, event_type="task.completed")
    response = await gateway.post(late, gateway.sign(late))
    assert response.status_code == 204
    latest = await temporal_client.get_workflow_handle(workflow_id(sid)).describe()
    assert latest.run_id != handle.result_run_id


async def test_oversized_body_is_413(gateway: Gateway):
    params = event_params(new_task_sid(), TaskAttributes=json.dumps({"blob": "x" * 70_000}))
    response = await gateway.post(params, gateway.sign(params))
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


async def test_non_form_body_is_400(gateway: Gateway):
    response = await gateway.http.post(
        gateway.events_url,
        content=b'{"TaskSid": "WT1"}',
        headers={"X-Twilio-Signature": "abc", "Content-Type": "application/json"},
    )
    assert response.status_code == 400


async def test_public_base_url_is_what_the_signature_covers(temporal_client, fresh_twilio_sandbox):
    public = "https://flexsf.example.com"
    settings = gateway_settings(fresh_twilio_sandbox, f"gateway-{uuid.uuid4()}", flexsf_public_base_url=public)
    async with run_gateway(settings, temporal_client) as gw:
        params = event_params(new_task_sid())
        local = await gw.post(params, gw.sign(params))
        assert local.status_code == 403
        response = await gw.post(params, gw.sign(params, url=f"{public}/taskrouter/events"))
        assert response.status_code == 204
        assert await workflow_exists(temporal_client, params["TaskSid"])


async def test_health_and_readiness(gateway: Gateway):
    assert (await gateway.http.get(f"{gateway.url}/healthz")).json() == {"status": "ok"}
    ready = await gateway.http.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200


async def test_temporal_unreachable_is_503_and_not_ready(fresh_twilio_sandbox):
    dead = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True, data_converter=pydantic_data_converter)
    settings = gateway_settings(fresh_twilio_sandbox, f"gateway-{uuid.uuid4()}")
    async with run_gateway(settings, dead) as gw:
        assert (await gw.http.get(f"{gw.url}/readyz")).status_code == 503
        params = event_params(new_task_sid())
        response = await gw.post(params, gw.sign(params))
        assert response.status_code == 503
        assert "Temporal" in response.json()["detail"]


async def test_without_a_client_the_lifespan_connects_through_temporal_env(
    temporal_server, temporal_client, fresh_twilio_sandbox, monkeypatch
):
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_server.address)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", temporal_server.namespace)
    settings = gateway_settings(fresh_twilio_sandbox, f"gateway-{uuid.uuid4()}")
    async with run_gateway(settings, None) as gw:
        assert (await gw.http.get(f"{gw.url}/readyz")).status_code == 200
        params = event_params(new_task_sid())
        response = await gw.post(params, gw.sign(params))
        assert response.status_code == 204
    assert await workflow_exists(temporal_client, params["TaskSid"])


async def test_an_event_refused_while_temporal_was_down_is_recorded_once_when_redelivered(
    tmp_path, fresh_twilio_sandbox
):
    """503 while Temporal is down; once it is back, the sender's retry is accepted, and a duplicate changes nothing."""
    from devtools.temporal_server import TemporalDevServer

    server = TemporalDevServer(db_file=tmp_path / "temporal.sqlite").start()
    try:
        client = await Client.connect(server.address, lazy=True, data_converter=pydantic_data_converter)
        settings = gateway_settings(fresh_twilio_sandbox, f"gateway-{uuid.uuid4()}")
        async with run_gateway(settings, client) as gw:
            params = event_params(new_task_sid())
            signature = gw.sign(params)
            server.stop()
            refused = await gw.post(params, signature)
            assert refused.status_code == 503

            server = TemporalDevServer(port=server.port, db_file=tmp_path / "temporal.sqlite").start()
            for _ in range(2):  # the retry, then a duplicate delivery of the same event
                accepted = await gw.post(params, signature)
                assert accepted.status_code == 204
            handle = client.get_workflow_handle(workflow_id(params["TaskSid"]))
            history = [e async for e in handle.fetch_history_events()]
            started = [e for e in history if e.HasField("workflow_execution_started_event_attributes")]
            signals = [e for e in history if e.HasField("workflow_execution_signaled_event_attributes")]
            # One workflow, started by the retry; the duplicate is a second signal that its handler drops by Sid.
            assert len(started) == 1 and len(signals) == 2
    finally:
        server.stop()
