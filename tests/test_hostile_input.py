"""The hostile-input suite (issue 14, item 10): every route of the gateway (the TaskRouter webhook, each /agent/*
route, health) and of the codec server (`flexsf codec-server`), fed what an attacker sends. One table per route, one
row per case, its id saying what it sends: oversized, deeply nested and malformed JSON and form bodies; lone
surrogates as JSON escapes and as bytes that are not UTF-8; wrong content types; SOSL and SOQL metacharacters in
every caller-controlled field that reaches Salesforce; path tricks in sids; forged, expired, other-account and
revoked tokens; replayed, stale, other-account and other-workspace callbacks; premium-rate, satellite and short-code
numbers; more notes than one task takes.

Every case runs on one stack shared by the module (a real gateway, worker, Temporal and both sandboxes), beside one
valid task of its own: an inbound call created, reserved and accepted through the Twilio sandbox's signed callbacks
before the attack (started a couple of cases ahead, so its workflow has popped by then), completed after it. Each
case asserts:
- the status expected (never a 5xx) and, where it matters, the reason in the body;
- unless the case is one the workflow should take (a duplicate callback it drops, notes), that the request reached no
  workflow: the valid task's history has no signal and no update more than before, and its view is unchanged; the
  sids the request named have no workflow; and the task queue holds only the workflows the suite started on purpose
  (counted through Temporal's visibility);
- that the valid task is logged exactly once (one Salesforce Task, related to the record its caller's number pops),
  and that every call Salesforce received meanwhile was answered 2xx, each SOSL `FIND {…}` with every reserved
  character escaped. The cases whose attack is in the task's own attributes check more: that the text was searched
  for, escaped; that a worker's email is one quoted SOQL literal (and found no one else's user).

The gateway here takes callbacks up to CALLBACK_MAX_AGE_S old (20 s, not 300 s), so that a genuine callback captured
at the start of the module can be replayed once stale by its last case; and its failed-authentication limit is out of
reach, so that every refused token gets its own 401 (the limit is tests/test_token_abuse.py's subject). A "revoked"
token is one Twilio refuses the first time the gateway asks; one refused after it was accepted stops working within
FLEXSF_TOKEN_REVALIDATE_S (tests/test_token_abuse.py).

Reused: the signing and form helpers of tests/test_poison_intake.py and tests/test_gateway_webhook.py, the codec
helpers of tests/test_encryption.py, the stack's parts of tests/fixtures_stack.py.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from devtools.netutil import free_port
from flexsf.codec import generate_key
from flexsf.models import Stage, TaskView
from flexsf.vocabulary import NOTES_PER_TASK_MAX, workflow_id
from gateway.codec_server import PREFIX as CODEC_PREFIX
from gateway.codec_server import create_codec_app
from gateway.server import start_gateway, stop_gateway
from ops.tasks import workflow_exists
from sandboxes.salesforce import demo as sf_demo
from sandboxes.salesforce.sosl import RESERVED as SOSL_RESERVED
from sandboxes.twilio import demo as tw_demo
from sandboxes.twilio.tokens import TokenAuthority
from tests.fixtures_stack import (
    Stack,
    eventually,
    settings_from,
    stack_env,
    stack_gateway,
    start_stack_worker,
)
from tests.test_encryption import CodecServer, as_json, codec, plain_payloads
from tests.test_gateway_webhook import event_params, new_task_sid
from tests.test_poison_intake import nested, post_bytes, sign_bytes

pytestmark = pytest.mark.asyncio(loop_scope="session")

AGENT, OTHER_AGENT, _, SUPERVISOR = tw_demo.DEMO_WORKERS
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
OTHER_ACCOUNT = "AC" + "f" * 32
OTHER_WORKSPACE = "WS" + "f" * 32
ELSEWHERE = "https://elsewhere.example/taskrouter/events"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
GIB = 1024**3
# Callbacks older than this are refused (the suite's gateway; production's default is 300 s): short enough that a
# callback captured at the start of the module is stale, and refused when replayed, by the module's last case.
CALLBACK_MAX_AGE_S = 20
CODEC_KEY = generate_key()
LATIN1 = "\xe9\xff\xfe"  # a header value that is not ASCII (HTTP headers are bytes; servers read them as Latin-1)


# ---- the world: one stack, one codec server, a record of what Salesforce received ----------------------------------


@dataclass
class Answer:
    status: int
    text: str


@dataclass
class SalesforceCall:
    method: str
    path: str
    q: str | None
    status: int


@dataclass
class World:
    stack: Stack
    codec: CodecServer
    salesforce_calls: list[SalesforceCall]
    # Workflows the suite started on purpose (valid tasks, and callbacks it expects to be accepted): the task queue
    # must hold these and no other.
    started: set[str] = field(default_factory=set)
    first_callback: dict[str, str] | None = None  # a genuine callback of the first valid task, replayed later
    pool: list[str] = field(default_factory=list)  # valid tasks started ahead (see `valid_task`)

    @property
    def gateway(self):
        return self.stack.gateway

    @property
    def http(self) -> httpx.AsyncClient:
        return self.stack.gateway.http

    def token(self, worker=AGENT, **kw) -> str:
        return self.stack.tw.mint_token(worker.sid, **kw)

    async def workflows(self) -> int:
        return (await self.stack.client.count_workflows(f"TaskQueue = '{self.stack.task_queue}'")).count

    async def touches(self, task_sid: str) -> int:
        """Signals and accepted updates in the task's history: what a request may have done to its workflow."""
        kinds = {
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        }
        history = self.stack.client.get_workflow_handle(workflow_id(task_sid)).fetch_history_events()
        return sum([event.event_type in kinds async for event in history])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(temporal_client: Client, salesforce_sandbox, twilio_sandbox) -> AsyncIterator[World]:
    sf, tw = salesforce_sandbox, twilio_sandbox
    sf.reset()
    tw.reset()
    calls: list[SalesforceCall] = []
    lock = threading.Lock()

    def record(request, response, _started, _seconds) -> None:
        with lock:
            calls.append(SalesforceCall(request.method, request.path, request.param("q"), response.status))

    sf.time_requests(record)
    task_queue = f"hostile-{uuid.uuid4()}"
    env = stack_env(
        sf.info,
        tw.info,
        task_queue,
        # Hundreds of refused tokens come from this one address: the failure limit (tests/test_token_abuse.py) would
        # answer them 429 before they could be told apart; here each must get its own 401.
        FLEXSF_AUTH_FAILURE_LIMIT="1000000",
        FLEXSF_CALLBACK_MAX_AGE_S=str(CALLBACK_MAX_AGE_S),
    )
    codec_token = secrets.token_urlsafe(32)
    codec_settings = settings_from(
        {"FLEXSF_ENCRYPTION_KEYS": f"current:{CODEC_KEY}", "FLEXSF_CODEC_TOKEN": codec_token}
    )
    codec_port = free_port()
    codec_app = create_codec_app(codec_settings)
    server, served = await start_gateway(codec_app, "127.0.0.1", codec_port)
    try:
        async with stack_gateway(temporal_client, env, tw) as gateway:
            with ThreadPoolExecutor(max_workers=16) as executor:
                activities, worker = start_stack_worker(temporal_client, env, executor)
                async with worker:
                    stack = Stack(temporal_client, task_queue, env, activities, sf, tw, gateway)
                    codec_server = CodecServer(
                        f"http://127.0.0.1:{codec_port}{CODEC_PREFIX}", codec_token, gateway.http, codec_app
                    )
                    yield World(stack, codec_server, calls)
    finally:
        sf.time_requests(None)
        await stop_gateway(server, served)
        sf.reset()
        tw.reset()


# ---- one case: the attack between the two halves of a valid task ---------------------------------------------------


@dataclass
class Ctx:
    """What a case's request may use: the world, this case's valid task (the agent's, in progress), and a record of
    the sids it named that must have no workflow."""

    world: World
    task: str
    named: list[str] = field(default_factory=list)
    monkeypatch: pytest.MonkeyPatch | None = None
    before: int | None = None  # the valid task's signals and updates at a point the case chooses

    def new_sid(self) -> str:
        sid = new_task_sid()
        self.named.append(sid)
        return sid

    def name(self, sid: str) -> str:
        self.named.append(sid)
        return sid


Send = Callable[[Ctx], Awaitable[Answer]]


@dataclass(frozen=True)
class Case:
    send: Send
    status: int
    detail: str | None = None  # text the answer's body must contain
    # The request is honoured and may reach the valid task's workflow (a duplicate callback it drops, notes): then
    # `check` says what it did. Any other request must leave that workflow as it was, whatever its status.
    may_signal: bool = False
    check: Callable[[Ctx, Answer], Awaitable[None]] | None = None
    # This case's valid task, when the attack is in its attributes (a search term, a worker's email …): the task
    # attributes, and the record its pop must find (None: no match, the task is logged unrelated).
    attributes: dict | None = None
    pops: str | None = CONTACT.id
    worker_attributes: dict | None = None  # changes to the agent's worker attributes while the valid task runs
    logged: Callable[[dict], None] | None = None  # a check of the Salesforce Task written for the valid task
    salesforce: Callable[[list[SalesforceCall]], None] | None = None  # a check of what Salesforce received


def case(send: Send, status: int, detail: str | None = None, **kw) -> Case:
    return Case(send, status, detail, **kw)


async def run(world: World, hostile: Case, monkeypatch: pytest.MonkeyPatch | None = None) -> Answer:
    """The case between the two halves of its valid task, and every check of the module's docstring."""
    stack = world.stack
    first_call = len(world.salesforce_calls)
    if hostile.attributes is None and hostile.worker_attributes is None:
        task = valid_task(world)
    else:
        if hostile.worker_attributes is not None:
            set_worker_attributes(stack.tw, AGENT.sid, hostile.worker_attributes)
        try:
            task = start_task(world, hostile.attributes or {"from": CONTACT.phone})
            await stack.wait_for(task, lambda v: v.stage == Stage.IN_PROGRESS)
        finally:
            if hostile.worker_attributes is not None:
                set_worker_attributes(stack.tw, AGENT.sid, None)
    await stack.wait_for(task, lambda v: v.stage == Stage.IN_PROGRESS)
    await asyncio.to_thread(stack.tw.wait_callbacks_idle, 30)  # the pop's task.updated too: the history is still now
    if world.first_callback is None:
        [delivery] = stack.tw.deliveries(task_sid=task, event_type="task.created")
        world.first_callback = dict(delivery.params)
    ctx = Ctx(world, task, monkeypatch=monkeypatch)
    before = await world.touches(task)
    view_before = await stack.view(task)

    answer = await hostile.send(ctx)

    assert answer.status == hostile.status, (answer.status, answer.text[:500])
    assert answer.status < 500
    if hostile.detail is not None:
        assert hostile.detail in answer.text, answer.text[:500]
    if not hostile.may_signal:
        assert await world.touches(task) == before, "the request signalled the valid task's workflow"
        assert (await stack.view(task)).model_dump() == view_before.model_dump()
    if hostile.check is not None:
        await hostile.check(ctx, answer)
    for sid in ctx.named:
        assert not await workflow_exists(stack.client, sid), f"a refused request started the workflow of {sid}"

    # The valid task goes on, and is logged exactly once.
    stack.tw.wrapup(task)
    stack.tw.complete(task)
    fill_pool(world)
    view = await finished(stack, task)
    assert view.stage != Stage.FAILED, view.error
    logged = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == task]
    assert len(logged) == 1, logged
    related = logged[0].get("WhoId") or logged[0].get("WhatId")
    assert related == hostile.pops, (related, hostile.pops)
    if hostile.logged is not None:
        hostile.logged(logged[0])
    calls = world.salesforce_calls[first_call:]
    assert_well_formed(calls)
    if hostile.salesforce is not None:
        hostile.salesforce(calls)

    expected = len(world.started)

    async def only_ours() -> bool:
        return await world.workflows() == expected

    await eventually(only_ours, timeout=15, what=f"the task queue holds just the suite's {expected} workflows")
    return answer


# Valid tasks are started this many cases ahead: their workflows pop while earlier cases finish, so a case waits for
# little more than its own task's log.
POOL = 2


def start_task(world: World, attributes: dict) -> str:
    task = world.stack.tw.lifecycle(attributes, worker_sid=AGENT.sid)["sid"]
    world.started.add(task)
    return task


def fill_pool(world: World) -> None:
    while len(world.pool) < POOL:
        world.pool.append(start_task(world, {"from": CONTACT.phone}))


def valid_task(world: World) -> str:
    """An ordinary inbound task of the agent's (its caller's number pops the one contact), from the pool."""
    fill_pool(world)
    return world.pool.pop(0)


async def finished(stack: Stack, task: str, timeout: float = 30.0) -> TaskView:
    """The task's view once its log is written (or failed): asked every 10 ms, as each case waits for it."""
    deadline = time.monotonic() + timeout
    while (view := await stack.view(task)).stage not in (Stage.LOGGED, Stage.LOGGED_UNASSOCIATED, Stage.FAILED):
        assert time.monotonic() < deadline, f"{task} was not logged within {timeout}s: {view!r}"
        await asyncio.sleep(0.01)
    return view


def set_worker_attributes(tw, worker_sid: str, changes: dict | None) -> None:
    """Change a sandbox worker's attributes (what TaskRouter sends as WorkerAttributes); None: back to the demo's."""
    demo_worker = next(w for w in tw_demo.DEMO_WORKERS if w.sid == worker_sid)
    attributes = tw_demo.worker_attributes_json(demo_worker)
    if changes is not None:
        attributes = json.dumps(json.loads(attributes) | changes)
    with tw.state.lock:
        tw.state.workers[worker_sid] = dataclasses.replace(tw.state.workers[worker_sid], attributes=attributes)


def assert_well_formed(calls: list[SalesforceCall]) -> None:
    """Every call answered 2xx, every SOSL `FIND {…}` with its reserved characters escaped."""
    assert calls, "the valid task made no Salesforce call"
    for call in calls:
        assert 200 <= call.status < 300, call
        if call.path.rstrip("/").endswith("/search"):
            assert call.q is not None
            assert_find_escaped(call.q)


def assert_find_escaped(sosl: str) -> None:
    assert sosl.startswith("FIND {"), sosl
    i = len("FIND {")
    while sosl[i] != "}":
        if sosl[i] == "\\":
            assert sosl[i + 1] in SOSL_RESERVED, sosl  # an escape escapes a reserved character, nothing else
            i += 2
            continue
        assert sosl[i] not in SOSL_RESERVED, f"unescaped {sosl[i]!r} in {sosl}"
        i += 1
    assert sosl[i + 1 :].startswith(" IN "), sosl


# ---- sending --------------------------------------------------------------------------------------------------------


def answer_of(response: httpx.Response) -> Answer:
    return Answer(response.status_code, response.text)


async def raw(url: str, request: bytes) -> Answer:
    """Send these bytes as they are (a path no client would normalise, a length that is a lie); the answer's status
    and body. The server closes the connection after answering (`Connection: close`)."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return Answer(int(head.split(b" ", 2)[1]), body.decode("utf-8", "replace"))


def head(method: str, target: str, *headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# ---- the TaskRouter webhook -----------------------------------------------------------------------------------------


def signed(change: Callable[[Ctx], dict] | dict | None = None, **kw) -> Send:
    """A callback for this case's valid task, validly signed with our auth token, with `change` applied (a function
    of the case for a value of the moment). A Timestamp it sets goes without TimestampMs."""

    async def send(ctx: Ctx) -> Answer:
        params = event_params(ctx.task, **kw)
        extra = change(ctx) if callable(change) else dict(change or {})
        params |= extra
        if "Timestamp" in extra and "TimestampMs" not in extra:
            params.pop("TimestampMs")
        gw = ctx.world.gateway
        return answer_of(await gw.post(params, gw.sign(params)))

    return send


def stale(ctx: Ctx) -> dict:
    return {"Timestamp": str(int(time.time()) - CALLBACK_MAX_AGE_S - 60)}


def with_sid(task_sid: str, **kw) -> Send:
    """A signed callback naming this sid (a path trick): refused, and no workflow may exist for it."""

    async def send(ctx: Ctx) -> Answer:
        params = event_params(ctx.name(task_sid), **kw)
        gw = ctx.world.gateway
        return answer_of(await gw.post(params, gw.sign(params)))

    return send


def unsigned(signature: Callable[[Ctx, dict], str | None]) -> Send:
    async def send(ctx: Ctx) -> Answer:
        params = event_params(ctx.task)
        gw = ctx.world.gateway
        return answer_of(await gw.post(params, signature(ctx, params)))

    return send


def body_as(content_type: str, encode: Callable[[dict], bytes]) -> Send:
    """The callback's parameters signed as Twilio signs them, sent in another body format."""

    async def send(ctx: Ctx) -> Answer:
        params = event_params(ctx.task)
        gw = ctx.world.gateway
        headers = {"Content-Type": content_type, "X-Twilio-Signature": gw.sign(params)}
        return answer_of(await gw.http.post(gw.events_url, content=encode(params), headers=headers))

    return send


def multipart(params: dict) -> bytes:
    boundary = "flexsf-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in params.items()]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


async def declared_too_long(ctx: Ctx) -> Answer:
    gw = ctx.world.gateway
    request = head("POST", "/taskrouter/events", f"Content-Type: {FORM}", f"Content-Length: {10 * GIB}")
    return await raw(gw.url, request)


async def replayed_stale(ctx: Ctx) -> Answer:
    """A genuine callback TaskRouter sent early in the module, posted again once it is older than the window."""
    captured = ctx.world.first_callback
    assert captured is not None
    await eventually(
        lambda: time.time() - int(captured["Timestamp"]) > CALLBACK_MAX_AGE_S + 1, timeout=CALLBACK_MAX_AGE_S + 5
    )
    gw = ctx.world.gateway
    return answer_of(await gw.post(captured, gw.sign(captured)))


async def replayed_duplicate(ctx: Ctx) -> Answer:
    """This task's own reservation.accepted, as TaskRouter sent it, sent again within the window: a duplicate."""
    [accepted] = ctx.world.stack.tw.deliveries(task_sid=ctx.task, event_type="reservation.accepted")
    gw = ctx.world.gateway
    return answer_of(await gw.post(dict(accepted.params), gw.sign(dict(accepted.params))))


async def nothing_changed(ctx: Ctx, answer: Answer) -> None:
    view = await ctx.world.stack.view(ctx.task)
    assert view.stage == Stage.IN_PROGRESS and view.worker_sid == AGENT.sid and view.record.id == CONTACT.id


def new_task_with(**kw) -> Send:
    """A validly signed task.created for a new task: accepted (the suite expects its workflow)."""

    async def send(ctx: Ctx) -> Answer:
        sid = new_task_sid()
        ctx.world.started.add(sid)
        params = event_params(sid, **kw)
        gw = ctx.world.gateway
        return answer_of(await gw.post(params, gw.sign(params)))

    return send


def new_task_bytes(fields: dict[str, bytes], raw_field: str | None = None) -> Send:
    async def send(ctx: Ctx) -> Answer:
        sid = new_task_sid()
        ctx.world.started.add(sid)
        params = {name: value.encode() for name, value in event_params(sid).items()} | fields
        gw = ctx.world.gateway
        return answer_of(await post_bytes(gw, params, sign_bytes(gw, params), raw=raw_field))

    return send


WEBHOOK = [
    # size and shape of the body
    pytest.param(case(signed({"TaskAttributes": json.dumps({"x": "y" * 200_000})}), 413), id="oversized-form"),
    pytest.param(case(declared_too_long, 413), id="declared-length-10-gib"),
    pytest.param(case(signed({"TaskAttributes": json.dumps(nested(300))}), 422, "nested deeper"), id="deep-json"),
    pytest.param(case(signed({"TaskAttributes": "[" * 10_000 + "]" * 10_000}), 422), id="deeper-than-the-parser"),
    pytest.param(case(signed({"WorkerAttributes": json.dumps(nested(300))}), 422), id="deep-worker-attributes"),
    pytest.param(case(signed({"TaskAttributes": "{not json"}), 400, "not valid JSON"), id="malformed-json"),
    pytest.param(case(signed({"TaskAttributes": '{"a": "\\ud800'}), 400, "not valid JSON"), id="truncated-json"),
    pytest.param(case(signed({"TaskAttributes": "[1, 2]"}), 400, "must be a JSON object"), id="json-not-an-object"),
    pytest.param(case(signed({"TaskSid": ""}), 400, "TaskSid is missing"), id="no-task-sid"),
    pytest.param(case(signed({"EventType": ""}), 400, "EventType is missing"), id="no-event-type"),
    pytest.param(case(signed({"EventType": "task.created\nFORGED line"}), 204), id="event-type-newline-ignored"),
    pytest.param(case(body_as(FORM, lambda p: b"%zz=%%&&==&" + urlencode(p).encode()[:40]), 403), id="malformed-form"),
    # text that is not UTF-8: kept as U+FFFD, the event signalled rather than lost (tests/test_poison_intake.py)
    pytest.param(
        case(new_task_with(TaskAttributes='{"from": "+15559870000", "name": "Zelda \\ud800"}'), 204),
        id="lone-surrogate-json-escape",
    ),
    pytest.param(case(new_task_bytes({"WorkerName": b"Ada \xed\xa0\x80\xff"}), 204), id="invalid-utf8-percent"),
    pytest.param(
        case(new_task_bytes({"WorkerName": b"Ada \xed\xa0\x80\xff"}, raw_field="WorkerName"), 204),
        id="invalid-utf8-raw-bytes",
    ),
    # wrong content types: TaskRouter posts a form and nothing else
    pytest.param(case(body_as(JSON, lambda p: json.dumps(p).encode()), 400, "x-www-form-urlencoded"), id="json"),
    pytest.param(
        case(body_as("multipart/form-data; boundary=flexsf-boundary", multipart), 400, "x-www-form-urlencoded"),
        id="multipart",
    ),
    pytest.param(case(body_as("text/plain", lambda p: urlencode(p).encode()), 400), id="text-plain"),
    pytest.param(case(body_as("", lambda p: urlencode(p).encode()), 400), id="no-content-type"),
    # path tricks in the task sid
    pytest.param(case(with_sid("x"), 400, "not a TaskRouter task sid"), id="sid-x"),
    pytest.param(case(with_sid("WT/../../foo"), 400), id="sid-dot-dot"),
    pytest.param(case(with_sid("WT%2F..%2F..%2Ffoo"), 400), id="sid-encoded-slashes"),
    pytest.param(case(with_sid("WT" + "0" * 30 + "%2F"), 400), id="sid-encoded-slash-at-length"),
    pytest.param(case(with_sid("WT" + "0" * 5000), 400), id="sid-overlong"),
    pytest.param(case(with_sid("WT" + "A" * 32), 400), id="sid-upper-hex"),
    pytest.param(case(with_sid("WT" + "0" * 31 + "\n"), 400), id="sid-newline"),
    pytest.param(case(with_sid("WT" + "0" * 31 + "\x00"), 400), id="sid-nul"),
    pytest.param(
        case(with_sid("WT" + "0" * 32, event_type="reservation.created"), 204),
        id="sid-ok-unhandled-event-starts-nothing",
    ),
    # whose callback, and when
    pytest.param(case(unsigned(lambda ctx, p: None), 403, "missing"), id="no-signature"),
    pytest.param(
        case(unsigned(lambda ctx, p: ctx.world.gateway.sign(p, token="f" * 32)), 403, "does not match"),
        id="forged-signature",
    ),
    pytest.param(
        case(unsigned(lambda ctx, p: ctx.world.gateway.sign(p, url=ELSEWHERE)), 403),
        id="signature-for-another-url",
    ),
    pytest.param(case(signed({"AccountSid": OTHER_ACCOUNT}), 403, "another Twilio account"), id="other-account"),
    pytest.param(case(signed({"WorkspaceSid": OTHER_WORKSPACE}), 403, "another TaskRouter workspace"), id="other-ws"),
    pytest.param(case(signed(stale), 403, "seconds old"), id="stale"),
    pytest.param(case(signed({"Timestamp": "946684800"}), 403), id="year-2000"),
    pytest.param(case(signed(lambda ctx: {"Timestamp": str(int(time.time()) + 3600)}), 403, "future"), id="future"),
    pytest.param(case(signed({"Timestamp": "yesterday"}), 400, "Timestamp"), id="timestamp-words"),
    pytest.param(case(replayed_duplicate, 204, may_signal=True, check=nothing_changed), id="replayed-duplicate"),
]


@pytest.mark.parametrize("hostile", WEBHOOK)
async def test_the_taskrouter_webhook(world: World, hostile: Case):
    await run(world, hostile)


# ---- what a caller puts in a task reaches Salesforce only escaped ---------------------------------------------------

RESERVED = "\\?&|!{}[]()^~*:\"'+-"


def marker() -> str:
    """Letters no demo record holds, so a search for them matches nothing."""
    return "zq" + "".join("abcdefghij"[int(d)] for d in str(uuid.uuid4().int)[:10])


async def callbacks_answered(ctx: Ctx) -> Answer:
    """The attack is the valid task's own attributes, in TaskRouter's signed callbacks: how they were answered."""
    statuses = {d.status for d in ctx.world.stack.tw.deliveries(task_sid=ctx.task)}
    return Answer(max(statuses), json.dumps(sorted(statuses)))


def caller(attributes: dict, pops: str | None = None, **kw) -> Case:
    """The valid task's attributes carry the attack; unless told otherwise, the first searched attribute's text must
    have been searched for (escaped: every search's FIND is checked)."""
    attributes = {"direction": "inbound", **attributes}
    if "salesforce" not in kw:
        term = next(attributes[k] for k in ("name", "from", "identity", "customerAddress") if k in attributes)
        kw["salesforce"] = searched_for(term.split(":", 1)[-1][:12])
    return Case(callbacks_answered, 204, attributes=attributes, pops=pops, **kw)


def searched_for(text: str) -> Callable[[list[SalesforceCall]], None]:
    """A search went out for the text, in the FIND clause, with its reserved characters escaped."""
    escaped = "".join("\\" + ch if ch in SOSL_RESERVED else ch for ch in text)

    def check(calls: list[SalesforceCall]) -> None:
        searches = [c.q for c in calls if c.path.rstrip("/").endswith("/search")]
        assert any(q and q.startswith("FIND {") and escaped in q for q in searches), (escaped, searches)

    return check


def owned_by_the_integration_user(task: dict) -> None:
    """The worker's email matched no user: the Task stays the integration user's (a widened query would match one)."""
    assert task["OwnerId"] == sf_demo.INTEGRATION_USER_ID, task["OwnerId"]


def soql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def queried_as_one_literal(value: str) -> Callable[[list[SalesforceCall]], None]:
    def check(calls: list[SalesforceCall]) -> None:
        queries = [c.q for c in calls if c.path.rstrip("/").endswith("/query") and c.q and value[:8] in c.q]
        assert queries, [c.q for c in calls]
        for q in queries:
            assert soql_literal(value) in q, q

    return check


# Unescaped, it would make the owner look-up find Grace Hopper, whose Task it is not.
INJECTED_EMAIL = f"nobody@example.com' OR Email = '{sf_demo.AGENT_USERS[1].email}"

SEARCHES = [
    pytest.param(
        caller({"name": sf_demo.APOSTROPHE_CONTACT.name}, sf_demo.APOSTROPHE_CONTACT.id), id="name-apostrophe"
    ),
    pytest.param(
        caller({"name": sf_demo.RESERVED_CHARS_ACCOUNT.name}, sf_demo.RESERVED_CHARS_ACCOUNT.id), id="name-ampersand"
    ),
    pytest.param(caller({"name": f"{marker()} {RESERVED}"}), id="name-every-reserved-character"),
    pytest.param(caller({"name": f"{marker()}*"}), id="name-wildcard"),
    pytest.param(caller({"name": f"{marker()}}} IN ALL FIELDS RETURNING User(Id, Email)"}), id="name-closes-the-find"),
    pytest.param(caller({"name": f"{marker()}\\"}), id="name-trailing-backslash"),
    pytest.param(caller({"from": f"+1 (646) 555-0175' OR Name LIKE '%{marker()}"}), id="from-quote-injection"),
    pytest.param(caller({"from": f"{marker()}@example.com' OR '1'='1"}), id="from-email-injection"),
    pytest.param(caller({"identity": f"client:{marker()}*?"}), id="identity-wildcards"),
    pytest.param(caller({"customerAddress": f"whatsapp:{marker()}\\\\{{}}"}), id="customer-address-braces"),
    pytest.param(
        caller(
            {"from": CONTACT.phone},
            pops=CONTACT.id,
            worker_attributes={"email": INJECTED_EMAIL},
            logged=owned_by_the_integration_user,
            salesforce=queried_as_one_literal(INJECTED_EMAIL),
        ),
        id="worker-email-soql-injection",
    ),
    pytest.param(
        caller(
            {"from": CONTACT.phone, "conference": {"participants": {"worker": "CA' OR CallObject != '"}}},
            pops=CONTACT.id,
            logged=lambda task: assert_equal(task.get("CallObject"), "CA' OR CallObject != '"),
        ),
        id="call-leg-verbatim",
    ),
]


def assert_equal(actual, expected) -> None:
    assert actual == expected, (actual, expected)


@pytest.mark.parametrize("hostile", SEARCHES)
async def test_caller_controlled_text_reaches_salesforce_escaped(world: World, hostile: Case):
    await run(world, hostile)


# ---- the agent API: tokens ------------------------------------------------------------------------------------------

# route name → (method, path, a valid body); "{task}" is this case's valid task (the agent's, in progress), in the
# path or, for the pop's long-poll at its one URL, in the body
AGENT_ROUTES = {
    "get-task": ("GET", "/agent/tasks/{task}", None),
    "pop": ("POST", "/agent/pop", {"task_sid": "{task}", "wait_s": 1}),
    "select-record": ("PUT", "/agent/tasks/{task}/record", {"record_id": CONTACT.id}),
    "notes": ("POST", "/agent/tasks/{task}/notes", {"summary": "hello"}),
    "click-to-dial": ("POST", "/agent/click-to-dial", {"number": CONTACT.phone}),
    "config": ("GET", "/agent/config", None),
}


def other_account_token(world: World) -> str:
    """A well-signed Flex token of another Twilio account (the sandbox's own key, another account's sid)."""
    authority = copy.copy(world.stack.tw._tokens)
    authority._account_sid = OTHER_ACCOUNT
    return authority.mint(AGENT.sid)


def forged_token(world: World) -> str:
    header, payload, signature = world.token().split(".")
    return f"{header}.{payload}.{signature[:-4]}AAAA"


def revoked_token(ctx: Ctx) -> str:
    """A token Twilio once issued and now refuses (the sandbox has no revocation: its validation is made to refuse
    this one token, as Twilio answers for a revoked token — tests/test_token_abuse.py does the same)."""
    token = ctx.world.token(ttl_s=1800)
    validate = TokenAuthority.validate

    def refuse_it(self, presented):
        return self._invalid(20101, "Invalid Access Token") if presented == token else validate(self, presented)

    assert ctx.monkeypatch is not None
    ctx.monkeypatch.setattr(TokenAuthority, "validate", refuse_it)
    return token


# token kind → (the Authorization header's value, or None for none; the reason in the 401)
TOKENS: dict[str, tuple[Callable[[Ctx], str | None], str]] = {
    "missing": (lambda ctx: None, "Bearer <Flex token> is required"),
    "basic-scheme": (lambda ctx: "Basic dXNlcjpwYXNz", "Bearer <Flex token> is required"),
    "empty-bearer": (lambda ctx: "Bearer ", "Bearer <Flex token> is required"),
    "garbage": (lambda ctx: "Bearer not-a-token", "Invalid Access Token"),
    "forged": (lambda ctx: f"Bearer {forged_token(ctx.world)}", "Invalid Access Token"),
    "expired": (lambda ctx: f"Bearer {ctx.world.token(ttl_s=-60)}", "expired"),
    "other-account": (lambda ctx: f"Bearer {other_account_token(ctx.world)}", "Invalid Access Token"),
    "revoked": (lambda ctx: f"Bearer {revoked_token(ctx)}", "Invalid Access Token"),
    "overlong": (lambda ctx: "Bearer " + "a" * 9000, "longer than 8192 characters"),
    "latin1-bytes": (lambda ctx: f"Bearer {LATIN1}", "Invalid Access Token"),
}


def filled(body: dict | None, task: str) -> dict | None:
    """A route's body with "{task}" in its text as this case's valid task."""
    if body is None:
        return None
    return {name: value.replace("{task}", task) if isinstance(value, str) else value for name, value in body.items()}


def with_token(route: str, kind: str) -> Send:
    method, path, body = AGENT_ROUTES[route]
    authorization, _ = TOKENS[kind]

    async def send(ctx: Ctx) -> Answer:
        value = authorization(ctx)
        headers = [] if value is None else [f"Authorization: {value}"]
        payload = b"" if body is None else json.dumps(filled(body, ctx.task)).encode()
        if payload:
            headers += [f"Content-Type: {JSON}", f"Content-Length: {len(payload)}"]
        return await raw(ctx.world.gateway.url, head(method, path.format(task=ctx.task), *headers) + payload)

    return send


# The kinds the issue names on every route (one dependency authenticates them all, so the malformed headers go to
# two routes: one with a body, one without).
EVERY_ROUTE = ("missing", "forged", "expired", "other-account", "revoked")
TOKEN_CASES = [
    pytest.param(case(with_token(route, kind), 401, reason), id=f"{route}-{kind}")
    for route in AGENT_ROUTES
    for kind, (_, reason) in TOKENS.items()
    if kind in EVERY_ROUTE or route in ("notes", "config")
]


@pytest.mark.parametrize("hostile", TOKEN_CASES)
async def test_the_agent_api_refuses_every_token_it_should(world: World, hostile: Case, monkeypatch):
    await run(world, hostile, monkeypatch)


# ---- the agent API: sids in the path --------------------------------------------------------------------------------


def at(method: str, target: str | Callable[[Ctx], str], body: dict | None = None, worker=AGENT) -> Send:
    """A request with a valid token of `worker`, its target sent as written (no client normalises it)."""

    async def send(ctx: Ctx) -> Answer:
        path = target(ctx) if callable(target) else target.format(task=ctx.task)
        headers = [f"Authorization: Bearer {ctx.world.token(worker)}"]
        payload = b"" if body is None else json.dumps(body).encode()
        if body is not None:
            headers += [f"Content-Type: {JSON}", f"Content-Length: {len(payload)}"]
        return await raw(ctx.world.gateway.url, head(method, path, *headers) + payload)

    return send


def unknown_sid(suffix: str = "") -> Callable[[Ctx], str]:
    def target(ctx: Ctx) -> str:
        return f"/agent/tasks/{ctx.new_sid()}{suffix}"

    return target


SID_TRICKS = {
    "x": ("x", 422),
    "dot-dot": ("WT/../../config", 404),
    "dot-dot-encoded": ("WT%2F..%2F..%2Fconfig", 404),
    "dot-segments-percent": ("%2e%2e", 422),
    "overlong": ("WT" + "0" * 5000, 422),
    "nul": ("WT" + "0" * 31 + "%00", 422),
    "newline-encoded": ("WT" + "0" * 31 + "%0A", 422),
    "surrogate-bytes": ("WT" + "0" * 30 + "%ED%A0%80", 422),
    "fullwidth-digits": ("WT" + "０" * 32, 422),
}
SID_ROUTES = {"get-task": ("GET", "", None), "select-record": ("PUT", "/record", {"record_id": CONTACT.id})}
SID_ROUTES["notes"] = ("POST", "/notes", {"summary": "hello"})

SID_CASES = (
    [
        pytest.param(
            case(at(method, "/agent/tasks/" + quote(sid, safe="/%") + suffix, body), status), id=f"{route}-{trick}"
        )
        for route, (method, suffix, body) in SID_ROUTES.items()
        for trick, (sid, status) in SID_TRICKS.items()
        if route == "get-task" or trick in ("x", "dot-dot-encoded", "overlong", "surrogate-bytes")
    ]
    + [
        pytest.param(case(at(method, unknown_sid(suffix), body), 404, "no workflow"), id=f"{route}-unknown-task")
        for route, (method, suffix, body) in SID_ROUTES.items()
    ]
    + [
        pytest.param(
            case(at(method, "/agent/tasks/{task}" + suffix, body, worker=OTHER_AGENT), 403), id=f"{route}-not-mine"
        )
        for route, (method, suffix, body) in SID_ROUTES.items()
    ]
    + [
        pytest.param(
            case(at(method, "/agent/tasks/{task}" + suffix, body, worker=SUPERVISOR), 403, "supervisors may read"),
            id=f"{route}-a-supervisor-acting",
        )
        for route, (method, suffix, body) in SID_ROUTES.items()
        if method != "GET"
    ]
    + [
        pytest.param(case(at("GET", "/agent/tasks/" + "WT" + "0" * 70_000), 422), id="url-of-70-kb"),
        pytest.param(case(at("GET", "/agent/tasks/{task}/../../config"), 404), id="dot-dot-after-a-real-task"),
        pytest.param(case(at("DELETE", "/agent/tasks/{task}"), 405), id="delete-a-task"),
    ]
)


@pytest.mark.parametrize("hostile", SID_CASES)
async def test_the_agent_api_reads_only_task_sids_in_its_paths(world: World, hostile: Case):
    await run(world, hostile)


def pop_of(sid: str | Callable[[Ctx], str], worker=AGENT) -> Send:
    """The pop's long-poll at its one URL (`POST /agent/pop`), naming `sid` in its body ("{task}": this case's valid
    task), with a valid token of `worker`."""

    async def send(ctx: Ctx) -> Answer:
        task_sid = sid(ctx) if callable(sid) else sid.replace("{task}", ctx.task)
        return await at("POST", "/agent/pop", {"task_sid": task_sid, "wait_s": 1}, worker)(ctx)

    return send


# The path tricks, as a JSON body carries them (decoded), and what only a body can hold: a sid and a newline, which
# a regular expression's `$` may let through.
BODY_SID_TRICKS = {
    "x": "x",
    "dot-dot": "WT/../../config",
    "overlong": "WT" + "0" * 5000,
    "nul": "WT" + "0" * 31 + "\x00",
    "trailing-newline": "WT" + "0" * 32 + "\n",
    "lone-surrogate": "WT" + "0" * 31 + "\ud800",
    "fullwidth-digits": "WT" + "\uff10" * 32,
}
POP_SID_CASES = [
    *[pytest.param(case(pop_of(sid), 422, "task_sid"), id=f"pop-{trick}") for trick, sid in BODY_SID_TRICKS.items()],
    pytest.param(
        case(pop_of(lambda ctx: ctx.new_sid()), 404, "TaskRouter has no task"), id="pop-unknown-task-starts-nothing"
    ),
    pytest.param(case(pop_of("{task}", worker=OTHER_AGENT), 403, "another worker"), id="pop-not-mine"),
    pytest.param(case(pop_of("{task}", worker=SUPERVISOR), 403, "another worker"), id="pop-a-supervisor"),
]


@pytest.mark.parametrize("hostile", POP_SID_CASES)
async def test_the_pops_long_poll_reads_only_task_sids_in_its_body(world: World, hostile: Case):
    await run(world, hostile)


# ---- the agent API: bodies ------------------------------------------------------------------------------------------


def body(method: str, path: str, content: bytes | Callable[[Ctx], bytes], content_type: str | None = JSON) -> Send:
    """Bytes as the body of an authenticated request (the agent's own valid token)."""

    async def send(ctx: Ctx) -> Answer:
        payload = content(ctx) if callable(content) else content
        headers = {"Authorization": f"Bearer {ctx.world.token()}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        url = ctx.world.gateway.url + path.format(task=ctx.task)
        return answer_of(await ctx.world.http.request(method, url, content=payload, headers=headers))

    return send


def deep(levels: int, key: str) -> bytes:
    return ('{"' + key + '": ' + "[" * levels + "]" * levels + "}").encode()


NOTES = ("POST", "/agent/tasks/{task}/notes")
RECORD = ("PUT", "/agent/tasks/{task}/record")
DIAL = ("POST", "/agent/click-to-dial")
POP = ("POST", "/agent/pop")
# route → (method, path, the field a string goes in, a valid body)
BODY_ROUTES = {
    "notes": (*NOTES, "summary", {"summary": "Wants a callback"}),
    "select-record": (*RECORD, "record_id", {"record_id": CONTACT.id}),
    "click-to-dial": (*DIAL, "number", {"number": CONTACT.phone}),
    # A well-formed sid of no task: no case here gets past validation (an unknown task's 404 is POP_SID_CASES').
    "pop": (*POP, "task_sid", {"task_sid": "WT" + "0" * 32, "wait_s": 1}),
}


def body_cases(route: str) -> list:
    method, path, text_field, valid = BODY_ROUTES[route]
    limit = 200 * 1024 if route == "notes" else 9 * 1024
    valid_bytes = json.dumps(valid).encode()
    cases = {
        "oversized": (b'{"' + text_field.encode() + b'": "' + b"x" * limit + b'"}', JSON, 413),
        "deep-json": (deep(900, text_field), JSON, 422),
        "deeper-than-the-parser": (deep(3000, text_field), JSON, 400),
        "malformed-json": (b'{"' + text_field.encode() + b'": ', JSON, 422),
        "trailing-garbage": (valid_bytes + b"}}", JSON, 422),
        "top-level-array": (b"[" + valid_bytes + b"]", JSON, 422),
        "top-level-string": (b'"\\ud800"', JSON, 422),
        "null": (b"null", JSON, 422),
        "nan": (b'{"' + text_field.encode() + b'": NaN}', JSON, 422),
        "invalid-utf8": (b'{"' + text_field.encode() + b'": "\xed\xa0\x80\xff"}', JSON, 400),
        "integer-of-5000-digits": (b'{"' + text_field.encode() + b'": ' + b"9" * 5000 + b"}", JSON, 400),
        "infinity": (b'{"' + text_field.encode() + b'": -Infinity}', JSON, 422),
        "text-plain": (valid_bytes, "text/plain", 422),
        "form-urlencoded": (urlencode(valid).encode(), FORM, 422),
        "multipart": (multipart(valid), "multipart/form-data; boundary=flexsf-boundary", 422),
    }
    if route != "notes":  # a string that is not a record id or a phone number
        cases["lone-surrogate"] = (b'{"' + text_field.encode() + b'": "\\ud800\\udfff\\udc00"}', JSON, 422)
        cases["soql-metacharacters"] = (json.dumps({text_field: "001' OR Id != '"}).encode(), JSON, 422)
    return [
        pytest.param(case(body(method, path, content, content_type), status), id=f"{route}-{name}")
        for name, (content, content_type, status) in cases.items()
    ]


def notes_became(**expected) -> Callable[[Ctx, Answer], Awaitable[None]]:
    async def check(ctx: Ctx, answer: Answer) -> None:
        view = await ctx.world.stack.view(ctx.task)
        assert view.notes is not None and view.notes.model_dump(include=set(expected)) == expected, view.notes

    return check


def notes_logged(description: str, disposition: str | None = None) -> Callable[[dict], None]:
    def check(task: dict) -> None:
        assert description in (task.get("Description") or ""), task.get("Description")
        if disposition is not None:
            assert task.get("CallDisposition") == disposition, task.get("CallDisposition")

    return check


INJECTION = "'); DELETE FROM Task; -- } OR Name LIKE '%' \\ {!} [*] ?"


async def notes_past_the_cap(ctx: Ctx) -> Answer:
    """NOTES_PER_TASK_MAX submissions are taken; the next is refused, and leaves nothing in the history."""
    url = f"{ctx.world.gateway.url}/agent/tasks/{ctx.task}/notes"
    headers = {"Authorization": f"Bearer {ctx.world.token()}"}
    for n in range(NOTES_PER_TASK_MAX):
        taken = await ctx.world.http.post(url, json={"summary": f"take {n}"}, headers=headers)
        assert taken.status_code == 204, taken.text
    ctx.before = await ctx.world.touches(ctx.task)
    return answer_of(await ctx.world.http.post(url, json={"summary": "one too many"}, headers=headers))


async def the_last_taken_stands(ctx: Ctx, answer: Answer) -> None:
    view = await ctx.world.stack.view(ctx.task)
    assert view.notes is not None and view.notes.summary == f"take {NOTES_PER_TASK_MAX - 1}"
    assert await ctx.world.touches(ctx.task) == ctx.before, "the refused submission reached the history"


BODY_CASES = [
    *body_cases("notes"),
    *body_cases("select-record"),
    *body_cases("click-to-dial"),
    *body_cases("pop"),
    pytest.param(
        case(
            body(*NOTES, b'{"summary": "Zelda \\ud800", "disposition": "\\udfff"}'),
            204,
            may_signal=True,
            check=notes_became(summary="Zelda \ufffd", disposition="\ufffd"),
            logged=notes_logged("Zelda \ufffd", "\ufffd"),
        ),
        id="notes-lone-surrogates-kept-as-replacement-characters",
    ),
    pytest.param(
        case(
            body(*NOTES, b'{"\\ud800": [[[[[[[[[[[["x"]]]]]]]]]]]], "summary": "ok"}'),
            204,
            may_signal=True,
            check=notes_became(summary="ok"),
        ),
        id="notes-unknown-deep-field-with-a-surrogate-key",
    ),
    pytest.param(
        case(
            body(*NOTES, json.dumps({"summary": INJECTION, "disposition": INJECTION[:50]}).encode()),
            204,
            may_signal=True,
            check=notes_became(summary=INJECTION),
            logged=notes_logged(INJECTION, INJECTION[:50]),
        ),
        id="notes-soql-and-sosl-metacharacters-logged-verbatim",
    ),
    pytest.param(
        case(body(*NOTES, b'{"topics": [' + b'"t",' * 20 + b'"t"]}'), 422, "at most 20 items"), id="notes-21-topics"
    ),
    pytest.param(
        case(notes_past_the_cap, 422, "the most one task takes", may_signal=True, check=the_last_taken_stands),
        id="notes-more-submissions-than-the-per-task-cap",
    ),
    pytest.param(
        case(body(*RECORD, json.dumps({"record_id": CONTACT.id, "extra": 1}).encode()), 422), id="record-extra-field"
    ),
    pytest.param(case(body(*RECORD, json.dumps({"record_id": CONTACT.id}).encode()), 422), id="record-no-candidates"),
]


@pytest.mark.parametrize("hostile", BODY_CASES)
async def test_the_agent_api_refuses_bodies_it_cannot_use(world: World, hostile: Case):
    await run(world, hostile)


# ---- click-to-dial: where it may call -------------------------------------------------------------------------------


def dial(number: str) -> Send:
    return body(*DIAL, json.dumps({"number": number, "recordId": sf_demo.DEMO_LEAD.id}).encode())


DIAL_CASES = [
    pytest.param(case(dial("+1 900 555 0123"), 422, "calls to premium-rate numbers are not allowed"), id="us-premium"),
    pytest.param(case(dial("+44 909 879 0000"), 422, "calls to premium-rate numbers are not allowed"), id="uk-09"),
    pytest.param(case(dial("+881 6 1234 5678"), 422, "calls to satellite numbers (+881) are not allowed"), id="8816"),
    pytest.param(case(dial("+870 773 112345"), 422, "satellite numbers (+870)"), id="inmarsat"),
    pytest.param(case(dial("611"), 422, "calls to short codes are not allowed"), id="short-code"),
    pytest.param(case(dial("911"), 422, "emergency numbers are not dialed"), id="emergency"),
    pytest.param(case(dial("+1 876 555 0123"), 422, "calls to numbers in JM are not allowed"), id="caribbean-one-ring"),
    pytest.param(case(dial("+44 70 1234 5678"), 422, "personal (follow-me) numbers"), id="uk-070-personal"),
    pytest.param(case(dial("+34 901 123 456"), 422, "calls to shared-cost numbers are not allowed"), id="shared-cost"),
    pytest.param(case(dial("\ud800" * 3), 422, "not a valid phone number"), id="lone-surrogates"),
    pytest.param(case(dial("+1 646 555 0175; +1 900 555 0123"), 422, "not a valid phone number"), id="two-numbers"),
]


@pytest.mark.parametrize("hostile", DIAL_CASES)
async def test_click_to_dial_refuses_toll_fraud_destinations(world: World, hostile: Case):
    await run(world, hostile)


# ---- health, and paths that are no route ----------------------------------------------------------------------------


def sent(request: bytes | Callable[[Ctx], bytes]) -> Send:
    async def send(ctx: Ctx) -> Answer:
        return await raw(ctx.world.gateway.url, request(ctx) if callable(request) else request)

    return send


HEALTH_CASES = [
    pytest.param(case(sent(head("GET", "/healthz", f"Content-Length: {10 * GIB}")), 413), id="healthz-10-gib-body"),
    pytest.param(case(sent(head("GET", "/readyz", f"Content-Length: {10 * GIB}")), 413), id="readyz-10-gib-body"),
    pytest.param(
        # a route that reads no body never reads one, however long: answered, and the connection closed
        case(sent(head("GET", "/healthz", "Transfer-Encoding: chunked") + b"4000\r\n" + b"x" * 16384 + b"\r\n"), 200),
        id="healthz-chunked-body-is-never-read",
    ),
    pytest.param(case(sent(head("GET", "/healthz", "Content-Length: lots")), 400), id="healthz-length-not-a-number"),
    pytest.param(case(sent(head("POST", "/healthz", "Content-Length: 0")), 405), id="healthz-post"),
    pytest.param(case(sent(head("TRACE", "/readyz")), 405), id="readyz-trace"),
    pytest.param(case(sent(head("GET", "/healthz/../agent/config")), 404), id="healthz-dot-dot"),
    pytest.param(case(sent(head("GET", "/%2e%2e/%2e%2e/etc/passwd")), 404), id="encoded-dot-dot-to-etc-passwd"),
    pytest.param(case(sent(head("GET", "/healthz%00")), 404), id="healthz-nul"),
    pytest.param(case(sent(head("GET", "/docs")), 404), id="docs-off"),
    pytest.param(case(sent(head("GET", "/openapi.json")), 404), id="openapi-off"),
    pytest.param(case(sent(head("GET", "/metrics")), 404), id="metrics-not-on-the-public-port"),
    pytest.param(
        case(sent(head("POST", "/codec/decode", f"Content-Type: {JSON}", "Content-Length: 2") + b"{}"), 404),
        id="no-codec-on-the-public-port",
    ),
]


@pytest.mark.parametrize("hostile", HEALTH_CASES)
async def test_health_and_paths_that_are_no_route(world: World, hostile: Case):
    await run(world, hostile)


# ---- the codec server -----------------------------------------------------------------------------------------------


def codec_call(
    path: str,
    content: bytes | Callable[[], Awaitable[bytes]],
    *,
    token: str | None = "ours",
    content_type: str = JSON,
    method: str = "POST",
) -> Send:
    """A call to `flexsf codec-server` (its own listener); `token` "ours": its token, None: none, else that one."""

    async def send(ctx: Ctx) -> Answer:
        server = ctx.world.codec
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {server.token if token == 'ours' else token}"
        payload = content if isinstance(content, bytes) else await content()
        url = server.url + path
        return answer_of(await ctx.world.http.request(method, url, content=payload, headers=headers))

    return send


def codec_raw(request: Callable[[Ctx], bytes]) -> Send:
    async def send(ctx: Ctx) -> Answer:
        return await raw(ctx.world.codec.url, request(ctx))

    return send


async def encrypted() -> bytes:
    return json.dumps(as_json(await codec(f"current:{CODEC_KEY}").encode(plain_payloads(CONTACT.phone)))).encode()


async def tampered() -> bytes:
    document = json.loads(await encrypted())
    data = document["payloads"][0]["data"]
    document["payloads"][0]["data"] = data[:-4] + ("AAAA" if data[-4:] != "AAAA" else "BBBB")
    return json.dumps(document).encode()


async def retired_key() -> bytes:
    return json.dumps(as_json(await codec(f"retired:{generate_key()}").encode(plain_payloads("x")))).encode()


def no_key_ids(ctx: Ctx, answer: Answer) -> Awaitable[None]:
    async def check() -> None:
        assert "current" not in answer.text, answer.text  # which keys are configured is none of the caller's business

    return check()


CODEC_CASES = [
    pytest.param(case(codec_call("/decode", b"{}", token=None), 401, "bearer token"), id="no-token"),
    pytest.param(case(codec_call("/decode", encrypted, token="x" * 43), 401), id="wrong-token"),
    pytest.param(
        case(
            codec_raw(
                lambda ctx: head(
                    "POST", f"{CODEC_PREFIX}/decode", f"Authorization: Bearer {LATIN1}", "Content-Length: 0"
                )
            ),
            401,
        ),
        id="latin1-token",
    ),
    pytest.param(
        case(codec_raw(lambda ctx: head("POST", f"{CODEC_PREFIX}/decode", f"Content-Length: {10 * GIB}")), 413),
        id="10-gib-before-the-token",
    ),
    pytest.param(
        case(
            codec_raw(
                lambda ctx: head(
                    "POST",
                    f"{CODEC_PREFIX}/decode",
                    f"Authorization: Bearer {ctx.world.codec.token}",
                    f"Content-Length: {10 * GIB}",
                )
            ),
            413,
        ),
        id="10-gib-with-the-token",
    ),
    pytest.param(case(codec_call("/decode", b"{not json"), 400, "Payloads in proto JSON"), id="malformed-json"),
    pytest.param(
        case(codec_call("/encode", b'{"payloads": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400), id="deep-json"
    ),
    pytest.param(case(codec_call("/decode", b'{"payloads": [{"data": "\\ud800"}]}'), 400), id="lone-surrogate-data"),
    pytest.param(case(codec_call("/encode", b'{"\\udc00": []}'), 400), id="lone-surrogate-key"),
    pytest.param(case(codec_call("/decode", b'{"payloads": [{"data": "\xed\xa0\x80"}]}'), 400), id="invalid-utf8"),
    pytest.param(case(codec_call("/decode", b'{"payloads": [{"data": "!!!not base64"}]}'), 400), id="bad-base64"),
    pytest.param(case(codec_call("/decode", b"[]"), 400), id="not-an-object"),
    pytest.param(case(codec_call("/decode", b"payloads=1", content_type=FORM), 400), id="form-body"),
    pytest.param(case(codec_call("/decode", tampered), 400, "does not decrypt"), id="tampered-payload"),
    pytest.param(
        case(codec_call("/decode", retired_key), 400, "unknown key id 'retired'", check=no_key_ids), id="unknown-key"
    ),
    pytest.param(case(codec_call("/decode", b"", method="GET"), 405), id="get-decode"),
    pytest.param(case(codec_call("/decode", b"", method="GET", token=None), 401), id="get-decode-without-token"),
    pytest.param(
        case(codec_raw(lambda ctx: head("GET", f"{CODEC_PREFIX}/../docs")), 401), id="dot-dot-without-the-token"
    ),
    pytest.param(case(codec_call("/../../docs", b"", method="GET"), 404), id="dot-dot-with-the-token"),
]


@pytest.mark.parametrize("hostile", CODEC_CASES)
async def test_the_codec_server(world: World, hostile: Case):
    await run(world, hostile)


# ---- last: a genuine callback, replayed once stale ------------------------------------------------------------------

REPLAYS = [pytest.param(case(replayed_stale, 403, "seconds old"), id="webhook-replayed-after-the-window")]


@pytest.mark.parametrize("hostile", REPLAYS)
async def test_a_genuine_callback_replayed_once_stale_is_refused(world: World, hostile: Case):
    """Last in the module, so the callback captured at its start is stale by now (run alone, the case waits)."""
    await run(world, hostile)
