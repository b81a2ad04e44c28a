"""HTTPS plumbing: a threading HTTP/1.1 server whose TLS handshake runs in each connection's thread.

Why stdlib: it lets a handler really drop the TCP connection after a committed write (no response,
no TLS close_notify) and keeps per-request overhead small. Keep-alive is on (HTTP/1.1 with
Content-Length on every response).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandboxes.http_common import write_json
from sandboxes.salesforce.rest import Request, Response

log = logging.getLogger("flexsf.sandbox.salesforce")

_HANDSHAKE_TIMEOUT_S = 10
_IDLE_TIMEOUT_S = 120  # keep-alive connections idle longer than this are closed
_MAX_BODY = 16 * 1024 * 1024

Dispatch = Callable[[Request], Response]


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], ssl_context: ssl.SSLContext, dispatch: Dispatch) -> None:
        self.ssl_context = ssl_context
        self.dispatch = dispatch
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._open_lock:
            (self._open.add if add else self._open.discard)(sock)

    def close_all_connections(self) -> None:
        """Keep-alive threads block on reads; shutting their sockets lets `stop()` finish promptly."""
        with self._open_lock:
            socks = list(self._open)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxHTTPServer
    timeout = _IDLE_TIMEOUT_S
    _raw: socket.socket | None = None
    _tls_ok = False

    def setup(self) -> None:
        raw: socket.socket = self.request
        self._raw = raw
        self.server.track(raw, True)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(_HANDSHAKE_TIMEOUT_S)
        try:
            self.request = self.connection = self.server.ssl_context.wrap_socket(raw, server_side=True)
            self._tls_ok = True
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake failed: %s", exc)
        super().setup()

    def handle(self) -> None:
        if self._tls_ok:
            try:
                super().handle()
            except (ConnectionError, ssl.SSLError, TimeoutError):
                self.close_connection = True

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        if self._raw is not None:
            self.server.track(self._raw, False)

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        log.info("%s " + format, self.client_address[0], *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The request line without its query string: queries carry customer data (names, phones).
        log.info("%s %s %s", self.command, urlsplit(self.path).path, code)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._write(Response(413, [{"message": "request body too large", "errorCode": "JSON_PARSER_ERROR"}]))
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            response = self.server.dispatch(request)
        except Exception:
            log.exception("sandbox error on %s %s", self.command, url.path)
            response = Response(
                500, [{"message": "An unexpected error occurred in the sandbox", "errorCode": "UNKNOWN_EXCEPTION"}]
            )
        if response.drop_connection:
            self._drop()
            return
        self._write(response)

    def _drop(self) -> None:
        """Vanish without a response or TLS close_notify, like a load balancer losing the connection."""
        log.info("%s %s dropped after commit", self.command, urlsplit(self.path).path)
        self.close_connection = True
        if self._raw is not None:
            try:
                self._raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _write(self, response: Response) -> None:
        write_json(
            self, response.status, response.body, response.headers, content_type="application/json;charset=UTF-8"
        )

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _serve
