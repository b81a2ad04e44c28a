"""TaskRouter event callbacks: order, signatures, parameters, and the delivery faults."""

from __future__ import annotations

import json

import pytest
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from sandboxes.twilio import TwilioSandbox
from sandboxes.twilio.demo import DEMO_WORKERS
from sandboxes.twilio.receiver import CallbackReceiver, ReceivedRequest

FULL_LIFECYCLE = [
    "task.created",
    "reservation.created",
    "reservation.accepted",
    "task.wrapup",
    "reservation.wrapup",
    "task.completed",
    "reservation.completed",
]


def _types(requests: list[ReceivedRequest]) -> list[str]:
    return [r.form["EventType"] for r in requests]


@pytest.fixture
def wired(fresh_twilio_sandbox: TwilioSandbox, callback_receiver: CallbackReceiver) -> TwilioSandbox:
    fresh_twilio_sandbox.set_callback_url(callback_receiver.url)
    return fresh_twilio_sandbox


def test_full_lifecycle_arrives_in_order_signed(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    ada = DEMO_WORKERS[0]
    task = wired.lifecycle(
        {"name": "Jane Doe", "from": "+15551230000"}, worker_sid=ada.sid, complete=True, reason="resolved"
    )
    received = callback_receiver.wait_for(len(FULL_LIFECYCLE))
    wired.wait_callbacks_idle()

    assert _types(received) == FULL_LIFECYCLE
    validator = RequestValidator(wired.auth_token)
    for request in received:
        assert request.url == callback_receiver.url
        assert validator.validate(request.url, request.form, request.headers["X-Twilio-Signature"])
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert request.headers["User-Agent"] == "TwilioProxy/1.1"
        form = request.form
        assert form["TaskSid"] == task["sid"] and form["AccountSid"] == wired.account_sid
        assert form["WorkspaceSid"] == wired.workspace_sid and form["WorkspaceName"] == "Flex Task Assignment"
        assert form["Sid"].startswith("EV") and len(form["Sid"]) == 34
        assert int(form["TimestampMs"]) // 1000 == int(form["Timestamp"])
        assert json.loads(form["TaskAttributes"])["name"] == "Jane Doe"
        assert form["TaskChannelUniqueName"] == "voice" and form["WorkflowSid"] == wired.workflow_sid

    by_type = {r.form["EventType"]: r.form for r in received}
    assert by_type["task.created"]["ResourceType"] == "Task"
    assert "WorkerSid" not in by_type["task.created"]
    accepted = by_type["reservation.accepted"]
    assert accepted["ResourceType"] == "Reservation" and accepted["ResourceSid"] == accepted["ReservationSid"]
    assert (accepted["WorkerSid"], accepted["WorkerName"]) == (ada.sid, ada.identity)
    assert json.loads(accepted["WorkerAttributes"])["email"] == ada.email
    assert accepted["TaskAssignmentStatus"] == "assigned"
    assert by_type["task.completed"]["TaskCompletedReason"] == "resolved"
    assert by_type["task.completed"]["TaskAssignmentStatus"] == "completed"

    assert [d.status for d in wired.deliveries(task_sid=task["sid"])] == [204] * len(FULL_LIFECYCLE)
    counters = wired.counters()
    assert counters["callbacks_sent"] == counters["callbacks_delivered"] == len(FULL_LIFECYCLE)


@pytest.mark.parametrize("param", ["TaskAttributes", "EventType", "TaskSid", "Timestamp"])
def test_tampering_with_any_parameter_breaks_the_signature(
    wired: TwilioSandbox, callback_receiver: CallbackReceiver, param: str
) -> None:
    wired.create_task({"name": "Jane"})
    request = callback_receiver.wait_for(1)[0]
    validator = RequestValidator(wired.auth_token)
    signature = request.headers["X-Twilio-Signature"]
    assert validator.validate(request.url, request.form, signature)
    assert not validator.validate(request.url, request.form | {param: request.form[param] + "x"}, signature)
    assert not validator.validate(request.url + "?x=1", request.form, signature)
    assert not RequestValidator("another-token").validate(request.url, request.form, signature)


def test_cancel_of_a_reserved_task(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    sid = wired.create_task({"name": "Jane"})["sid"]
    wired.reserve(sid)
    wired.cancel(sid, reason="caller hung up")
    received = callback_receiver.wait_for(4)
    assert _types(received) == ["task.created", "reservation.created", "task.canceled", "reservation.canceled"]
    assert received[2].form["TaskCanceledReason"] == "caller hung up"
    assert wired.task(sid)["assignment_status"] == "canceled"


def test_outbound_call_task(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    grace = DEMO_WORKERS[1]
    task = wired.start_outbound_call(
        grace.sid, "+15557654321", task_attributes={"sfdcObjectId": "0035g00000ABCDEAA1", "sfdcObjectType": "Contact"}
    )
    attributes = json.loads(task["attributes"])
    assert attributes["direction"] == "outbound" and attributes["outbound_to"] == "+15557654321"
    assert attributes["type"] == "outbound" and attributes["from"]
    assert attributes["sfdcObjectId"] == "0035g00000ABCDEAA1"
    assert task["assignment_status"] == "assigned"
    received = callback_receiver.wait_for(3)
    assert _types(received) == ["task.created", "reservation.created", "reservation.accepted"]
    assert received[2].form["WorkerSid"] == grace.sid


def test_callback_url_set_through_the_workspace_resource(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox, callback_receiver: CallbackReceiver
) -> None:
    sb = fresh_twilio_sandbox
    workspace = twilio_client.taskrouter.v1.workspaces(sb.workspace_sid).update(
        event_callback_url=callback_receiver.url, events_filter="task.created,task.completed"
    )
    assert workspace.event_callback_url == callback_receiver.url
    sb.lifecycle({}, complete=True)
    sb.wait_callbacks_idle()
    assert _types(callback_receiver.requests) == ["task.created", "task.completed"]
    assert len(sb.events()) == len(FULL_LIFECYCLE)  # every event is still recorded


def test_attribute_update_over_rest_emits_task_updated(
    twilio_client: Client, wired: TwilioSandbox, callback_receiver: CallbackReceiver
) -> None:
    sid = wired.lifecycle({"name": "Jane"})["sid"]
    twilio_client.taskrouter.v1.workspaces(wired.workspace_sid).tasks(sid).update(
        attributes=json.dumps({"name": "Jane", "sfdcObjectId": "001"})
    )
    received = callback_receiver.wait_for(4)
    assert received[3].form["EventType"] == "task.updated"
    assert json.loads(received[3].form["TaskAttributes"])["sfdcObjectId"] == "001"


def test_no_retry_by_default(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    callback_receiver.respond_with(500)
    wired.create_task({})
    wired.wait_callbacks_idle()
    assert [(d.attempt, d.outcome, d.status) for d in wired.deliveries()] == [(1, "failed", 500)]
    assert wired.counters()["callbacks_failed"] == 1


def test_retry_on_non_2xx_until_success(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    wired.faults.update(callback_attempts=4, callback_backoff_s=0.001)
    callback_receiver.respond_with(503, 500)
    wired.create_task({})
    wired.wait_callbacks_idle()
    assert [(d.attempt, d.status) for d in wired.deliveries()] == [(1, 503), (2, 500), (3, 204)]
    assert len({r.form["Sid"] for r in callback_receiver.requests}) == 1


def test_retry_gives_up_after_n_attempts_on_timeouts(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    wired.faults.update(callback_attempts=2, callback_backoff_s=0.001, callback_timeout_s=0.05)
    callback_receiver.delay_s = 0.2
    wired.create_task({})
    wired.wait_callbacks_idle()
    assert [(d.attempt, d.outcome, d.status) for d in wired.deliveries()] == [(1, "error", None), (2, "error", None)]


def test_drop_by_event_type_still_records_the_event(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    wired.faults.update(callback_drop_event_types=["reservation.accepted"])
    sid = wired.lifecycle({})["sid"]
    wired.wait_callbacks_idle()
    assert _types(callback_receiver.requests) == ["task.created", "reservation.created"]
    assert [e["event_type"] for e in wired.events(sid)] == [
        "task.created",
        "reservation.created",
        "reservation.accepted",
    ]
    dropped = [d for d in wired.deliveries() if d.outcome == "dropped"]
    assert [d.event_type for d in dropped] == ["reservation.accepted"]
    assert wired.counters()["callbacks_dropped"] == 1


def test_drop_fraction_one_drops_everything(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    wired.faults.update(callback_drop_fraction=1.0)
    wired.lifecycle({}, complete=True)
    wired.wait_callbacks_idle()
    assert callback_receiver.requests == []
    assert wired.counters()["callbacks_dropped"] == len(FULL_LIFECYCLE)


def test_duplicates_carry_the_same_event_sid(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    wired.faults.update(callback_duplicate_fraction=1.0)
    wired.lifecycle({})
    received = callback_receiver.wait_for(6)
    wired.wait_callbacks_idle()
    assert _types(received) == [
        "task.created",
        "task.created",
        "reservation.created",
        "reservation.created",
        "reservation.accepted",
        "reservation.accepted",
    ]
    assert received[0].form == received[1].form
    assert received[0].headers["X-Twilio-Signature"] == received[1].headers["X-Twilio-Signature"]
    assert wired.counters()["callbacks_duplicated"] == 3


def test_reorder_swaps_pairs(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    # A long flush time: the pairs must come from swapping, never from a timer releasing a half window.
    wired.faults.update(callback_reorder="swap_pairs", callback_reorder_flush_s=30)
    sid = wired.create_task({})["sid"]
    wired.reserve(sid)
    wired.cancel(sid, reason="caller hung up")
    received = callback_receiver.wait_for(4)
    assert _types(received) == ["reservation.created", "task.created", "reservation.canceled", "task.canceled"]


def test_reorder_releases_a_half_window_after_the_flush_time(
    wired: TwilioSandbox, callback_receiver: CallbackReceiver
) -> None:
    wired.faults.update(callback_reorder="swap_pairs", callback_reorder_flush_s=0.01)
    wired.create_task({})
    assert _types(callback_receiver.wait_for(1)) == ["task.created"]


def test_reorder_shuffles_a_window(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    wired.faults.update(callback_reorder="shuffle", callback_reorder_window=7, callback_reorder_flush_s=30)
    wired.lifecycle({}, complete=True)
    received = callback_receiver.wait_for(len(FULL_LIFECYCLE))
    assert sorted(_types(received)) == sorted(FULL_LIFECYCLE)
    assert _types(received) != FULL_LIFECYCLE


def test_delay_holds_callbacks_back(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    wired.faults.update(callback_delay_s=0.05)
    wired.create_task({})
    wired.wait_callbacks_idle()
    (delivery,) = wired.deliveries()
    assert delivery.at_ms - int(delivery.params["TimestampMs"]) >= 50


def test_tasks_deliver_in_parallel_but_each_in_order(wired: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    sids = [wired.lifecycle({"n": i}, complete=True)["sid"] for i in range(10)]
    received = callback_receiver.wait_for(10 * len(FULL_LIFECYCLE))
    for sid in sids:
        assert _types([r for r in received if r.form["TaskSid"] == sid]) == FULL_LIFECYCLE
