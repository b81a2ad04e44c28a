"""`POST /codec/encode` and `POST /codec/decode`: the remote codec the Temporal UI and CLI call to show encrypted
payloads (`temporal server start-dev --ui-codec-endpoint http://HOST:PORT/codec`, `temporal workflow show
--codec-endpoint …`).

Bodies are `temporal.api.common.v1.Payloads` in proto JSON (`{"payloads": [{"metadata": {…}, "data": "<base64>"}]}`),
both ways. Mounted only when `FLEXSF_ENCRYPTION_KEYS` is set (otherwise the paths are 404). Browsers may call it from
`FLEXSF_CODEC_CORS_ORIGINS` (the Temporal UI). Whoever can reach it can decrypt payloads: serve it where only
operators can.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from google.protobuf import json_format
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from flexsf.codec import AesGcmCodec, PayloadDecryptionError
from flexsf.settings import ConfigurationError, Settings
from flexsf.temporal_client import payload_codec

PREFIX = "/codec"
MAX_BODY_BYTES = 16 * 1024 * 1024

router = APIRouter(prefix=PREFIX, tags=["codec"])


async def _payloads(request: Request) -> Payloads:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("the body is not a JSON object")
        return json_format.ParseDict(document, Payloads())
    except (json_format.ParseError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise HTTPException(400, f'expected {{"payloads": [...]}} (Payloads in proto JSON): {exc}') from None


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


class PathCORS:
    """Starlette's CORS middleware for one path prefix only, so the Temporal UI's origin may call the codec without
    being allowed on the rest of the gateway (and without the gateway's own CORS policy refusing its preflight)."""

    def __init__(self, app: ASGIApp, prefix: str, origins: list[str]) -> None:
        self.app = app
        self.prefix = prefix
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["POST"],
            allow_headers=["Content-Type", "X-Namespace", "Authorization"],
            allow_credentials=True,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def install(app: FastAPI, settings: Settings) -> bool:
    """Add the codec endpoints (and their CORS) when encryption keys are configured. Call it after the app's own
    middleware so the codec's CORS answers first. Returns whether they were added."""
    codec = payload_codec(settings)
    if codec is None:
        return False
    app.state.codec = codec
    app.add_middleware(PathCORS, prefix=PREFIX, origins=list(settings.flexsf_codec_cors_origins))
    app.include_router(router)
    return True


def create_codec_app(settings: Settings) -> FastAPI:
    """The codec endpoints alone (`flexsf codec-server`), for operators who do not run the gateway."""
    app = FastAPI(title="flexsf codec server", summary="Decrypts flexsf payloads for the Temporal UI and CLI")
    if not install(app, settings):
        raise ConfigurationError("FLEXSF_ENCRYPTION_KEYS is not set: there is nothing to decode")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
