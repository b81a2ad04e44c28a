"""TaskRouter resources through the real twilio SDK: ETags, If-Match, errors, purge, Events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from sandboxes.twilio import TwilioSandbox
from sandboxes.twilio.demo import DEMO_WORKERS
from sandboxes.twilio.receiver import CallbackReceiver
from sandboxes.twilio.state import CONCURRENT_WRITER_KEY

SID_HEX = set("0123456789abcdef")


def _ws(client: Client, sb: TwilioSandbox):
    return client.taskrouter.v1.workspaces(sb.workspace_sid)


def test_task_json_matches_twilio(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    created = _ws(twilio_client, sb).tasks.create(attributes=json.dumps({"from": "+15551230000"}), task_channel="voice")
    assert len(created.sid) == 34 and created.sid.startswith("WT") and set(created.sid[2:]) <= SID_HEX
    assert created.assignment_status == "pending"
    assert json.loads(created.attributes) == {"from": "+15551230000"}
    assert created.task_channel_unique_name == "voice"
    assert created.workflow_sid == sb.workflow_sid and created.workspace_sid == sb.workspace_sid
    assert created.account_sid == sb.account_sid
    assert created.date_created is not None and created.date_created.tzinfo is not None
    assert created.links["reservations"].endswith(f"/Tasks/{created.sid}/Reservations")


def test_etag_changes_on_every_update_and_stale_if_match_is_412(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox
) -> None:
    task = _ws(twilio_client, fresh_twilio_sandbox).tasks.create(attributes="{}")
    context = _ws(twilio_client, fresh_twilio_sandbox).tasks(task.sid)

    fetched = context.fetch_with_http_info()
    etag = fetched.headers["ETag"]
    updated = context.update_with_http_info(attributes=json.dumps({"a": 1}), if_match=etag)
    assert updated.headers["ETag"] != etag
    assert json.loads(updated.data.attributes) == {"a": 1}

    with pytest.raises(TwilioRestException) as caught:
        context.update(attributes=json.dumps({"a": 2}), if_match=etag)
    assert (caught.value.status, caught.value.code) == (412, 20412)

    # DELETE honours If-Match too. (twilio-python 9.13's TaskContext.delete drops its if_match argument,
    # so this goes over plain HTTP.)
    sb = fresh_twilio_sandbox
    url = f"{sb.url}/v1/Workspaces/{sb.workspace_sid}/Tasks/{task.sid}"
    stale = httpx.delete(url, auth=(sb.account_sid, sb.auth_token), headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json() == {
        "code": 20412,
        "message": stale.json()["message"],
        "more_info": "https://www.twilio.com/docs/errors/20412",
        "status": 412,
    }

    # Without If-Match the write is unconditional.
    context.update(attributes=json.dumps({"a": 3}))
    assert json.loads(context.fetch().attributes) == {"a": 3}


def test_412_storm_makes_if_match_stale_and_read_merge_write_recovers(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox
) -> None:
    sb = fresh_twilio_sandbox
    task = _ws(twilio_client, sb).tasks.create(attributes=json.dumps({"keep": True}))
    context = _ws(twilio_client, sb).tasks(task.sid)
    sb.faults.update(conflict_next=2)

    conflicts = 0
    while True:  # what production code does: re-read, merge, write with the new ETag
        current = context.fetch_with_http_info()
        merged = json.loads(current.data.attributes) | {"sfdcObjectId": "003000000000001AAA"}
        try:
            context.update(attributes=json.dumps(merged), if_match=current.headers["ETag"])
            break
        except TwilioRestException as exc:
            assert exc.code == 20412
            conflicts += 1
            assert conflicts <= 2, "the storm was told to last two writes"

    final = json.loads(context.fetch().attributes)
    assert conflicts == 2
    assert final == {"keep": True, "sfdcObjectId": "003000000000001AAA", CONCURRENT_WRITER_KEY: 2}


@pytest.mark.parametrize(
    ("params", "message_part"),
    [
        ({"attributes": "{not json"}, "valid JSON"),
        ({"attributes": "[1, 2]"}, "valid JSON"),
        ({"assignment_status": "canceled"}, "Reason is required"),
        ({"assignment_status": "completed", "reason": "done"}, "cannot move to completed"),
        ({"assignment_status": "assigned"}, "cannot be set"),
    ],
)
def test_bad_updates_are_400_code_20001(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox, params: dict[str, str], message_part: str
) -> None:
    task = _ws(twilio_client, fresh_twilio_sandbox).tasks.create(attributes="{}")
    with pytest.raises(TwilioRestException) as caught:
        _ws(twilio_client, fresh_twilio_sandbox).tasks(task.sid).update(**params)
    assert (caught.value.status, caught.value.code) == (400, 20001)
    assert message_part in caught.value.msg


def test_complete_over_rest_requires_reason_and_records_it(
    twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox
) -> None:
    sb = fresh_twilio_sandbox
    sid = sb.lifecycle({"name": "Jane"})["sid"]
    done = _ws(twilio_client, sb).tasks(sid).update(assignment_status="completed", reason="resolved")
    assert (done.assignment_status, done.reason) == ("completed", "resolved")
    with pytest.raises(TwilioRestException) as caught:
        _ws(twilio_client, sb).tasks(sid).update(attributes="{}")
    assert caught.value.code == 20001


def test_unknown_task_is_404_code_20404(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    with pytest.raises(TwilioRestException) as caught:
        _ws(twilio_client, fresh_twilio_sandbox).tasks("WT" + "0" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_finished_tasks_are_purged_then_404(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    done = sb.lifecycle({"name": "Jane"}, complete=True)["sid"]
    running = sb.lifecycle({"name": "Joe"})["sid"]
    assert sb.purge_finished() == [done]
    with pytest.raises(TwilioRestException) as caught:
        _ws(twilio_client, sb).tasks(done).fetch()
    assert caught.value.code == 20404
    assert _ws(twilio_client, sb).tasks(running).fetch().assignment_status == "assigned"
    assert [e["event_type"] for e in sb.events(done)][-1] == "task.deleted"


def test_retention_purges_on_its_own(fresh_twilio_sandbox: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    sb = fresh_twilio_sandbox
    sb.set_callback_url(callback_receiver.url)
    sb.set_retention(0.05)
    sid = sb.lifecycle({}, complete=True)["sid"]  # 7 events, then task.deleted when retention runs out
    received = callback_receiver.wait_for(8)
    assert received[-1].form["EventType"] == "task.deleted"
    assert received[-1].form["TaskSid"] == sid
    assert sb.tasks() == []


def test_reservations_and_workers(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    grace = DEMO_WORKERS[1]
    sid = sb.create_task({"name": "Jane"})["sid"]
    sb.reserve(sid, grace.sid)
    sb.accept(sid)
    reservations = _ws(twilio_client, sb).tasks(sid).reservations.list()
    assert [(r.worker_sid, r.worker_name, r.reservation_status) for r in reservations] == [
        (grace.sid, grace.identity, "accepted")
    ]
    worker = _ws(twilio_client, sb).workers(grace.sid).fetch()
    assert json.loads(worker.attributes)["email"] == "grace.hopper@example.com"
    assert json.loads(worker.attributes)["full_name"] == "Grace Hopper"
    assert worker.activity_name == "Available" and worker.available
    assert {w.sid for w in _ws(twilio_client, sb).workers.list()} == {w.sid for w in DEMO_WORKERS}


def test_task_list_filters_by_status_and_pages(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    pending = {sb.create_task({"n": i})["sid"] for i in range(5)}
    sb.lifecycle({"n": "assigned"})
    listed = _ws(twilio_client, sb).tasks.list(assignment_status=["pending"], page_size=2)
    assert {t.sid for t in listed} == pending
    assert len(_ws(twilio_client, sb).tasks.list(page_size=2)) == 6


def test_events_list_filters_and_pages(twilio_client: Client, fresh_twilio_sandbox: TwilioSandbox) -> None:
    sb = fresh_twilio_sandbox
    first = sb.lifecycle({"name": "Jane"}, complete=True)["sid"]
    other = sb.lifecycle({"name": "Joe"})["sid"]
    ws = _ws(twilio_client, sb)

    events = ws.events.list(task_sid=first, page_size=2)  # 7 events over 4 pages
    # Newest first, like Twilio; event_date_ms orders them.
    assert [e.sid for e in reversed(events)] == [e["sid"] for e in sb.events(first)]
    assert [e.event_type for e in sorted(events, key=lambda e: e.event_date_ms)] == [
        "task.created",
        "reservation.created",
        "reservation.accepted",
        "task.wrapup",
        "reservation.wrapup",
        "task.completed",
        "reservation.completed",
    ]
    assert len({e.sid for e in events}) == 7
    assert all(e.event_data["task_sid"] == first and e.sid.startswith("EV") for e in events)

    accepted = ws.events.list(event_type="reservation.accepted")
    assert {e.event_data["task_sid"] for e in accepted} == {first, other}
    assert {e.resource_type for e in accepted} == {"Reservation"}
    assert ws.events.list(worker_sid=DEMO_WORKERS[2].sid) == []

    future = datetime.now(UTC) + timedelta(hours=1)
    assert ws.events.list(start_date=future) == []
    assert len(ws.events.list(task_sid=other, start_date=datetime.now(UTC) - timedelta(minutes=1))) == 3
