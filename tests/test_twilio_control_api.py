"""The sandbox-only HTTP control API, as a shell script or benchmark would drive it."""

from __future__ import annotations

import httpx

from sandboxes.twilio import TwilioSandbox
from sandboxes.twilio.demo import DEMO_WORKERS
from sandboxes.twilio.receiver import CallbackReceiver


def test_script_a_lifecycle_over_http(fresh_twilio_sandbox: TwilioSandbox, callback_receiver: CallbackReceiver) -> None:
    control = fresh_twilio_sandbox.control_url
    with httpx.Client(base_url=control) as http:
        assert http.post("/callback-url", json={"url": callback_receiver.url}).status_code == 200
        task = http.post("/tasks", json={"channel": "chat", "attributes": {"identity": "jane@example.com"}}).json()
        sid = task["sid"]
        assert task["task_channel_unique_name"] == "chat"
        reservation = http.post(f"/tasks/{sid}/reserve", json={"worker_sid": DEMO_WORKERS[2].sid}).json()
        assert reservation["worker_sid"] == DEMO_WORKERS[2].sid
        assert http.post(f"/tasks/{sid}/accept").json()["reservation_status"] == "accepted"
        assert http.post(f"/tasks/{sid}/attributes", json={"attributes": {"x": 1}}).status_code == 200
        assert http.post(f"/tasks/{sid}/wrapup").json()["assignment_status"] == "wrapping"
        assert http.post(f"/tasks/{sid}/complete", json={"reason": "done"}).json()["reason"] == "done"
        assert http.post(f"/tasks/{sid}/complete", json={"reason": "again"}).json()["code"] == 20001
        assert http.post("/wait-idle", json={"timeout_s": 5}).json() == {"idle": True}
        assert http.post("/purge").json() == {"purged": [sid]}
        assert http.post("/wait-idle").json() == {"idle": True}
        deliveries = http.get("/deliveries", params={"task_sid": sid}).json()["deliveries"]
        assert [d["event_type"] for d in deliveries][-1] == "task.deleted"
        assert http.get("/counters").json()["callbacks_delivered"] == 9
        token = http.post("/tokens", json={"worker_sid": DEMO_WORKERS[0].sid, "ttl_s": 60}).json()["token"]
        assert token.count(".") == 2
        one_call = http.post("/lifecycle", json={"attributes": {"name": "Joe"}, "complete": True}).json()
        assert one_call["assignment_status"] == "completed"
        outbound = http.post(
            "/outbound-calls", json={"worker_sid": DEMO_WORKERS[0].sid, "destination": "+15550001111"}
        ).json()
        assert outbound["assignment_status"] == "assigned"
        assert http.get("/info").json()["workspace_sid"] == fresh_twilio_sandbox.workspace_sid
        assert http.post("/faults", json={"rate_limit_fraction": 1.0}).json()["rate_limit_fraction"] == 1.0
        assert http.delete("/faults").json()["rate_limit_fraction"] == 0.0
        assert http.post("/reset").json() == {"reset": True}
    assert fresh_twilio_sandbox.tasks() == []
