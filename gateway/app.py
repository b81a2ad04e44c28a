"""The gateway's FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client
from twilio.request_validator import RequestValidator

from flexsf.settings import ConfigurationError, Settings
from gateway.routes import health, taskrouter


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    if settings.twilio_auth_token is None:
        raise ConfigurationError("TWILIO_AUTH_TOKEN is required to verify TaskRouter callback signatures")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.temporal_client is None:
            import worker

            app.state.temporal_client = await worker.connect(settings)
        yield

    app = FastAPI(title="flexsf gateway", summary="Twilio Flex TaskRouter callbacks into Temporal",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.temporal_client = client
    app.state.request_validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    app.include_router(health.router)
    app.include_router(taskrouter.router)
    return app
