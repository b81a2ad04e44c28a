"""Temporal's failures as HTTP answers, shared by every route that talks to Temporal.

An outage is 503 and a refusal is 503: the agent's browser retries; TaskRouter does not retry a callback, so an event
refused here is recovered by the workflow's reconciliation or `flexsf reconcile`. The answer's reason is for the
caller ("Temporal is unavailable; retry later") and names no Temporal status and no exception class; those go to the
log. Routes handle the errors that mean something to them (NOT_FOUND, a closed workflow) before these.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("flexsf.gateway.temporal")

UNAVAILABLE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED})
REASON = "Temporal is unavailable; retry later"


def unavailable(exc: Exception, refused: str = "the call") -> HTTPException | None:
    """The 503 for an error that means Temporal cannot be reached or refused us (logged with its details); None for
    anything else. `refused` names what Temporal was asked to take, for the log line."""
    if isinstance(exc, RPCError):
        name = exc.status.name if exc.status else "unknown"
        if exc.status in UNAVAILABLE:
            log.warning("Temporal is unreachable (%s) for %s", name, refused)
        else:
            log.warning("Temporal refused %s (%s)", refused, name)
    elif isinstance(exc, (ConnectionError, OSError, TimeoutError)):
        log.warning("Temporal is unreachable (%s) for %s", type(exc).__name__, refused)
    elif isinstance(exc, RuntimeError) and "client connect" in str(exc):
        # A lazily connected client that cannot reach the server raises "Failed client connect: …".
        log.warning("Temporal is unreachable (connection failed) for %s", refused)
    else:
        return None
    return HTTPException(503, REASON)
