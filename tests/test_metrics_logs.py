"""Operability: the worker's Prometheus endpoint, the gateway's metrics listener, structured and redacted logs.

Tasks run through the real stack (Temporal dev server, in-process worker, both sandboxes); metrics are scraped over
HTTP. The worker's counters live in the session's one Temporal runtime, so they are read by this test's task queue
(a label Temporal adds to activity metrics) or as a difference before/after.
"""

from __future__ import annotations

import io
import json
import logging
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flexsf import logs
from flexsf.models import Stage
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import gateway_settings, run_gateway
from tests.test_gateway_webhook import event_params, new_task_sid

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT


# ---- helpers -------------------------------------------------------------------------------------------------------


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def total(found: list, name: str, **labels: str) -> float:
    return sum(value for n, got, value in found if n == name and all(got.get(k) == v for k, v in labels.items()))


def scrape(url: str) -> list:
    response = httpx.get(url, timeout=30, trust_env=False)
    assert response.status_code == 200
    return samples(response.text)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def captured_logs():
    """Every log record of the test through flexsf's handler, as JSON lines in memory, at INFO and above."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.setup_logging(level="INFO", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def run_task(stack, fail_salesforce_calls: int = 0):
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    if fail_salesforce_calls:
        stack.sf.faults.set(fail_next=fail_salesforce_calls)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED
    return sid, view


# ---- worker metrics ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "0"}], indirect=True)
async def test_worker_exports_product_and_sdk_metrics(stack, worker_metrics_url) -> None:
    queue = {"task_queue": stack.task_queue}
    before = scrape(worker_metrics_url)
    assert total(before, "flexsf_salesforce_task_writes_total", **queue) == 0

    await run_task(stack)  # one clean task
    await run_task(stack, fail_salesforce_calls=2)  # its log fails twice (503) and succeeds on the third attempt

    after = scrape(worker_metrics_url)
    assert total(after, "flexsf_salesforce_task_writes_total", result="created", **queue) == 2
    assert total(after, "flexsf_salesforce_task_writes_total", result="failed", **queue) == 2
    assert total(after, "flexsf_salesforce_task_writes_total", result="amended", **queue) == 0
    assert total(after, "flexsf_salesforce_retries_total", activity_type="log_activity", **queue) == 2
    assert total(after, "flexsf_twilio_retries_total", **queue) == 0

    # Salesforce calls by kind and status: one login, a search per task, an upsert per task, the two 503s.
    sf_calls = "flexsf_salesforce_calls_total"
    assert total(after, sf_calls, kind="token", status="200", **queue) == 1
    assert total(after, sf_calls, kind="search", status="200", **queue) == 2
    assert total(after, sf_calls, kind="sobject", method="PATCH", status="201", **queue) == 2
    assert total(after, sf_calls, status="503", **queue) == 2

    # Twilio calls: the Flex configuration, and per task one fetch and one ETag-guarded update of the attributes.
    tw_calls = "flexsf_twilio_calls_total"
    assert total(after, tw_calls, product="flex_api", method="GET", status="200", **queue) >= 1
    assert total(after, tw_calls, product="taskrouter", method="POST", status="200", **queue) == 2
    assert total(after, tw_calls, product="taskrouter", method="GET", status="200", **queue) == 2

    # The org's API usage as Salesforce last reported it (nothing called Salesforce since the last log).
    assert total(after, "flexsf_salesforce_api_usage") == stack.sf.counters()["api_usage"] > 0
    assert total(after, "flexsf_salesforce_api_limit") == stack.activities.connection.api_usage[1] > 0

    # Temporal's own metrics come out of the same endpoint.
    names = {name for name, _, _ in after}
    assert any(name.startswith("temporal_activity_execution") for name in names), sorted(names)
    assert total(after, "temporal_workflow_completed_total", workflow_type="FlexTaskWorkflow", **queue) == 2


# ---- structured logs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "0"}], indirect=True)
async def test_task_log_lines_are_json_with_task_sid_and_no_secret(stack, captured_logs) -> None:
    secrets = [stack.tw.auth_token, stack.sf.info["client_secret"]]
    logs.register_secrets(secrets)
    sid, view = await run_task(stack)
    access_token = stack.activities.connection.call(lambda sf: sf.session_id)
    lines = json_lines(captured_logs)

    ours = [line for line in lines if line["task_sid"] == sid]
    assert ours, lines[-20:]
    assert all(line["workflow_id"] == workflow_id(sid) for line in ours)
    assert {"ts", "level", "logger", "message"} <= set(ours[0])
    logged = [line for line in ours if line["logger"] == "flexsf.activities.salesforce"]
    assert [line["message"] for line in logged] == [f"Salesforce Task {view.activity_id} created"]
    assert any(line["logger"] == "twilio.http_client" for line in ours)  # the SDK's lines carry the task too

    text = captured_logs.getvalue()
    for secret in [*secrets, access_token]:
        assert secret not in text


def test_redaction_masks_tokens_secrets_and_authorization_headers() -> None:
    stream = io.StringIO()
    handler = logs.make_handler(stream, json_lines=True)
    logger = logging.getLogger(f"test.redaction.{uuid.uuid4().hex[:8]}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    registered = "s3cr3t-Registered-Value"
    logs.register_secrets([registered])
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLXZhbHVl"
    session = "00D000000000001AAA!AQ4AQH0dMHZfz972Szmpkb58urFRkgeBGsxL"
    hex_token = "0123456789abcdef0123456789abcdef"
    task_sid = "WT" + "a" * 32
    try:
        logger.info("headers %s", {"Authorization": "Bearer abc.def.ghi", "Accept": "application/json"})
        logger.info("Authorization: Basic QUMxMjM6dG9rZW4=")
        logger.info("form client_secret=hunter2hunter&grant_type=client_credentials&client_id=ok-to-show")
        logger.info('body {"password": "pa55word!", "username": "agent@example.com"}')
        logger.info("flex token %s and session %s", jwt, session)
        logger.info("auth token %s of account AC%s for task %s", hex_token, "b" * 32, task_sid)
        logger.info("the configured value %s leaked", registered)
        try:
            raise ValueError(f"bad token={hex_token}")
        except ValueError:
            logger.exception("failed with Bearer %s", jwt)
    finally:
        logger.removeHandler(handler)

    text = stream.getvalue()
    for secret in [
        "abc.def.ghi",
        "QUMxMjM6dG9rZW4=",
        "hunter2hunter",
        "pa55word!",
        jwt,
        session,
        hex_token,
        registered,
    ]:
        assert secret not in text, secret
    lines = json_lines(stream)
    assert len(lines) == 8
    assert "application/json" in lines[0]["message"] and logs.MASK in lines[0]["message"]
    assert "grant_type=client_credentials" in lines[2]["message"] and "client_id=ok-to-show" in lines[2]["message"]
    assert "agent@example.com" in lines[3]["message"]
    assert f"AC{'b' * 32}" in lines[5]["message"] and task_sid in lines[5]["message"]  # sids stay readable
    assert "ValueError" in lines[7]["exception"] and logs.MASK in lines[7]["exception"]


def test_bound_task_is_on_every_line_and_a_terminal_gets_readable_lines() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    task_sid = "WT" + "c" * 32
    json_stream, tty = io.StringIO(), Terminal()
    logger = logging.getLogger(f"test.context.{uuid.uuid4().hex[:8]}")
    handlers = [logs.make_handler(json_stream), logs.make_handler(tty)]
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    with logs.bind_task(task_sid):
        logger.info("inside")
    logger.info("outside")
    for handler in handlers:
        logger.removeHandler(handler)

    inside, outside = json_lines(json_stream)
    assert (inside["task_sid"], inside["workflow_id"]) == (task_sid, f"flex-task-{task_sid}")
    assert (outside["task_sid"], outside["workflow_id"]) == (None, None)
    readable = tty.getvalue().splitlines()
    assert f"[{task_sid}] inside" in readable[0] and not readable[0].startswith("{")
    assert readable[1].endswith(" outside") and "[" not in readable[1]


# ---- gateway metrics -----------------------------------------------------------------------------------------------


async def test_gateway_metrics_count_requests_and_taskrouter_outcomes(
    temporal_client, fresh_twilio_sandbox, captured_logs
) -> None:
    settings = gateway_settings(fresh_twilio_sandbox, f"gateway-{uuid.uuid4()}")
    async with run_gateway(settings, temporal_client) as gw:
        signed = event_params(new_task_sid())
        assert (await gw.post(signed, gw.sign(signed))).status_code == 204
        forged = event_params(new_task_sid())
        assert (await gw.post(forged, gw.sign(forged, token="f" * 32))).status_code == 403
        unhandled = event_params(new_task_sid(), event_type="worker.activity.update")
        assert (await gw.post(unhandled, gw.sign(unhandled))).status_code == 204
        malformed = event_params(new_task_sid(), TaskAttributes="{not json")
        assert (await gw.post(malformed, gw.sign(malformed))).status_code == 400
        assert (await gw.http.get(f"{gw.url}/nowhere/{uuid.uuid4()}")).status_code == 404

        response = await gw.http.get(gw.metrics_url)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        # Not on the public port: that faces the internet.
        assert (await gw.http.get(f"{gw.url}/metrics")).status_code == 404

    events = "flexsf_taskrouter_events_total"
    assert total(found, events, type="task.created", outcome="signalled") == 1
    assert total(found, events, type="unverified", outcome="rejected_signature") == 1
    assert total(found, events, type="worker.activity.update", outcome="ignored") == 1
    assert total(found, events, type="task.created", outcome="malformed") == 1
    assert total(found, events) == 4

    requests_total = "flexsf_gateway_requests_total"
    route = {"route": "/taskrouter/events", "method": "POST"}
    assert total(found, requests_total, status="204", **route) == 2
    assert total(found, requests_total, status="403", **route) == 1
    assert total(found, requests_total, status="400", **route) == 1
    assert total(found, requests_total, route="unmatched", status="404") == 1
    assert not [labels for name, labels, _ in found if "nowhere" in labels.get("route", "")]

    lines = [line for line in json_lines(captured_logs) if line["logger"] == "flexsf.gateway.taskrouter"]
    [signalled] = [line for line in lines if line["task_sid"] == signed["TaskSid"]]
    assert signalled["workflow_id"] == workflow_id(signed["TaskSid"]) and "signalled" in signalled["message"]
    assert fresh_twilio_sandbox.auth_token not in captured_logs.getvalue()


def test_redaction_of_a_very_long_caller_name_keeps_it_and_masks_what_follows() -> None:
    # A caller's name is caller data: 100k word characters once kept the redaction scan busy for minutes
    # (quadratic backtracking); the name must come through untouched and the secret after it masked.
    name = "a" * 100_000
    text = f"caller {name} then client_secret=hunter22 and x_{name}_token=abc123"
    redacted = logs.redact(text)
    assert "hunter22" not in redacted and "abc123" not in redacted
    assert redacted.startswith(f"caller {name} then client_secret=")
