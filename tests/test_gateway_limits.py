"""Every body is measured before it is parsed or authenticated (issue 14, item 2): a real gateway over real HTTP.

The gateway is wrapped in a spy that counts the body bytes the server hands the app, so "refused without being read
in full" is measured where it happens, not inferred from the client.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from devtools.netutil import free_port
from gateway.app import create_app
from gateway.body_limit import DRAIN_BYTES, BodyLimitMiddleware
from gateway.limits import AGENT, AGENT_NOTES, DEFAULT, TASKROUTER, limit_for
from gateway.server import start_gateway, stop_gateway
from ops.tasks import workflow_exists
from tests.fixtures_stack import gateway_settings
from tests.test_gateway_webhook import event_params, new_task_sid

pytestmark = pytest.mark.asyncio(loop_scope="session")

MIB = 1024 * 1024
HUGE = 20 * MIB
TASK = "WT" + "0" * 32


class BodySpy:
    """ASGI wrapper counting the request body bytes the server delivers to the app (all requests together)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


@dataclass
class Served:
    url: str
    port: int
    spy: BodySpy
    http: httpx.AsyncClient
    sandbox: object

    @property
    def app(self) -> FastAPI:
        return self.spy.app

    def events(self, outcome: str) -> float:
        value = self.app.state.metrics.registry.get_sample_value(
            "flexsf_taskrouter_events_total", {"type": "unverified", "outcome": outcome}
        )
        return value or 0.0

    def token_validations(self) -> int:
        return self.sandbox.counters().get("token_validate", 0)


@pytest_asyncio.fixture(loop_scope="session")
async def served(temporal_client, fresh_twilio_sandbox) -> AsyncIterator[Served]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = gateway_settings(
        fresh_twilio_sandbox,
        f"limits-{uuid.uuid4()}",
        flexsf_public_base_url=url,
        twilio_api_base_url=fresh_twilio_sandbox.url,
    )
    spy = BodySpy(create_app(settings, temporal_client))
    server, task = await start_gateway(spy, "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            yield Served(url, port, spy, http, fresh_twilio_sandbox)
    finally:
        await stop_gateway(server, task)


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/taskrouter/events", TASKROUTER),
        (f"/agent/tasks/{TASK}/notes", AGENT_NOTES),
        (f"/agent/tasks/{TASK}/record", AGENT),
        ("/agent/click-to-dial", AGENT),
        ("/agent/config", AGENT),
        ("/healthz", DEFAULT),
        ("/codec/decode", DEFAULT),
        ("/taskrouter/events/../../agent", DEFAULT),
    ],
)
async def test_each_route_has_its_limit(path: str, limit) -> None:
    assert limit_for(path) is limit


async def test_the_limits_hold_the_largest_valid_bodies() -> None:
    notes = {"disposition": "d" * 255, "summary": "\U0001f600" * 32_000, "topics": ["t" * 100] * 20, "sentiment": "m"}
    assert len(json.dumps(notes, ensure_ascii=False).encode()) < AGENT_NOTES.max_bytes
    dial = {"number": "9" * 64, "recordId": "0" * 18, "objectType": "é" * 255, "recordName": "é" * 255}
    assert len(json.dumps(dial, ensure_ascii=False).encode()) < AGENT.max_bytes
    assert DEFAULT.max_bytes <= AGENT.max_bytes < AGENT_NOTES.max_bytes and TASKROUTER.max_bytes >= 64 * 1024


async def test_a_20_mib_stream_to_the_agent_api_is_refused_before_auth_and_never_read_in_full(served: Served):
    sent = 0

    async def body() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust or distrust
        nonlocal sent
        chunk = b"x" * 65536
        while sent < HUGE:
            sent += len(chunk)
            yield chunk

    try:
        response = await served.http.post(
            f"{served.url}/agent/tasks/{TASK}/notes", content=body(), headers={"Content-Type": "application/json"}
        )
    except httpx.TransportError:
        response = None  # refused with the connection closed while the client was still uploading: a reset
    if response is not None:
        assert response.status_code == 413 and "larger than" in response.json()["detail"]
    # The server stopped reading after the limit and the bounded drain: nowhere near the 20 MiB offered.
    assert served.spy.received <= AGENT_NOTES.max_bytes + DRAIN_BYTES + 512 * 1024, served.spy.received
    assert sent < HUGE
    assert served.token_validations() == 0  # never authenticated (there was no token: it would have been a 401)


async def test_a_declared_length_over_the_limit_is_413_before_a_byte_is_read(served: Served):
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        writer.write(
            f"POST /agent/config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer forged\r\nContent-Length: {HUGE}\r\n\r\n".encode()
        )
        await writer.drain()
        # No body is sent at all: the answer cannot be waiting for it.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status_line, *header_lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    assert status_line.startswith("HTTP/1.1 413") and headers["connection"] == "close"
    assert json.loads(body)["detail"] == f"the body is larger than {AGENT.max_bytes} bytes"
    assert served.spy.received == 0 and served.token_validations() == 0


def padded(size: int) -> bytes:
    """A JSON object of exactly `size` bytes (an unknown field the models ignore)."""
    return b'{"pad": "' + b"x" * (size - len(b'{"pad": ""}')) + b'"}'


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("POST", f"/agent/tasks/{TASK}/notes", AGENT_NOTES),
        ("PUT", f"/agent/tasks/{TASK}/record", AGENT),
        ("POST", "/agent/click-to-dial", AGENT),
    ],
)
async def test_a_body_just_over_the_limit_gets_a_413_with_its_reason(served: Served, method, path, limit, chunked):
    data = padded(limit.max_bytes + 1)

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]

    headers = {"Content-Type": "application/json", "Authorization": "Bearer forged"}
    response = await served.http.request(
        method, served.url + path, content=stream() if chunked else data, headers=headers
    )
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": f"the body is larger than {limit.max_bytes} bytes"}
    assert served.token_validations() == 0  # refused before the token was looked at
    # At the limit the body is read, and the forged token is what is refused.
    response = await served.http.request(method, served.url + path, content=padded(limit.max_bytes), headers=headers)
    assert response.status_code == 401 and served.token_validations() == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_callback_is_413_counted_and_starts_nothing(served: Served, temporal_client, chunked):
    params = event_params(new_task_sid(), TaskAttributes=json.dumps({"blob": "x" * TASKROUTER.max_bytes}))
    data = urlencode(params).encode()

    async def stream() -> AsyncIterator[bytes]:
        yield data

    response = await served.http.post(
        f"{served.url}/taskrouter/events",
        content=stream() if chunked else data,
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "forged"},
    )
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert served.events("poison") == 1
    assert not await workflow_exists(temporal_client, params["TaskSid"])


# ---- the middleware alone: what no well-behaved HTTP client sends -------------------------------------------------


async def call(middleware, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[list[Message], int]:
    """Run one request through an ASGI app; returns what it sent and how many body bytes it was handed."""
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[Message] = []

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/agent/config", "headers": headers}
    await middleware(scope, receive, send)
    return sent, sum(len(c) for c in chunks) - sum(len(m.get("body", b"")) for m in queue)


class ReadsItAll:
    """An app that reads the whole body, then answers 200 with its size (as a careless route would)."""

    def __init__(self) -> None:
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(self.read).encode()})


async def test_a_content_length_that_lies_is_no_excuse():
    app = ReadsItAll()
    chunk = b"x" * 4096
    sent, _ = await call(BodyLimitMiddleware(app), [(b"content-length", b"10")], [chunk] * 8)
    assert sent[0]["status"] == 413 and app.read <= AGENT.max_bytes
    assert json.loads(sent[1]["body"])["detail"] == f"the body is larger than {AGENT.max_bytes} bytes"


@pytest.mark.parametrize("value", [b"ten", b"-1", b"1e3", b" ", b"99999999999999999999999"])
async def test_a_content_length_that_is_not_a_number_is_400(value: bytes):
    app = ReadsItAll()
    sent, handed = await call(BodyLimitMiddleware(app), [(b"content-length", value)], [b"{}"])
    assert sent[0]["status"] == 400 and app.read == 0 and handed == 0


async def test_two_content_lengths_that_disagree_are_400():
    app = ReadsItAll()
    sent, _ = await call(BodyLimitMiddleware(app), [(b"content-length", b"2"), (b"content-length", b"3")], [b"{}"])
    assert sent[0]["status"] == 400 and app.read == 0


async def test_a_body_within_the_limit_reaches_the_app_untouched():
    app = ReadsItAll()
    sent, _ = await call(BodyLimitMiddleware(app), [], [b"x" * 1000] * 8)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"8000"
