"""HTTP plumbing: a threaded HTTP/1.1 server, a route table, and the concerns every Twilio API call shares
(Basic auth, per-endpoint counters, injected latency and failures, Twilio's error body)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandboxes.http_common import timed, write_json
from sandboxes.twilio.errors import TwilioError
from sandboxes.twilio.faults import Faults

log = logging.getLogger("sandboxes.twilio.http")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    @cached_property
    def form(self) -> dict[str, list[str]]:
        if self.body and "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            return parse_qs(self.body.decode(), keep_blank_values=True)
        return {}

    def param(self, name: str) -> str | None:
        """A parameter from the form body, else the query string (Twilio reads both)."""
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else None

    def params(self, name: str) -> list[str]:
        return self.form.get(name) or self.query.get(name) or []

    @cached_property
    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise TwilioError(400, 20001, "The request body is not valid JSON") from None

    @cached_property
    def basic_auth(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable; None sends an empty body
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, re.Match[str]], Response]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: str  # the counter name
    handler: Handler
    twilio_api: bool = True  # needs auth, counted, subject to REST faults; False for /__sandbox__ control paths


def route(method: str, path_regex: str, endpoint: str, handler: Handler, *, twilio_api: bool = True) -> Route:
    return Route(method, re.compile(f"^{path_regex}$"), endpoint, handler, twilio_api)


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class Router:
    def __init__(self, *, faults: Faults, counters: Counters, credentials: Callable[[], set[tuple[str, str]]]) -> None:
        self._routes: list[Route] = []
        self._faults = faults
        self._counters = counters
        self._credentials = credentials
        # Benchmarks: called after every request with (request, response, wall-clock start, seconds in handler).
        self.on_request: Callable[[Request, Response, float, float], None] | None = None

    def add(self, *routes: Route) -> None:
        self._routes.extend(routes)

    def handle(self, req: Request) -> Response:
        return timed(self._route, req, self.on_request)

    def _route(self, req: Request) -> Response:
        path_matched = False
        for candidate in self._routes:
            match = candidate.pattern.match(req.path)
            if match is None:
                continue
            path_matched = True
            if candidate.method == req.method:
                return self._call(candidate, req, match)
        if path_matched:
            return error_response(TwilioError(405, 20004, f"Method {req.method} not allowed"))
        return error_response(TwilioError(404, 20404, f"The requested resource {req.path} was not found"))

    def _call(self, chosen: Route, req: Request, match: re.Match[str]) -> Response:
        try:
            if chosen.twilio_api:
                self._counters.add(chosen.endpoint)
                if req.basic_auth not in self._credentials():
                    raise TwilioError(401, 20003, "Authenticate")
                fault = self._injected_fault(chosen.endpoint)
                if fault is not None:
                    return error_response(fault)
                return self._as_sent(chosen.handler(req, match))
            return chosen.handler(req, match)
        except TwilioError as exc:
            return error_response(exc)
        except Exception:
            log.exception("sandbox handler failed: %s %s", req.method, req.path)
            return error_response(TwilioError(500, 20500, "Internal Server Error"))

    def _as_sent(self, response: Response) -> Response:
        if self._faults.config.response_header_case == "lower":
            response.headers = {name.lower(): value for name, value in response.headers.items()}
        return response

    def _injected_fault(self, endpoint: str) -> TwilioError | None:
        cfg = self._faults.config
        if cfg.latency_s > 0 and (cfg.endpoints is None or endpoint in cfg.endpoints):
            time.sleep(cfg.latency_s)
        status = self._faults.refusal(endpoint)
        if status is not None:
            self._counters.add(f"{endpoint}_refused")  # e.g. events_list_refused: the calls a restricted key lost
        else:
            status = self._faults.rest_failure(endpoint)
        if status is None:
            return None
        if status == 429:
            return TwilioError(429, 20429, "Too Many Requests")
        if status == 412:
            return TwilioError(412, 20412, "The ETag provided does not match the current version")
        if status == 401:
            return TwilioError(401, 20003, "Authentication Error - invalid username")
        if status == 403:
            return TwilioError(403, 20403, "Forbidden")
        return TwilioError(status, 20000 + status if status >= 500 else 20001, f"Injected failure ({status})")


def error_response(exc: TwilioError) -> Response:
    return Response(exc.status, exc.body())


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK's pooled session reuses connections
    # Headers and body go out as separate writes; with Nagle on, keep-alive clients wait ~40 ms per response.
    disable_nagle_algorithm = True
    server: SandboxHTTPServer

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        req = Request(self.command, split.path, parse_qs(split.query, keep_blank_values=True), self.headers, body)
        response = self.server.router.handle(req)
        write_json(self, response.status, response.body, response.headers, content_type="application/json")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries no secrets (auth is a header); query strings are filters only.
        log.info("%s %s", self.address_string(), format % args)


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # benchmarks open dozens of connections at once

    def __init__(self, address: tuple[str, int], router: Router) -> None:
        self.router = router
        super().__init__(address, _RequestHandler)
        self._thread: threading.Thread | None = None

    def start_in_thread(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="twilio-sandbox-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)
