"""pytest fixtures for the twilio sandbox.

- `twilio_sandbox`: one in-process `TwilioSandbox` per session (started once, stopped at the end).
- `fresh_twilio_sandbox`: the same sandbox, reset for this test (no tasks/events, no faults, zero counters,
  no callback URL, default retention).
- `twilio_client`: the real `twilio` SDK client pointed at the (fresh) sandbox.
- `callback_receiver`: a local HTTP server recording form posts + headers (`wait_for(n)`, `respond_with(...)`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from twilio.rest import Client

from flexsf.twilio_client import build_twilio_client
from sandboxes.twilio import TwilioSandbox
from sandboxes.twilio.receiver import CallbackReceiver
from sandboxes.twilio.sids import new_sid
from sandboxes.twilio.state import Event


def add_completed_row(sandbox: TwilioSandbox, task_sid: str, date_ms: int | None = None) -> None:
    """A task.completed row in the sandbox's Events list for `task_sid`, as if TaskRouter had recorded one whose
    callback never came: at `date_ms` (now by default), and never before a row already listed."""
    state = sandbox.state
    with state.lock:
        state._event_seq += 1
        state._last_event_ms = date_ms = max(
            int(time.time() * 1000) if date_ms is None else date_ms, state._last_event_ms + 1
        )
        state.events.append(
            Event(
                seq=state._event_seq,
                sid=new_sid("EV"),
                event_type="task.completed",
                description="Task completed",
                resource_type="Task",
                resource_sid=task_sid,
                date_ms=date_ms,
                params={"EventType": "task.completed", "TaskSid": task_sid, "TaskAttributes": "{}"},
                task_sid=task_sid,
            )
        )


@pytest.fixture(scope="session")
def twilio_sandbox() -> Iterator[TwilioSandbox]:
    sandbox = TwilioSandbox(seed=20261125).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def fresh_twilio_sandbox(twilio_sandbox: TwilioSandbox) -> Iterator[TwilioSandbox]:
    twilio_sandbox.reset()
    yield twilio_sandbox
    # Faults and callback URLs must not leak into the next test even if it skips this fixture.
    twilio_sandbox.reset()


@pytest.fixture
def twilio_client(fresh_twilio_sandbox: TwilioSandbox) -> Client:
    sb = fresh_twilio_sandbox
    return build_twilio_client(sb.account_sid, sb.auth_token, base_url=sb.url)


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as receiver:
        yield receiver
