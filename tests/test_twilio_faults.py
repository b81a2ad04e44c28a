"""Injected REST failures and the per-endpoint counters."""

from __future__ import annotations

import json

import httpx
import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from flexsf.twilio_client import build_twilio_client
from sandboxes.twilio import TwilioSandbox


def test_rate_limit_fraction_one_is_429_code_20429(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.create_task({})["sid"]
    sb.faults.update(rate_limit_fraction=1.0)
    with pytest.raises(TwilioRestException) as caught:
        twilio_client.taskrouter.v1.workspaces(sb.workspace_sid).tasks(sid).fetch()
    assert (caught.value.status, caught.value.code) == (429, 20429)


def test_server_error_fraction_only_on_chosen_endpoints(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox
) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.create_task({})["sid"]
    sb.faults.update(server_error_fraction=1.0, server_error_status=503, endpoints=["task_update"])
    task = twilio_client.taskrouter.v1.workspaces(sb.workspace_sid).tasks(sid)
    assert task.fetch().sid == sid
    with pytest.raises(TwilioRestException) as caught:
        task.update(attributes=json.dumps({"a": 1}))
    assert caught.value.status == 503
    assert sb.task(sid)["attributes"] == "{}"  # a failed call changes nothing


def test_fractions_are_drawn_per_call(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.create_task({})["sid"]
    sb.faults.update(rate_limit_fraction=0.5)
    outcomes = []
    for _ in range(40):
        try:
            twilio_client.taskrouter.v1.workspaces(sb.workspace_sid).tasks(sid).fetch()
            outcomes.append("ok")
        except TwilioRestException as exc:
            outcomes.append(exc.status)
    assert set(outcomes) == {"ok", 429}


def test_fail_next_is_exact_and_then_clears(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    sb.faults.update(fail_next=[429, 500])
    config = twilio_client.flex_api.v1.configuration()
    statuses = []
    for _ in range(3):
        try:
            config.fetch()
            statuses.append(200)
        except TwilioRestException as exc:
            statuses.append(exc.status)
    assert statuses == [429, 500, 200]


def test_counters_count_every_call_per_endpoint(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    ws = twilio_client.taskrouter.v1.workspaces(sb.workspace_sid)
    sid = ws.tasks.create(attributes="{}").sid
    ws.tasks(sid).fetch()
    ws.tasks(sid).fetch()
    ws.tasks(sid).update(attributes=json.dumps({"a": 1}))
    ws.events.list(task_sid=sid)
    twilio_client.flex_api.v1.configuration().fetch()
    httpx.post(
        f"{sb.url}/v1/Accounts/{sb.account_sid}/Tokens/validate",
        json={"token": "x"},
        auth=(sb.account_sid, sb.auth_token),
    )
    counters = sb.counters()
    assert {
        k: counters[k]
        for k in ("task_create", "task_fetch", "task_update", "events_list", "configuration_fetch", "token_validate")
    } == {
        "task_create": 1,
        "task_fetch": 2,
        "task_update": 1,
        "events_list": 1,
        "configuration_fetch": 1,
        "token_validate": 1,
    }
    sb.reset_counters()
    assert sb.counters()["callbacks_sent"] == 0 and "task_fetch" not in sb.counters()


def test_reset_clears_faults_tasks_and_callback_url(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    sb.faults.update(rate_limit_fraction=1.0, conflict_next=3)
    sb.set_callback_url("http://127.0.0.1:9/nowhere")
    sb.create_task({})
    sb.reset()
    assert sb.faults.config.rate_limit_fraction == 0 and sb.faults.config.conflict_next == 0
    assert sb.tasks() == [] and sb.events() == [] and sb.info["callback_url"] is None


def test_unknown_fault_settings_are_refused(fresh_twilio_sandbox: TwilioSandbox) -> None:
    with pytest.raises(ValueError):
        fresh_twilio_sandbox.faults.update(rate_limit=1.0)
    response = httpx.post(f"{fresh_twilio_sandbox.control_url}/faults", json={"callback_reorder": "sideways"})
    assert response.status_code == 400


def test_latency_trips_a_short_client_timeout(fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    impatient = build_twilio_client(sb.account_sid, sb.auth_token, base_url=sb.url, timeout=0.05)
    sb.faults.update(latency_s=0.3, endpoints=["configuration_fetch"])
    with pytest.raises(requests.exceptions.Timeout):
        impatient.flex_api.v1.configuration().fetch()
    assert impatient.taskrouter.v1.workspaces(sb.workspace_sid).fetch().sid == sb.workspace_sid
