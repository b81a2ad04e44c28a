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
from sandboxes.twilio.receiver import CallbackReceiver


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


def test_a_refused_endpoint_counts_its_refusals_and_leaves_the_others_alone(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox
) -> None:
    sb = fresh_twilio_sandbox
    sb.faults.update(refused_endpoints={"events_list": 401})
    refused = httpx.get(f"{sb.url}/v1/Workspaces/{sb.workspace_sid}/Events", auth=(sb.account_sid, sb.auth_token))
    assert (refused.status_code, refused.json()["code"]) == (401, 20003)
    assert twilio_client.flex_api.v1.configuration().fetch().account_sid == sb.account_sid
    counters = sb.counters()
    assert (counters["events_list"], counters["events_list_refused"]) == (1, 1)
    assert "configuration_fetch_refused" not in counters


def test_a_share_of_tasks_loses_every_callback_and_the_sandbox_names_them(
    fresh_twilio_sandbox: TwilioSandbox, callback_receiver: CallbackReceiver
) -> None:
    sb = fresh_twilio_sandbox
    sb.set_callback_url(callback_receiver.url)
    sb.faults.update(callback_drop_task_fraction=0.25, callback_duplicate_fraction=1.0)
    sids = [sb.lifecycle({}, complete=True)["sid"] for _ in range(8)]
    sb.wait_callbacks_idle()

    chosen = sb.tasks_without_callbacks()
    assert len(chosen) == 2 and chosen[0] in sids[:4] and chosen[1] in sids[4:]  # one in four, evenly spread
    assert {r.form["TaskSid"] for r in callback_receiver.requests} == set(sids) - set(chosen)
    for sid in chosen:
        assert len(sb.events(sid)) == 7  # TaskRouter still lists what happened: only the callbacks were lost
        assert [d.outcome for d in sb.deliveries(sid)] == ["dropped"] * 7  # not even a duplicate went out
    assert httpx.get(f"{sb.control_url}/tasks-without-callbacks").json() == {"task_sids": chosen}
    assert sb.counters()["tasks_without_callbacks"] == 2

    sb.faults.update(callback_drop_task_fraction=0.0)
    later = sb.lifecycle({})["sid"]
    sb.wait_callbacks_idle()
    assert sb.tasks_without_callbacks() == chosen and later in {r.form["TaskSid"] for r in callback_receiver.requests}


def test_the_tasks_losing_their_callbacks_are_chosen_the_same_way_after_every_reset(
    fresh_twilio_sandbox: TwilioSandbox,
) -> None:
    """Seeded: the same positions in the order of creation, so a soak can be repeated (sids themselves are random)."""
    sb = fresh_twilio_sandbox

    def positions() -> list[int]:
        sb.reset()
        sb.faults.update(callback_drop_task_fraction=0.1)
        sids = [sb.create_task({})["sid"] for _ in range(30)]
        return [sids.index(sid) for sid in sb.tasks_without_callbacks()]

    first = positions()
    assert len(first) == 3 and first[0] < 10 and first == positions()
    sb.reset()
    assert sb.tasks_without_callbacks() == [] and sb.counters()["tasks_without_callbacks"] == 0


def test_a_task_share_out_of_range_is_refused(fresh_twilio_sandbox: TwilioSandbox) -> None:
    with pytest.raises(ValueError):
        fresh_twilio_sandbox.faults.update(callback_drop_task_fraction=1.5)
    response = httpx.post(f"{fresh_twilio_sandbox.control_url}/faults", json={"callback_drop_task_fraction": "most"})
    assert response.status_code == 400


def test_callback_params_are_what_each_event_is_posted_and_signed_with(
    fresh_twilio_sandbox: TwilioSandbox, callback_receiver: CallbackReceiver
) -> None:
    """What a soak needs to forge a validly signed callback of its own for a task."""
    sb = fresh_twilio_sandbox
    sb.set_callback_url(callback_receiver.url)
    sid = sb.lifecycle({"from": "+15550100"})["sid"]
    received = callback_receiver.wait_for(3)
    params = sb.callback_params(sid)
    assert [p["EventType"] for p in params] == ["task.created", "reservation.created", "reservation.accepted"]
    assert [r.form for r in received] == params
