"""The sandbox-only control API under `/__sandbox__/` (JSON): faults, counters, tokens, clock, records.

No authentication unless the sandbox was given an admin secret, then `X-Sandbox-Admin: <secret>`.
Not part of Salesforce's API; production code never calls it.

    GET  /__sandbox__/info                      the start-up info (same as the printed JSON line)
    GET  /__sandbox__/faults                    current fault settings
    POST /__sandbox__/faults      {…}           change some settings (see faults.FaultSettings: REST and token
                                                endpoint faults, and the `login_host` / `jwt_audience` org shapes)
    POST /__sandbox__/reset                     faults off, counters and API usage to zero
    GET  /__sandbox__/counters                  calls per endpoint, logins, api_usage
    POST /__sandbox__/revoke      {"token"?}    revoke one token, or all of them
    POST /__sandbox__/expire-sessions {"after_calls": N}
    POST /__sandbox__/clock       {"advance_s": S}
    POST /__sandbox__/api-usage   {"used"?: N, "daily_limit"?: M}   the org's API requests used / allowed today
    GET  /__sandbox__/records/{Type}[?include_deleted=1]
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sandboxes.salesforce.rest import Request, Response

if TYPE_CHECKING:
    from sandboxes.salesforce.sandbox import SalesforceSandbox

PREFIX = "/__sandbox__"


def handle(sandbox: SalesforceSandbox, req: Request) -> Response:
    secret = sandbox.admin_secret
    if secret and not hmac.compare_digest(req.headers.get("x-sandbox-admin", ""), secret):
        return Response(401, {"error": "admin secret required in X-Sandbox-Admin"})
    parts = [p for p in req.path[len(PREFIX) :].split("/") if p]
    route = (req.method, parts[0] if parts else "")
    try:
        body = req.json() if req.method == "POST" else {}
    except Exception:
        return Response(400, {"error": "body must be JSON"})
    if not isinstance(body, dict):
        return Response(400, {"error": "body must be a JSON object"})
    try:
        return _route(sandbox, route, parts, body, req)
    except (ValueError, TypeError) as exc:
        return Response(400, {"error": str(exc)})


def _route(
    sandbox: SalesforceSandbox, route: tuple[str, str], parts: list[str], body: dict[str, Any], req: Request
) -> Response:
    if route == ("GET", "info"):
        return Response(200, sandbox.info)
    if route == ("GET", "faults"):
        return Response(200, asdict(sandbox.faults.settings()))
    if route == ("POST", "faults"):
        return Response(200, asdict(sandbox.faults.set(**body)))
    if route == ("POST", "reset"):
        sandbox.reset()
        return Response(200, {"reset": True})
    if route == ("GET", "counters"):
        return Response(200, sandbox.counters())
    if route == ("POST", "revoke"):
        return Response(200, {"revoked": sandbox.revoke_tokens(body.get("token"))})
    if route == ("POST", "expire-sessions"):
        sandbox.expire_sessions(after_calls=int(body.get("after_calls", 0)))
        return Response(200, {"ok": True})
    if route == ("POST", "clock"):
        sandbox.advance_clock(float(body.get("advance_s", 0)))
        return Response(200, {"ok": True})
    if route == ("POST", "api-usage"):
        if "daily_limit" in body:
            if int(body["daily_limit"]) < 0:
                raise ValueError("daily_limit must be 0 or more")
            sandbox.set_daily_limit(int(body["daily_limit"]))
        if "used" in body:
            sandbox.set_api_usage(int(body["used"]))
        used, limit = sandbox.api_usage()
        return Response(200, {"used": used, "daily_limit": limit})
    if route == ("GET", "records") and len(parts) == 2:
        include_deleted = (req.param("include_deleted") or "") in ("1", "true")
        return Response(200, sandbox.records(parts[1], include_deleted=include_deleted))
    return Response(404, {"error": f"no control endpoint {req.method} {req.path}"})
