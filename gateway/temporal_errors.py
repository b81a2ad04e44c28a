"""Temporal's failures as HTTP answers, shared by every route that talks to Temporal.

An outage is 503 and a refusal is 503 with its reason: the agent's browser retries; TaskRouter does not retry a
callback, so an event refused here is recovered by the workflow's reconciliation or `flexsf reconcile`.
Routes handle the errors that mean something to them (NOT_FOUND, a closed workflow) before these.
"""

from __future__ import annotations

from fastapi import HTTPException
from temporalio.service import RPCError, RPCStatusCode

UNAVAILABLE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED})


def unavailable(exc: Exception, refused: str = "the call") -> HTTPException | None:
    """The 503 for an error that means Temporal cannot be reached or refused us; None for anything else."""
    if isinstance(exc, RPCError):
        name = exc.status.name if exc.status else "unknown"
        if exc.status in UNAVAILABLE:
            return HTTPException(503, f"Temporal is unreachable ({name})")
        return HTTPException(503, f"Temporal refused {refused} ({name})")
    if isinstance(exc, (ConnectionError, OSError, TimeoutError)):
        return HTTPException(503, f"Temporal is unreachable ({type(exc).__name__})")
    if isinstance(exc, RuntimeError) and "client connect" in str(exc):
        # A lazily connected client that cannot reach the server raises "Failed client connect: …".
        return HTTPException(503, "Temporal is unreachable (connection failed)")
    return None
