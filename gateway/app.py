"""The gateway's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from temporalio.client import Client
from twilio.request_validator import RequestValidator

from flexsf.flex_config import FlexConfigCache
from flexsf.settings import ConfigurationError, Settings
from flexsf.temporal_client import connect
from flexsf.tls import client_context
from flexsf.twilio_client import twilio_client_from
from gateway.auth import TokenValidator
from gateway.routes import agent, codec, health, taskrouter
from gateway.routes import metrics as metrics_route


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    if settings.twilio_auth_token is None:
        raise ConfigurationError("TWILIO_AUTH_TOKEN is required to verify TaskRouter callback signatures")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.temporal_client is None:
            app.state.temporal_client = await connect(settings)
        async with httpx.AsyncClient(timeout=settings.twilio_timeout_s, verify=client_context()) as http:
            if settings.twilio_account_sid:
                # The agent API: Flex tokens validated through Twilio, feature flags from the Flex configuration.
                app.state.token_validator = TokenValidator.from_settings(settings, http)
                app.state.flex_config = FlexConfigCache(
                    twilio_client_from(settings), settings.flexsf_features, settings.flexsf_flex_config_ttl_s
                )
            yield

    app = FastAPI(
        title="flexsf gateway",
        summary="Twilio Flex TaskRouter callbacks into Temporal, and the agent API of the Flex plugin",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.temporal_client = client
    app.state.token_validator = None
    app.state.flex_config = None
    app.state.request_validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if settings.flexsf_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[origin.rstrip("/") for origin in settings.flexsf_cors_origins],
            allow_methods=["GET", "PUT", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    codec.install(app, settings)  # /codec/* for the Temporal UI when keys are set; its CORS answers before ours
    metrics_route.install(app)  # GET /metrics; counts every request (outermost middleware)
    app.include_router(health.router)
    app.include_router(taskrouter.router)
    app.include_router(agent.router)
    return app
