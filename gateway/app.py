"""The gateway's FastAPI application.

With an OTLP endpoint in the standard `OTEL_*` variables it exports a span per request, whose child is the
signal-with-start of the task's workflow: the workflow's and its activities' spans join the same trace
(flexsf/tracing.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from temporalio.client import Client
from twilio.request_validator import RequestValidator

from flexsf import tracing
from flexsf.flex_config import FlexConfigCache
from flexsf.settings import ConfigurationError, Settings
from flexsf.temporal_client import connect
from flexsf.tls import client_context
from flexsf.twilio_client import twilio_client_from
from gateway.auth import AuthFailureLimiter, TokenValidator
from gateway.body_limit import BodyLimitMiddleware
from gateway.client_address import trusted_networks
from gateway.routes import agent, copilot, health, taskrouter
from gateway.routes import metrics as metrics_route
from gateway.taskrouter_tasks import TaskRouterTasks


def create_app(settings: Settings, client: Client | None = None, *, dev: bool = False) -> FastAPI:
    """The gateway; `dev=True` only for `flexsf dev` (a loopback stack), where FLEXSF_PUBLIC_BASE_URL may be unset."""
    if settings.twilio_auth_token is None:
        raise ConfigurationError("TWILIO_AUTH_TOKEN is required to verify TaskRouter callback signatures")
    taskrouter.check_settings(settings, dev=dev)
    # Before the lifespan connects: the client it opens carries the tracing interceptor only once this is set up.
    tracing.start("flexsf-gateway")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.temporal_client is None:
            app.state.temporal_client = await connect(settings)
        # Metrics on a listener of their own (an internal network), never on this app's public port.
        address = settings.flexsf_gateway_metrics_address
        listener = metrics_route.MetricsListener(app.state.metrics.registry, address) if address else None
        try:
            async with httpx.AsyncClient(timeout=settings.twilio_timeout_s, verify=client_context()) as http:
                if settings.twilio_account_sid:
                    # The agent API: Flex tokens validated through Twilio, feature flags from the Flex configuration.
                    app.state.token_validator = TokenValidator.from_settings(settings, http)
                    twilio = twilio_client_from(settings)
                    app.state.flex_config = FlexConfigCache(
                        twilio, settings.flexsf_features, settings.flexsf_flex_config_ttl_s
                    )
                    if settings.twilio_workspace_sid:
                        app.state.taskrouter_tasks = TaskRouterTasks(twilio, settings.twilio_workspace_sid)
                yield
        finally:
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            await asyncio.to_thread(tracing.flush)

    docs = settings.flexsf_gateway_docs  # off: /docs, /redoc and /openapi.json answer 404 (`app.openapi()` still works)
    app = FastAPI(
        title="flexsf gateway",
        summary="Twilio Flex TaskRouter callbacks into Temporal, and the agent API of the Flex plugin",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.temporal_client = client
    app.state.token_validator = None
    app.state.flex_config = None
    app.state.taskrouter_tasks = None
    app.state.request_validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    app.state.dev = dev
    app.state.auth_limiter = AuthFailureLimiter.from_settings(settings)
    app.state.trusted_proxies = trusted_networks(settings.flexsf_trusted_proxies)
    # Innermost of the middleware: a body over its route's limit is 413 before routing, auth or parsing.
    app.add_middleware(BodyLimitMiddleware, on_refused=taskrouter.count_oversized_callback)
    if settings.flexsf_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[origin.rstrip("/") for origin in settings.flexsf_cors_origins],
            allow_methods=["GET", "PUT", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=7200,  # Chromium's cap (kMaxTimeout, preflight_result.cc): a preflight per 2 h, not 10 min
        )
    # No /codec here, keys or not: the codec is `flexsf codec-server`, a listener of its own (gateway/codec_server.py).
    metrics_route.install(app)  # counts every request (outermost middleware); served by the lifespan's listener
    app.include_router(health.router)
    app.include_router(taskrouter.router)
    app.include_router(agent.router)
    app.include_router(copilot.router)
    tracing.instrument_app(app)  # outermost: the request's span also covers the middleware above
    return app
