"""OpenTelemetry traces (flexsf/tracing.py): off and not even imported without the `OTEL_*` variables, one clear line
when they are set without the `otel` extra, and with them `flexsf gateway` and `python worker.py`, as an operator runs
them, export one trace per task from the TaskRouter webhook to the Salesforce write, with nothing about the caller in
it. The spans go to a small OTLP/HTTP receiver here, decoded with the protobuf definitions the exporter itself uses.
"""

from __future__ import annotations

import builtins
import gzip
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from devtools.netutil import free_port
from flexsf import tracing
from flexsf.settings import ConfigurationError
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import WorkerProcess, eventually, history_once_completed, process_env, stack_env

ROOT = Path(__file__).resolve().parent.parent
FLEXSF = Path(sys.executable).parent / "flexsf"
AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
# The caller's number in any of the forms a search or a log could give it ("(628) 555-0147", "+16285550147", …), and
# the caller's name and e-mail address.
_DIGITS = re.sub(r"\D", "", CONTACT.phone)
CALLER = re.compile(
    rf"{_DIGITS[:3]}\D{{0,6}}{_DIGITS[3:6]}\D{{0,3}}{_DIGITS[6:]}"
    + "".join(rf"|{re.escape(part)}" for part in CONTACT.name.split()),
    re.IGNORECASE,
)


def without_otel(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


# ---- a receiver of OTLP/HTTP traces -----------------------------------------------------------------------------


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id)

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def url(self) -> str:
        return str(self.attributes.get("url.full") or self.attributes.get("http.url") or "")

    @property
    def method(self) -> str:
        return str(self.attributes.get("http.request.method") or self.attributes.get("http.method") or "")


def _value(value: AnyValue):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


@dataclass
class OtlpReceiver:
    """POST /v1/traces as an OpenTelemetry collector answers it (protobuf, gzip or not); every request body is kept
    raw too, to search what left the processes byte for byte."""

    spans: list[Span] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver.add(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    found.append(
                        Span(
                            service=resource.get("service.name", ""),
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes={kv.key: _value(kv.value) for kv in s.attributes},
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        )
                    )
        with self.lock:
            self.bodies.append(body)
            self.spans.extend(found)

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


# ---- off unless configured ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, enabled",
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_EXPORTER": "otlp"}, False),  # no endpoint: nowhere to send
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
    ],
)
def test_tracing_is_on_only_where_the_standard_variables_name_an_endpoint(env, enabled) -> None:
    assert tracing.tracing_enabled(env) is enabled


def test_without_otel_variables_nothing_of_opentelemetry_is_loaded_or_configured() -> None:
    """The worker's and the gateway's modules, an app built and tracing asked to start: no SDK, exporter,
    instrumentation or Temporal interceptor loaded, no tracer provider set, no interceptor for the client."""
    program = (
        "import json, sys\n"
        "import worker, gateway.app\n"
        "from flexsf import tracing\n"
        "from flexsf.settings import Settings\n"
        f"settings = Settings(_env_file=None, twilio_auth_token={secrets.token_hex(16)!r},\n"
        "    twilio_account_sid='AC' + '0' * 32, twilio_workspace_sid='WS' + '0' * 32)\n"
        "app = gateway.app.create_app(settings, dev=True)\n"
        "started = tracing.start('probe')\n"
        "import opentelemetry.trace\n"
        "print(json.dumps({\n"
        "    'started': started,\n"
        "    'interceptors': len(tracing.temporal_interceptors()),\n"
        "    'instrumented': bool(getattr(app, '_is_instrumented_by_opentelemetry', False)),\n"
        "    'provider': type(opentelemetry.trace.get_tracer_provider()).__name__,\n"
        "    'modules': sorted(sys.modules),\n"
        "}))\n"
    )
    env = without_otel({k: v for k, v in os.environ.items() if not k.startswith(("FLEXSF_", "TWILIO_", "TEMPORAL_"))})
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["started"] is False and seen["interceptors"] == 0 and seen["instrumented"] is False
    assert seen["provider"] == "ProxyTracerProvider"  # the API's placeholder: nothing was ever set
    heavy = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation", "opentelemetry.proto")
    loaded = [m for m in seen["modules"] if m.startswith(heavy) or m.startswith("temporalio.contrib.opentelemetry")]
    assert not loaded, loaded


def test_configured_without_the_extra_names_it_in_one_line(monkeypatch) -> None:
    """What `tracing.start` says where the SDK is not installed (an import that fails, as without the extra)."""
    real_import = builtins.__import__

    def without_sdk(name, *args, **kwargs):
        if name.startswith("opentelemetry.sdk"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_sdk)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    with pytest.raises(ConfigurationError) as refused:
        tracing.start("flexsf-worker")
    message = str(refused.value)
    assert tracing.EXTRA_HINT in message and "OTEL_EXPORTER_OTLP_ENDPOINT" in message
    assert "\n" not in message
    assert tracing.temporal_interceptors() == []  # nothing half set up


@pytest.mark.parametrize(
    "program, prefix",
    [
        ("import worker; worker.main()", "flexsf worker: "),
        ("from ops.cli import app; app(['gateway'])", "flexsf gateway: "),
    ],
)
def test_the_worker_and_the_gateway_refuse_to_start_without_the_extra_in_one_line(program, prefix) -> None:
    """The processes themselves, with the SDK made unimportable before anything loads."""
    env = {
        **without_otel(os.environ),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",  # never reached
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_WORKSPACE_SID": "WS" + "0" * 32,
        "FLEXSF_PUBLIC_BASE_URL": "https://flexsf.example.com",
    }
    hidden = "import sys; sys.modules['opentelemetry.sdk'] = None\n"
    done = subprocess.run(
        [sys.executable, "-c", hidden + program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(prefix) and tracing.EXTRA_HINT in lines[0]


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "console"},
    ],
)
def test_settings_the_exporter_would_ignore_are_refused(monkeypatch, env) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError):
        tracing.start("flexsf-worker")
    assert tracing.temporal_interceptors() == []


def test_what_leaves_has_no_query_strings_exception_messages_or_stack_traces() -> None:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Status, StatusCode

    secret = "FIND {(628) 555-0147}"
    span = ReadableSpan(
        "GET",
        attributes={
            "http.url": f"https://x.my.salesforce.com/services/data/v62.0/search/?q={secret}",
            "url.full": f"https://x.my.salesforce.com/services/data/v62.0/search/?q={secret}#frag",
            "http.target": "/copilot/notes?note=Maria+Garcia&bodySHA256=ab",
            "url.query": "note=Maria+Garcia",
            "http.request.header.authorization": ("Bearer eyJ...",),
            "http.status_code": 200,
        },
        events=[
            Event("exception", {"exception.type": "SalesforceError", "exception.message": secret}),
            Event("other", {"kept": "yes"}),
        ],
        status=Status(StatusCode.ERROR, f"ApplicationError: no record for {secret}"),
    )
    clean = tracing.scrub_span(span)
    assert clean.attributes == {
        "http.url": "https://x.my.salesforce.com/services/data/v62.0/search/",
        "url.full": "https://x.my.salesforce.com/services/data/v62.0/search/",
        "http.target": "/copilot/notes",
        "http.status_code": 200,
    }
    assert [dict(e.attributes) for e in clean.events] == [{"exception.type": "SalesforceError"}, {"kept": "yes"}]
    assert clean.status.status_code == StatusCode.ERROR and clean.status.description == "ApplicationError"
    assert tracing.status_description("(628) 555-0147 is not a type") is None


# ---- one task, one trace ----------------------------------------------------------------------------------------


def ancestors(span: Span, by_id: dict[str, Span]) -> list[Span]:
    chain = []
    while span.parent_id and span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def timeline(spans: list[Span], origin: int) -> str:
    lines = []
    for s in sorted(spans, key=lambda s: (s.start_ns, s.end_ns)):
        where = f" {s.url.split('/services/data/')[-1].split('/v1/')[-1][:48]}" if s.url else ""
        lines.append(f"{(s.start_ns - origin) / 1e6:8.1f} ms {s.ms:7.1f} ms  {s.service:14} {s.name}{where}")
    return "\n".join(lines)


def first(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert found, (name, sorted({s.name for s in spans}))
    return min(found, key=lambda s: s.start_ns)


def salesforce_write(s: Span) -> bool:
    return "/sobjects/Task" in s.url and s.method in ("POST", "PATCH")


@dataclass
class Product:
    """`flexsf gateway` and `python worker.py` as processes, configured through their environment."""

    worker: WorkerProcess
    gateway: subprocess.Popen
    public: str


@pytest.fixture
def traced_product(
    temporal_server, clean_salesforce_sandbox, fresh_twilio_sandbox, otlp, tmp_path
) -> Iterator[Product]:
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    env = process_env(
        temporal_server.address,
        {
            **stack_env(sf.info, tw.info, f"tracing-{uuid.uuid4()}", FLEXSF_NOTES_GRACE_S="0"),
            "FLEXSF_PUBLIC_BASE_URL": public,
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans leave within a moment, not the default 5 s
        },
        base=without_otel(os.environ),
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    with (tmp_path / "gateway.log").open("ab") as gateway_log:
        gateway = subprocess.Popen(
            [str(FLEXSF), "gateway", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=gateway_log,
            stderr=subprocess.STDOUT,
        )
    try:
        tw.set_callback_url(f"{public}/taskrouter/events")
        yield Product(worker, gateway, public)
    finally:
        tw.set_callback_url(None)
        worker.stop()
        gateway.terminate()
        gateway.wait(timeout=30)


@pytest.mark.asyncio(loop_scope="session")
async def test_one_task_is_one_trace_from_webhook_to_salesforce_write_without_the_caller_in_it(
    temporal_client, clean_salesforce_sandbox, fresh_twilio_sandbox, otlp, traced_product, tmp_path
) -> None:
    sf, tw, product = clean_salesforce_sandbox, fresh_twilio_sandbox, traced_product
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:

        async def gateway_ready() -> bool:
            assert product.gateway.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                return (await http.get(f"{product.public}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(gateway_ready, timeout=60, what="the gateway answering")
    await eventually(product.worker.polling, timeout=60, what="the worker polling")

    async def one_task() -> str:
        """A single-match call through its life: the pop (the attribute write) seen before wrap-up, so the write
        happens on a task still assigned, then logged to Salesforce once completed."""
        sid = tw.lifecycle({"from": CONTACT.phone, "customerName": CONTACT.name}, worker_sid=AGENT.sid)["sid"]

        def popped() -> bool:
            return json.loads(tw.task(sid)["attributes"]).get("sfdcObjectId") == CONTACT.id

        def unfinished(status) -> tuple:
            return status, (tmp_path / "worker.log").read_text()[-3000:]

        await eventually(popped, what="the pop's attribute write")
        tw.wrapup(sid)
        tw.complete(sid)
        await history_once_completed(temporal_client.get_workflow_handle(workflow_id(sid)), 90, unfinished)
        [logged] = [t for t in sf.records("Task") if t.get("Flex_Task_Sid__c") == sid]
        assert logged["WhoId"] == CONTACT.id
        return sid

    # A first task warms the processes up (connections, the Salesforce token, Flex's configuration), so the second
    # one's spans show the time of a pop, not of a process's first task.
    warm_up, sid = await one_task(), await one_task()

    def run_span(task_sid: str) -> Span | None:
        wanted = workflow_id(task_sid)
        found = [s for s in otlp.snapshot() if s.name.startswith("RunWorkflow:")]
        return next((s for s in found if s.attributes.get("temporalWorkflowID") == wanted), None)

    def the_write_arrived() -> bool:
        run = run_span(sid)
        if run is None or run_span(warm_up) is None:
            return False
        return any(salesforce_write(s) for s in otlp.snapshot() if s.trace_id == run.trace_id)

    await eventually(the_write_arrived, timeout=30, what="the spans of the second task's Salesforce write")

    spans = otlp.snapshot()
    assert {"flexsf-gateway", "flexsf-worker"} <= {s.service for s in spans}
    by_id = {s.span_id: s for s in spans}
    run = run_span(sid)
    assert run.trace_id != run_span(warm_up).trace_id, "a trace per task"
    trace = [s for s in spans if s.trace_id == run.trace_id]

    # The webhook's server span is the parent of the signal-with-start, whose header the workflow continued.
    start = first(trace, "SignalWithStartWorkflow:FlexTaskWorkflow")
    webhook = by_id[start.parent_id]
    assert (webhook.service, webhook.name) == ("flexsf-gateway", "POST /taskrouter/events")
    assert start in ancestors(run, by_id)
    # The activities and their HTTP calls are in it: the search, the attribute write, the Salesforce Task.
    search = first(trace, "RunActivity:search_salesforce")
    save = first(trace, "RunActivity:save_record_on_task")
    log = first(trace, "RunActivity:log_activity")
    assert {s.service for s in (run, search, save, log)} == {"flexsf-worker"}
    [write] = [s for s in trace if salesforce_write(s)]
    assert log in ancestors(write, by_id) and webhook in ancestors(write, by_id)
    [sosl] = [s for s in trace if "/search/" in s.url]
    assert search in ancestors(sosl, by_id)
    [attribute_write] = [s for s in trace if "/Tasks/" in s.url and s.method == "POST"]
    assert save in ancestors(attribute_write, by_id)
    # Health probes are left out, and so are the exporter's own requests (no span about sending spans).
    assert not [s for s in spans if "/healthz" in s.name or "/healthz" in s.url or "/v1/traces" in s.url]

    # Nothing about the caller left either process: not in an attribute, a name, an event or a status (the search's
    # URL lost its `q=`, which held the number).
    assert all("?" not in s.url for s in spans)
    for body in otlp.bodies:
        text = body.decode("latin-1")
        assert not CALLER.search(text) and not CALLER.search(unquote_plus(text))

    # Where the pop's time goes, for docs/performance.md (`pytest -s`). The acceptance came by a webhook of its own (a
    # trace of its own, linked from the workflow's HandleSignal span): the signal handled in the workflow task that
    # started the search.
    search_start = first(trace, "StartActivity:search_salesforce")
    handled = [s for s in trace if s.name == "HandleSignal:task_event" and s.start_ns == search_start.start_ns]
    senders = [by_id[span_id] for s in handled for _, span_id in s.links if span_id in by_id]
    accepted = [by_id[s.parent_id] for s in senders if s.parent_id in by_id]
    shown = trace + [s for a in accepted[-1:] for s in spans if s.trace_id == a.trace_id]
    print(f"\nthe second task's trace ({len(trace)} spans) and its acceptance's webhook, from the first webhook:")
    print(timeline(shown, webhook.start_ns))
    if accepted:
        pop = (save.end_ns - accepted[-1].start_ns) / 1e6
        print(f"pop: the acceptance's webhook received to the attribute write's activity done: {pop:.1f} ms")
