"""The product wired to the sandboxes: settings, an in-process worker, and the gateway.

The Twilio sandbox sends its signed TaskRouter callbacks to the real gateway (`POST /taskrouter/events`) over HTTP,
which checks the signature and signal-with-starts the task's workflow, exactly as in production.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.enums.v1 import WorkflowExecutionStatus as EnumWorkflowExecutionStatus
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from twilio.request_validator import RequestValidator

import worker as worker_module
from devtools.dev import sandbox_env
from devtools.netutil import free_port
from flexsf.models import TaskView
from flexsf.settings import Settings, settings_from_env
from flexsf.vocabulary import workflow_id
from gateway.app import create_app
from gateway.server import start_gateway, stop_gateway
from workflows.task_workflow import FlexTaskWorkflow

REPO = Path(__file__).resolve().parent.parent


async def eventually(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """Wait for a condition (a counter, a record; a coroutine function for one that asks Temporal) without a fixed
    sleep."""
    deadline = asyncio.get_running_loop().time() + timeout

    async def met() -> bool:
        answer = predicate()
        return await answer if inspect.isawaitable(answer) else answer

    while not await met():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.05)


async def history_once_completed(handle: WorkflowHandle, timeout: float, explain=None) -> WorkflowHistory:
    """The workflow's history once it has completed; callbacks are asynchronous, so it may not exist yet. Past
    `timeout` seconds the assertion's message is `explain(status)`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            status = (await handle.describe()).raw_description.workflow_execution_info.status
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            status = None
        if status == EnumWorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED:
            return await handle.fetch_history()
        assert asyncio.get_running_loop().time() < deadline, (
            explain(status) if explain else f"the workflow did not complete: {status}"
        )
        await asyncio.sleep(0.2)


def stack_env(sf: dict, tw: dict, task_queue: str, **extra: str) -> dict[str, str]:
    """Environment variables that point the product at the two sandboxes (the same mapping `flexsf dev` uses)."""
    return sandbox_env(sf, tw, task_queue, **extra)


def process_env(
    temporal_address: str, product_env: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a product process a test runs (`python worker.py`, `flexsf …`): `base` (this process's
    environment by default), the product's settings, and the test's Temporal server, never a profile from the
    developer's own Temporal configuration."""
    env = {
        **(os.environ if base is None else base),
        **product_env,
        "TEMPORAL_ADDRESS": temporal_address,
        "TEMPORAL_NAMESPACE": "default",
    }
    env.pop("TEMPORAL_PROFILE", None)
    return env


def settings_from(env: dict[str, str]) -> Settings:
    return settings_from_env(env, _env_file=None)


@dataclass
class Gateway:
    """A running gateway (`gateway.app.create_app`) on a loopback port, and an HTTP client to call it with; its
    metrics on a listener of their own (`metrics_url`)."""

    url: str
    events_url: str
    task_queue: str
    auth_token: str
    http: httpx.AsyncClient
    metrics_url: str

    def sign(self, params: dict[str, str], url: str | None = None, token: str | None = None) -> str:
        return RequestValidator(token or self.auth_token).compute_signature(url or self.events_url, params)

    async def post(self, params: dict[str, str], signature: str | None) -> httpx.Response:
        headers = {"X-Twilio-Signature": signature} if signature is not None else {}
        return await self.http.post(self.events_url, data=params, headers=headers)

    async def taskrouter_events(self) -> dict[tuple[str, str], float]:
        """`flexsf_taskrouter_events_total` from the metrics listener: callbacks counted by (event type, outcome)."""
        response = await self.http.get(self.metrics_url)
        response.raise_for_status()
        return {
            (sample.labels["type"], sample.labels["outcome"]): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "flexsf_taskrouter_events_total"
        }


def gateway_settings(sandbox, task_queue: str, **extra) -> Settings:
    """The least a gateway needs against the Twilio sandbox: its account and workspace (a callback must name both),
    its auth token (signatures), a queue. `run_gateway` adds the public base URL once it knows the port."""
    least = {
        "twilio_account_sid": sandbox.account_sid,
        "twilio_workspace_sid": sandbox.workspace_sid,
        "twilio_auth_token": sandbox.auth_token,
        "flexsf_task_queue": task_queue,
    }
    return Settings(_env_file=None, **(least | extra))


@asynccontextmanager
async def run_gateway(settings: Settings, client: Client | None) -> AsyncIterator[Gateway]:
    """Serve `create_app(settings, client)` on a free loopback port for the duration of the block (no client: the
    app's lifespan connects through Temporal's environment settings, as in production). Its metrics listener gets a
    free loopback port too unless the settings name one."""
    if settings.flexsf_gateway_metrics_address is None:
        settings = settings.model_copy(update={"flexsf_gateway_metrics_address": f"127.0.0.1:{free_port()}"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    if settings.flexsf_public_base_url is None:
        # What Twilio signs is the public URL, never the request's Host: here the gateway's own address.
        settings = settings.model_copy(update={"flexsf_public_base_url": url})
    server, task = await start_gateway(create_app(settings, client), "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            yield Gateway(
                url,
                f"{url}/taskrouter/events",
                settings.flexsf_task_queue,
                settings.twilio_auth_token.get_secret_value(),
                http,
                f"http://{settings.flexsf_gateway_metrics_address}/metrics",
            )
    finally:
        await stop_gateway(server, task)


@asynccontextmanager
async def stack_gateway(client: Client, env: dict[str, str], twilio_sandbox) -> AsyncIterator[Gateway]:
    """The gateway configured like the stack's worker, receiving the Twilio sandbox's TaskRouter callbacks.

    One per stack: each stack has its own task queue, and a gateway's settings are fixed when it starts."""
    async with run_gateway(settings_from(env), client) as gateway:
        twilio_sandbox.set_callback_url(gateway.events_url)
        try:
            yield gateway
        finally:
            # Before the gateway stops: a callback sent to a closed port would be recorded as a delivery error.
            twilio_sandbox.set_callback_url(None)


@dataclass
class Stack:
    client: Client
    task_queue: str
    env: dict[str, str]
    activities: worker_module.Activities
    sf: object
    tw: object
    gateway: Gateway
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
    temporal_client, clean_salesforce_sandbox, fresh_twilio_sandbox, stack_overrides
) -> AsyncIterator[Stack]:
    salesforce_sandbox, twilio_sandbox = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"stack-{uuid.uuid4()}"
    env = stack_env(salesforce_sandbox.info, twilio_sandbox.info, task_queue, **stack_overrides)
    async with stack_gateway(temporal_client, env, twilio_sandbox) as gateway:
        with ThreadPoolExecutor(max_workers=16) as executor:
            activities, worker = start_stack_worker(temporal_client, env, executor)
            async with worker:
                yield Stack(temporal_client, task_queue, env, activities, salesforce_sandbox, twilio_sandbox, gateway)


class WorkerProcess:
    """`python worker.py` as an operator runs it, configured for the sandboxes through its environment."""

    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.log_file = log_file
        self._log = log_file.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "worker.py")], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def polling(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_file.read_text()}")
        return "worker polling task queue" in self.log_file.read_text()

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is drained."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        """SIGTERM, as an operator's stop: the worker drains; killed if it has not exited within 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture
def worker_processes() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts (append them); any still running are killed when it ends."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()
