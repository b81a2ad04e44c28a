"""Liveness (the process answers) and readiness (Temporal answers too)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway.deps import TemporalClientDep

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 5.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(client: TemporalClientDep) -> JSONResponse:
    try:
        healthy = await asyncio.wait_for(client.service_client.check_health(), READY_TIMEOUT_S)
    except Exception as exc:  # any failure to answer means "not ready"
        return JSONResponse(
            {"status": "unavailable", "detail": f"Temporal is not answering: {type(exc).__name__}"}, status_code=503
        )
    if not healthy:
        return JSONResponse({"status": "unavailable", "detail": "Temporal reports it is not serving"}, status_code=503)
    return JSONResponse({"status": "ready"})
