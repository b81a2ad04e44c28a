"""The product wired to the sandboxes: settings, an in-process worker, and an event relay.

The relay stands where the gateway will: it receives the Twilio sandbox's signed callbacks over HTTP, checks the
signature, and signal-with-starts the task's workflow before answering 204.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from twilio.request_validator import RequestValidator

import worker as worker_module
from devtools.dev import sandbox_env
from flexsf.models import TaskView
from flexsf.settings import Settings, settings_from_env
from flexsf.task_events import task_event
from flexsf.vocabulary import HANDLED_EVENTS, workflow_id
from workflows.delivery import signal_event
from workflows.task_workflow import FlexTaskWorkflow


def stack_env(sf: dict, tw: dict, task_queue: str, **extra: str) -> dict[str, str]:
    """Environment variables that point the product at the two sandboxes (the same mapping `flexsf dev` uses)."""
    return sandbox_env(sf, tw, task_queue, **extra)


def settings_from(env: dict[str, str]) -> Settings:
    return settings_from_env(env, _env_file=None)


class EventRelay:
    """An HTTP endpoint for TaskRouter callbacks that signals workflows; answers 204 only once Temporal has it."""

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop, auth_token: str) -> None:
        self.client = client
        self.loop = loop
        self.validator = RequestValidator(auth_token)
        self.task_queue = "unset"
        self.rejected: list[str] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                params = dict(parse_qsl(body, keep_blank_values=True))
                url = f"http://127.0.0.1:{relay.port}{self.path}"
                if not relay.validator.validate(url, params, self.headers.get("X-Twilio-Signature", "")):
                    relay.rejected.append(params.get("Sid", "?"))
                    return self._answer(403)
                if params.get("EventType") in HANDLED_EVENTS:
                    event = task_event(params)
                    future = asyncio.run_coroutine_threadsafe(
                        signal_event(relay.client, relay.task_queue, event), relay.loop
                    )
                    try:
                        future.result(timeout=30)
                    except Exception:  # a closed workflow or Temporal trouble: let the sender see it
                        return self._answer(503)
                self._answer(204)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/taskrouter/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    client: Client
    task_queue: str
    env: dict[str, str]
    activities: worker_module.Activities
    sf: object
    tw: object
    relay: EventRelay
    handles: dict[str, WorkflowHandle] = field(default_factory=dict)

    def handle(self, task_sid: str) -> WorkflowHandle:
        return self.client.get_workflow_handle_for(FlexTaskWorkflow.run, workflow_id(task_sid))

    async def view(self, task_sid: str) -> TaskView:
        return await self.handle(task_sid).query(FlexTaskWorkflow.view)

    async def wait_for(self, task_sid: str, predicate, timeout: float = 30.0) -> TaskView:
        """Poll the workflow's query until the predicate holds (the workflow may not exist yet)."""
        deadline = asyncio.get_running_loop().time() + timeout
        last: TaskView | Exception | None = None
        while asyncio.get_running_loop().time() < deadline:
            try:
                last = await self.view(task_sid)
                if predicate(last):
                    return last
            except Exception as exc:  # not started yet
                last = exc
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not met for {task_sid}; last view: {last!r}")

    async def result(self, task_sid: str, timeout: float = 60.0) -> TaskView:
        await self.wait_for(task_sid, lambda v: True)  # callbacks are asynchronous: the workflow may not exist yet
        return await asyncio.wait_for(self.handle(task_sid).result(), timeout)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def event_relay(temporal_client: Client, twilio_sandbox) -> AsyncIterator[EventRelay]:
    relay = EventRelay(temporal_client, asyncio.get_running_loop(), twilio_sandbox.info["auth_token"])
    yield relay
    relay.close()


def start_stack_worker(client: Client, env: dict[str, str], executor: ThreadPoolExecutor):
    settings = settings_from(env)
    activities = worker_module.build_activities(settings)
    return activities, worker_module.build_worker(client, settings.flexsf_task_queue, activities, executor)


@pytest.fixture
def stack_overrides(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings a test changes: `@pytest.mark.parametrize("stack_overrides", [{...}], indirect=True)`."""
    return getattr(request, "param", {})


@pytest_asyncio.fixture(loop_scope="session")
async def stack(
    temporal_client, clean_salesforce_sandbox, fresh_twilio_sandbox, event_relay, stack_overrides
) -> AsyncIterator[Stack]:
    salesforce_sandbox, twilio_sandbox = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"stack-{uuid.uuid4()}"
    env = stack_env(salesforce_sandbox.info, twilio_sandbox.info, task_queue, **stack_overrides)
    event_relay.task_queue = task_queue
    twilio_sandbox.set_callback_url(event_relay.url)
    with ThreadPoolExecutor(max_workers=16) as executor:
        activities, worker = start_stack_worker(temporal_client, env, executor)
        async with worker:
            yield Stack(temporal_client, task_queue, env, activities, salesforce_sandbox, twilio_sandbox, event_relay)
    twilio_sandbox.set_callback_url(None)
