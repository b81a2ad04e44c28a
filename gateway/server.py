"""Run the gateway with uvicorn inside an event loop we own (`flexsf dev`, tests), leaving signals to the caller."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that does not take over SIGINT/SIGTERM: whoever embeds it decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def start_gateway(
    app: FastAPI,
    host: str,
    port: int,
    log_level: str = "warning",
    log_config: dict | str | None = uvicorn.config.LOGGING_CONFIG,
) -> tuple[EmbeddedServer, asyncio.Task]:
    """Start serving on the running loop; returns once the socket listens (or raises if startup failed).

    `log_config=None` leaves logging alone (uvicorn's records reach the root logger's handlers, e.g. flexsf.logs)."""
    server = EmbeddedServer(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", log_config=log_config)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"the gateway did not start on {host}:{port}")
        await asyncio.sleep(0.02)
    return server, task


async def stop_gateway(server: EmbeddedServer, task: asyncio.Task) -> None:
    server.should_exit = True
    await task
