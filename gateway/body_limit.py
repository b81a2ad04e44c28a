"""A pure ASGI middleware that refuses a request body over its route's limit (`gateway.limits`) while it streams in.

FastAPI reads a body lazily and in full (before a route's dependencies, so before authentication), which is why the
limit is enforced here, between the server and the app:

- a `Content-Length` over the limit is answered 413 before the app runs and before a byte is handed to it (a client
  that sent `Expect: 100-continue` is never asked for the body);
- whatever the headers say, the bytes are counted as the app reads them; the read that crosses the limit raises
  inside the app, whatever the app answers then is dropped, and the answer is 413;
- a `Content-Length` that is not a number is 400.

A client that is still sending when it is refused only reads the answer once its upload is done (most HTTP clients
do), so up to `DRAIN_BYTES` more are read and thrown away, and a body that ends within them gets its 413 on a
connection that stays open. Anything larger is answered with `Connection: close` at once, and the server stops
reading: such a client may see the connection reset instead of the 413 — the price of never reading 20 MiB for a
caller who sends them. Nothing of the request is kept or logged.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.limits import BodyLimit, limit_for

# How much of a refused body is read and discarded so that its sender gets the 413 rather than a reset connection.
DRAIN_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    """Raised into the app by `receive` once the body crosses its limit; the middleware answers 413."""


_INVALID = -1


def declared_length(scope: Scope) -> int | None:
    """The request's `Content-Length` (None: absent; -1: not a number, or several that disagree)."""
    values = {value.strip() for name, value in scope.get("headers", ()) if name.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1:
        return _INVALID
    [value] = values
    return int(value) if value.isdigit() and len(value) <= 18 else _INVALID


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        limits: Callable[[str], BodyLimit] = limit_for,
        on_refused: Callable[[Scope, BodyLimit], None] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.on_refused = on_refused  # e.g. counting a refused TaskRouter callback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits(scope.get("path", ""))
        declared = declared_length(scope)
        if declared == _INVALID:
            await _answer(send, 400, "Content-Length is not a number", close=True)
            return
        if declared is not None and declared > limit.max_bytes:
            # Refused before the app runs; a body that would end soon is drained so its sender reads the answer.
            drained = declared <= limit.max_bytes + DRAIN_BYTES and await _drain(receive, DRAIN_BYTES)
            await self._refuse(scope, send, limit, close=not drained)
            return

        received = 0
        exceeded = False
        ended = False  # the body's last message has arrived
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded, ended
            if exceeded:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                ended = not message.get("more_body", False)
                if received > limit.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # what the app answers to a body it could not finish reading is replaced by the 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, send, limit, close=not (ended or await _drain(receive, DRAIN_BYTES)))

    async def _refuse(self, scope: Scope, send: Send, limit: BodyLimit, *, close: bool) -> None:
        if self.on_refused is not None:
            self.on_refused(scope, limit)
        await _answer(send, 413, f"the body is larger than {limit.max_bytes} bytes", close=close)


async def _drain(receive: Receive, budget: int) -> bool:
    """Read and discard the rest of the body, at most `budget` bytes: whether it ended within them."""
    while budget >= 0:
        message = await receive()
        if message["type"] != "http.request":
            return False  # the client went away
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return budget >= 0
    return False


async def _answer(send: Send, status: int, detail: str, *, close: bool) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
