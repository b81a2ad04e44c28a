"""What the TaskRouter webhook believes of a callback (issue 14, items 4 and 6): the URL it was signed for, whose it
is, when it was sent, what it names — and what it lets reach the log. Real HTTP, the real Temporal dev server.

Every refused callback is checked to have started nothing and signalled nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from twilio.request_validator import RequestValidator

from devtools.netutil import free_port
from flexsf.settings import ConfigurationError
from flexsf.vocabulary import workflow_id
from gateway.app import create_app
from gateway.routes.taskrouter import TASK_SID, RefusalLog
from gateway.server import start_gateway, stop_gateway
from ops.tasks import workflow_exists
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import Gateway, gateway_settings, run_gateway
from tests.test_gateway_webhook import event_params, new_task_sid
from tests.test_poison_intake import post_bytes, sign_bytes

pytestmark = pytest.mark.asyncio(loop_scope="session")

TASKROUTER_LOG = "flexsf.gateway.taskrouter"


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(temporal_client: Client, fresh_twilio_sandbox) -> AsyncIterator[Gateway]:
    settings = gateway_settings(fresh_twilio_sandbox, f"trust-{uuid.uuid4()}")
    async with run_gateway(settings, temporal_client) as gw:
        yield gw


async def signals(client: Client, task_sid: str) -> int:
    handle = client.get_workflow_handle(workflow_id(task_sid))
    history = [e async for e in handle.fetch_history_events()]
    return sum(e.HasField("workflow_execution_signaled_event_attributes") for e in history)


async def assert_refused_and_inert(gateway: Gateway, client: Client, params: dict, status: int) -> dict:
    """Post `params` validly signed, expect `status`, and check no workflow was started or signalled by it: once for a
    new task, once for a task whose workflow exists (started by a good callback)."""
    sid = params["TaskSid"]
    response = await gateway.post(params, gateway.sign(params))
    assert response.status_code == status, response.text
    if TASK_SID.fullmatch(sid):
        assert not await workflow_exists(client, sid)
        known = new_task_sid()
        good = event_params(known)
        assert (await gateway.post(good, gateway.sign(good))).status_code == 204
        again = {**params, "TaskSid": known}
        assert (await gateway.post(again, gateway.sign(again))).status_code == status
        assert await signals(client, known) == 1
    return response.json()


# ---- the URL the signature covers ----------------------------------------------------------------------------------


async def test_the_gateway_does_not_start_without_a_public_base_url_or_our_sids(fresh_twilio_sandbox):
    sb = fresh_twilio_sandbox
    with pytest.raises(ConfigurationError, match="FLEXSF_PUBLIC_BASE_URL") as refused:
        create_app(gateway_settings(sb, "q"))
    assert "Host" in str(refused.value) and sb.auth_token not in str(refused.value)
    with pytest.raises(ConfigurationError, match="TWILIO_WORKSPACE_SID"):
        create_app(gateway_settings(sb, "q", twilio_workspace_sid=None, flexsf_public_base_url="https://x.example"))
    with pytest.raises(ConfigurationError, match="TWILIO_ACCOUNT_SID"):
        create_app(gateway_settings(sb, "q", twilio_account_sid=None, flexsf_public_base_url="https://x.example"))
    create_app(gateway_settings(sb, "q"), dev=True)  # `flexsf dev` only: its own socket address stands in
    for bad in ("flexsf.example.com", "ftp://x.example", "https://x.example/?a=1"):
        with pytest.raises(ValueError, match="the URL Twilio calls"):
            gateway_settings(sb, "q", flexsf_public_base_url=bad)


async def test_the_host_header_never_decides_the_signed_url(gateway: Gateway, temporal_client):
    """A signature made for another URL of the same account (captured elsewhere) does not pass by sending its Host."""
    params = event_params(new_task_sid())
    elsewhere = "https://other-endpoint.example.com/taskrouter/events"
    response = await gateway.http.post(
        gateway.events_url,
        data=params,
        headers={"X-Twilio-Signature": gateway.sign(params, url=elsewhere), "Host": "other-endpoint.example.com"},
    )
    assert response.status_code == 403
    assert not await workflow_exists(temporal_client, params["TaskSid"])


async def test_in_dev_the_socket_address_is_signed_not_the_host(temporal_client, fresh_twilio_sandbox):
    port = free_port()
    app = create_app(gateway_settings(fresh_twilio_sandbox, f"dev-{uuid.uuid4()}"), temporal_client, dev=True)
    server, task = await start_gateway(app, "127.0.0.1", port)
    try:
        url = f"http://127.0.0.1:{port}/taskrouter/events"
        async with httpx.AsyncClient(trust_env=False) as http:
            params = event_params(new_task_sid())
            spoofed = gateway_sign(fresh_twilio_sandbox, params, "http://evil.example/taskrouter/events")
            refused = await http.post(url, data=params, headers={"X-Twilio-Signature": spoofed, "Host": "evil.example"})
            assert refused.status_code == 403
            signed = gateway_sign(fresh_twilio_sandbox, params, url)
            accepted = await http.post(url, data=params, headers={"X-Twilio-Signature": signed, "Host": "evil.example"})
            assert accepted.status_code == 204
    finally:
        await stop_gateway(server, task)


def gateway_sign(sandbox, params: dict, url: str) -> str:
    return RequestValidator(sandbox.auth_token).compute_signature(url, params)


# ---- whose callback ------------------------------------------------------------------------------------------------

OTHER_ACCOUNT = "AC" + "f" * 32
OTHER_WORKSPACE = "WS" + "f" * 32


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"AccountSid": OTHER_ACCOUNT}, "another Twilio account"),
        ({"AccountSid": ""}, "another Twilio account"),
        ({"WorkspaceSid": OTHER_WORKSPACE}, "another TaskRouter workspace"),
        ({"WorkspaceSid": tw_demo.DEMO_WORKSPACE_SID.upper()}, "another TaskRouter workspace"),
    ],
    ids=["other-account", "no-account", "other-workspace", "workspace-in-other-case"],
)
async def test_a_signed_callback_of_another_account_or_workspace_is_403(gateway, temporal_client, change, reason):
    params = event_params(new_task_sid(), **change)
    body = await assert_refused_and_inert(gateway, temporal_client, params, 403)
    assert reason in body["detail"]
    assert (await gateway.taskrouter_events()).get(("task.created", "refused")) == 2


# ---- when it was sent ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (lambda now: str(int(now - 301)), 403),  # older than FLEXSF_CALLBACK_MAX_AGE_S (300)
        (lambda now: "946684800", 403),  # 2000-01-01: the timestamp the review's replay used
        (lambda now: str(int(now + 120)), 403),  # beyond the minute of clock skew allowed ahead
        (lambda now: "2000-01-01T00:00:00Z", 403),
        (lambda now: "", 400),
        (lambda now: "yesterday", 400),
        (lambda now: "nan", 400),
    ],
    ids=["stale", "year-2000", "future", "iso-stale", "missing", "words", "nan"],
)
async def test_a_callback_outside_the_time_window_is_refused(gateway, temporal_client, sent, status):
    params = event_params(new_task_sid(), Timestamp=sent(time.time()))
    params.pop("TimestampMs")
    body = await assert_refused_and_inert(gateway, temporal_client, params, status)
    assert "Timestamp" in body["detail"]


@pytest.mark.parametrize(
    "sent",
    [
        lambda now: str(int(now - 290)),
        lambda now: str(int(now + 30)),
        lambda now: f"{now:.3f}",
        lambda now: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 5)),
    ],
    ids=["old-but-within", "skewed-ahead", "fractional", "iso"],
)
async def test_a_callback_inside_the_window_is_delivered(gateway, temporal_client, sent):
    params = event_params(new_task_sid(), Timestamp=sent(time.time()))
    params.pop("TimestampMs")
    assert (await gateway.post(params, gateway.sign(params))).status_code == 204
    assert await workflow_exists(temporal_client, params["TaskSid"])


async def test_the_window_is_configurable(temporal_client, fresh_twilio_sandbox):
    settings = gateway_settings(fresh_twilio_sandbox, f"trust-{uuid.uuid4()}", flexsf_callback_max_age_s=5)
    async with run_gateway(settings, temporal_client) as gw:
        params = event_params(new_task_sid(), Timestamp=str(int(time.time() - 30)))
        params.pop("TimestampMs")
        response = await gw.post(params, gw.sign(params))
        assert response.status_code == 403 and "more than 5 seconds old" in response.json()["detail"]


# ---- what it names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_sid",
    ["x", "WT/../../foo", "WT" + "A" * 32, "WT" + "0" * 31, "WT" + "0" * 33, "wt" + "0" * 32, "WT" + "0" * 31 + "\n"],
    ids=["x", "path", "upper-hex", "short", "long", "lower-prefix", "newline"],
)
@pytest.mark.parametrize("event_type", ["task.created", "reservation.created"], ids=["handled", "unhandled"])
async def test_a_malformed_task_sid_is_400_whatever_the_event(gateway, temporal_client, task_sid, event_type):
    params = event_params(task_sid, event_type=event_type)
    body = await assert_refused_and_inert(gateway, temporal_client, params, 400)
    assert body["detail"] == "TaskSid is not a TaskRouter task sid (WT and 32 lowercase hex digits)"
    assert not await workflow_exists(temporal_client, task_sid)
    assert (await gateway.taskrouter_events()).get((event_type, "malformed")) == 1


# ---- what reaches the log ------------------------------------------------------------------------------------------


async def test_forged_callbacks_are_counted_and_logged_as_one_line_without_their_content(
    gateway: Gateway, temporal_client, caplog
):
    caplog.set_level(logging.INFO)
    for i in range(50):
        params = event_params(new_task_sid(), event_type=f"task.created\nFORGED-{i}")
        await gateway.post(params, gateway.sign(params, token="f" * 32) if i % 2 else None)
    lines = [r.getMessage() for r in caplog.records if r.name == TASKROUTER_LOG]
    assert len(lines) == 1 and lines[0].startswith("TaskRouter callbacks refused"), lines
    assert "FORGED" not in caplog.text
    counted = await gateway.taskrouter_events()
    assert counted == {("unverified", "rejected_signature"): 50}


async def test_refused_replays_of_a_signed_callback_are_logged_as_one_line(gateway: Gateway, caplog):
    caplog.set_level(logging.INFO)
    stale = event_params(new_task_sid(), Timestamp=str(int(time.time() - 3600)))
    stale.pop("TimestampMs")
    signature = gateway.sign(stale)
    for _ in range(30):
        assert (await gateway.post(stale, signature)).status_code == 403
    lines = [r.getMessage() for r in caplog.records if r.name == TASKROUTER_LOG]
    assert lines == ["TaskRouter callbacks refused: 1 with a stale Timestamp"]
    assert (await gateway.taskrouter_events()) == {("task.created", "refused"): 30}


async def test_control_characters_from_a_verified_callback_are_escaped_in_the_log(
    gateway: Gateway, temporal_client, caplog
):
    caplog.set_level(logging.INFO)
    sid = new_task_sid()
    fields = {name: value.encode() for name, value in event_params(sid).items()}
    fields["Note\nINJECTED line\x1b[31m"] = b"\xed\xa0\x80"  # a parameter name of the sender's choosing, unreadable
    response = await post_bytes(gateway, fields, sign_bytes(gateway, fields))
    assert response.status_code == 204
    [line] = [r.getMessage() for r in caplog.records if "U+FFFD" in r.getMessage()]
    assert "\n" not in line and "\x1b" not in line and "Note\\nINJECTED line\\x1b[31m" in line


async def test_a_503_names_no_temporal_internals(fresh_twilio_sandbox, caplog):
    caplog.set_level(logging.WARNING)
    dead = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True, data_converter=pydantic_data_converter)
    async with run_gateway(gateway_settings(fresh_twilio_sandbox, f"trust-{uuid.uuid4()}"), dead) as gw:
        params = event_params(new_task_sid())
        response = await gw.post(params, gw.sign(params))
    assert response.status_code == 503
    assert response.json() == {"detail": "Temporal is unavailable; retry later"}
    assert "Temporal is unreachable" in caplog.text  # the details are the operator's, in the log


async def test_the_refusal_line_sums_up_each_minute(caplog):
    caplog.set_level(logging.WARNING)
    now = [0.0]
    refusals = RefusalLog(interval_s=60, clock=lambda: now[0])
    for second in range(200):  # 200 refusals over 200 s: four lines
        now[0] = float(second)
        refusals.note("with a wrong signature" if second % 4 else "without a signature")
    lines = [r.getMessage() for r in caplog.records if r.name == TASKROUTER_LOG]
    assert lines == [
        "TaskRouter callbacks refused: 1 without a signature",
        "TaskRouter callbacks refused in the last 60s: 45 with a wrong signature, 15 without a signature",
        "TaskRouter callbacks refused in the last 60s: 45 with a wrong signature, 15 without a signature",
        "TaskRouter callbacks refused in the last 60s: 45 with a wrong signature, 15 without a signature",
    ]
