"""HTTP plumbing both sandboxes share: the benchmark timing hook and writing a JSON response.

Each sandbox keeps its own Request/Response types, error bodies, socket handling (TLS, commit-then-drop)
and Content-Type; these helpers only take what the two did identically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def timed(route: Callable[[Req], Resp], req: Req, hook: Callable[[Req, Resp, float, float], None] | None) -> Resp:
    """`route(req)`; with a hook, then call it with (request, response, wall-clock start, seconds in route)."""
    if hook is None:
        return route(req)
    started, t0 = time.time(), time.perf_counter()
    response = route(req)
    hook(req, response, started, time.perf_counter() - t0)
    return response


def write_json(
    handler: BaseHTTPRequestHandler, status: int, body: Any, headers: Mapping[str, str], *, content_type: str
) -> None:
    """Send `body` as JSON (None: an empty body, no Content-Type) with Content-Length; HEAD gets no payload."""
    payload = b"" if body is None else json.dumps(body).encode()
    handler.send_response(status)
    if payload:
        handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(payload)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    if payload and handler.command != "HEAD":
        handler.wfile.write(payload)
