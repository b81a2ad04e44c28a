"""`flexsf codec-server`: the remote codec the Temporal UI and CLI call to show encrypted payloads, on a listener of
its own meant for an internal network. It is never mounted on the gateway's app: the webhook port has no `/codec`.

`POST /codec/encode` and `POST /codec/decode` take and answer `temporal.api.common.v1.Payloads` in proto JSON
(`{"payloads": [{"metadata": {…}, "data": "<base64>"}]}`). Point the UI at `http(s)://HOST:PORT/codec`
(`TEMPORAL_CODEC_ENDPOINT` of the `temporalio/ui` image, `--ui-codec-endpoint` of `temporal server start-dev`) and the
CLI with `--codec-endpoint … --codec-auth "Bearer <token>"`.

Whoever may call it can decrypt, so every request is checked, in this order:
1. CORS: browsers may call it from `FLEXSF_CODEC_CORS_ORIGINS` only (preflights are answered here, without a token).
2. Size: a body over `MAX_BODY_BYTES` is refused with 413 while it streams in, before the token is looked at and before
   anything is parsed (a declared `Content-Length` over the limit is refused before a byte is read), by the gateway's
   own `gateway.body_limit`.
3. Token: `Authorization: Bearer <FLEXSF_CODEC_TOKEN>`, compared in constant time; anything else is 401. Only
   `GET /healthz` answers without it. `flexsf dev` alone runs it without a token, bound to 127.0.0.1
   (`allow_unauthenticated`): the dev server's UI cannot send one.

Error bodies say what was wrong with the request, never which key ids are configured.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from google.protobuf import json_format
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from flexsf import logs
from flexsf.codec import AesGcmCodec, PayloadDecryptionError
from flexsf.settings import ConfigurationError, Settings
from flexsf.temporal_client import payload_codec
from gateway.body_limit import BodyLimitMiddleware
from gateway.limits import BodyLimit

PREFIX = "/codec"
# The UI decodes one event's payloads per call; Temporal refuses gRPC messages over 4 MiB, so a real history's
# payloads, base64 in JSON, stay well under this.
MAX_BODY_BYTES = 16 * 1024 * 1024
CODEC_BODY = BodyLimit("codec", MAX_BODY_BYTES)

router = APIRouter(prefix=PREFIX, tags=["codec"])


async def _payloads(request: Request) -> Payloads:
    body = await request.body()  # BodyLimitMiddleware has capped it while it streamed in
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("the body is not a JSON object")
        return json_format.ParseDict(document, Payloads())
    # JSONDecodeError, UnicodeDecodeError: ValueErrors. SystemError: protobuf's C parser (upb) raises it for a field
    # name holding a lone surrogate (`{"\udc00": []}`, tests/test_hostile_input.py) instead of a ParseError.
    except (json_format.ParseError, ValueError, RecursionError, SystemError):
        raise HTTPException(400, 'expected {"payloads": [...]} (Payloads in proto JSON)') from None


def _answer(payloads) -> Response:
    return Response(json_format.MessageToJson(Payloads(payloads=payloads)), media_type="application/json")


def _codec(request: Request) -> AesGcmCodec:
    return request.app.state.codec


@router.post("/encode", summary="Encrypt Payloads (proto JSON) with the current key")
async def encode(request: Request) -> Response:
    return _answer(_codec(request).encode_sync((await _payloads(request)).payloads))


@router.post("/decode", summary="Decrypt Payloads (proto JSON); payloads that are not encrypted come back as they are")
async def decode(request: Request) -> Response:
    payloads = await _payloads(request)
    try:
        return _answer(_codec(request).decode_sync(payloads.payloads))
    except PayloadDecryptionError as exc:
        raise HTTPException(400, str(exc)) from None


class BearerToken:
    """401 unless `Authorization: Bearer <token>` carries the configured token (SHA-256 digests compared in constant
    time, so neither content nor length leaks through timing). `open_paths` answer without it."""

    def __init__(self, app: ASGIApp, token: str, open_paths: tuple[str, ...] = ("/healthz",)) -> None:
        self.app = app
        self.digest = hashlib.sha256(token.encode()).digest()
        self.open_paths = open_paths

    def authorized(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, presented = header.decode("latin-1").partition(" ")
        candidate = hashlib.sha256(presented.strip().encode("latin-1")).digest()
        return hmac.compare_digest(candidate, self.digest) and scheme.lower() == "bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.open_paths or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse(
            {"detail": "a valid bearer token is required (Authorization: Bearer <token>)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await refusal(scope, receive, send)


def create_codec_app(settings: Settings, *, allow_unauthenticated: bool = False) -> FastAPI:
    """The codec server's app. Refuses to build without keys, and without `FLEXSF_CODEC_TOKEN` unless
    `allow_unauthenticated` (the dev stack only, which binds it to 127.0.0.1)."""
    codec = payload_codec(settings)
    if codec is None:
        raise ConfigurationError(
            "FLEXSF_ENCRYPTION_KEYS is not set (nor FLEXSF_ENCRYPTION_KEYS_FILE): there is nothing to decode"
        )
    token = settings.flexsf_codec_token
    if token is None and not allow_unauthenticated:
        raise ConfigurationError(
            "FLEXSF_CODEC_TOKEN is not set: the codec server decrypts for whoever calls it, so every call must carry "
            "a bearer token"
        )
    app = FastAPI(
        title="flexsf codec server",
        summary="Decrypts flexsf payloads for the Temporal UI and CLI",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.codec = codec
    app.state.authenticated = token is not None
    app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Added innermost first: CORS answers preflights, then the size cap, then the token.
    if token is not None:
        logs.register_secrets([token.get_secret_value().strip()])
        app.add_middleware(BearerToken, token=token.get_secret_value().strip())
    app.add_middleware(BodyLimitMiddleware, limits=lambda _path: CODEC_BODY)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[origin.rstrip("/") for origin in settings.flexsf_codec_cors_origins],
        allow_methods=["POST"],
        # The UI sends X-Namespace always and Authorization with TEMPORAL_CODEC_PASS_ACCESS_TOKEN.
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
        allow_credentials=True,
        max_age=600,
    )
    return app
