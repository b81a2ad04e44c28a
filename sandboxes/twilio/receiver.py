"""A tiny HTTP server that records what is POSTed to it: the stand-in for our gateway in sandbox tests.

`wait_for(n)` blocks until n requests arrived (no sleeping in tests); the answer status can be fixed or
scripted per request, and answers can be delayed to provoke the sender's timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    url: str  # as the sender addressed it: http://<Host header><path?query>
    path: str
    headers: dict[str, str]
    body: bytes
    form_multi: dict[str, list[str]]
    status: int  # what the receiver answered

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in self.form_multi.items()}


class CallbackReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, path: str = "/taskrouter/events") -> None:
        self.path = path
        self.status = 204  # Twilio recommends answering callbacks with 204
        self.delay_s = 0.0
        self._scripted: deque[int] = deque()
        self._requests: list[ReceivedRequest] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = receiver._next_status()
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                receiver._record(
                    ReceivedRequest(
                        method=self.command,
                        url=f"http://{self.headers.get('Host')}{self.path}",
                        path=self.path,
                        headers={k: v for k, v in self.headers.items()},
                        body=body,
                        form_multi=parse_qs(body.decode(), keep_blank_values=True),
                        status=status,
                    )
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="callback-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def start(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> CallbackReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def respond_with(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order, then with `self.status` again."""
        with self._arrived:
            self._scripted.extend(statuses)

    def _next_status(self) -> int:
        with self._arrived:
            return self._scripted.popleft() if self._scripted else self.status

    def _record(self, request: ReceivedRequest) -> None:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._arrived:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived; returns all received so far."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= count, timeout=timeout):
                raise TimeoutError(f"received {len(self._requests)} of {count} requests within {timeout}s")
            return list(self._requests)

    def clear(self) -> None:
        with self._arrived:
            self._requests.clear()
            self._scripted.clear()
