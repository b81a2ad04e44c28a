"""Flex agent tokens: minted by the sandbox for its workers, checked by the IAM `Tokens/validate` endpoint.

Real Flex tokens are JWEs only Twilio can open; the product never decodes them, it asks IAM. So the sandbox
mints HS256 JWTs shaped like Twilio access tokens, signed with a secret only the sandbox knows, and its
validate endpoint answers the way IAM does.
"""

from __future__ import annotations

import re
import time
from typing import Any

import jwt

from sandboxes.twilio import demo
from sandboxes.twilio.errors import TwilioError, not_found
from sandboxes.twilio.faults import Faults
from sandboxes.twilio.server import Request, Response, Route, route
from sandboxes.twilio.timefmt import iso

# Twilio error codes for access tokens: 20101 "Invalid Access Token", 20104 "Access Token expired".
INVALID_TOKEN = 20101
EXPIRED_TOKEN = 20104


class TokenAuthority:
    def __init__(self, *, account_sid: str, api_key_sid: str, secret: str) -> None:
        self._account_sid = account_sid
        self._api_key_sid = api_key_sid
        self._secret = secret
        self._workers = {w.sid: w for w in demo.DEMO_WORKERS}

    def mint(self, worker_sid: str, ttl_s: float = 3600, roles: list[str] | None = None) -> str:
        worker = self._workers.get(worker_sid)
        if worker is None:
            raise KeyError(worker_sid)
        now = int(time.time())
        claims: dict[str, Any] = {
            "jti": f"{self._api_key_sid}-{now}",
            "iss": self._api_key_sid,
            "sub": self._account_sid,
            "iat": now,
            "exp": now + int(ttl_s),
            "grants": {
                "identity": worker.identity,
                "flex": {
                    "worker_sid": worker.sid,
                    "realm_user_id": worker.realm_user_id,
                    "roles": list(roles) if roles is not None else list(worker.roles),
                    "flex_instance_sid": demo.DEMO_FLEX_INSTANCE_SID,
                },
            },
        }
        return jwt.encode(claims, self._secret, algorithm="HS256", headers={"cty": "twilio-fpa;v=1"})

    def validate(self, token: object) -> dict[str, Any]:
        """The body IAM answers with; forged, expired and malformed tokens are a 200 with `valid: false`."""
        if not isinstance(token, str) or not token:
            return self._invalid(INVALID_TOKEN, "Token is required")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], options={"require": ["exp", "sub", "grants"]}
            )
        except jwt.ExpiredSignatureError:
            return self._invalid(EXPIRED_TOKEN, "Access Token expired or expiration date invalid")
        except jwt.InvalidTokenError:
            return self._invalid(INVALID_TOKEN, "Invalid Access Token")
        flex = claims["grants"].get("flex") or {}
        if claims["sub"] != self._account_sid or not flex.get("worker_sid"):
            return self._invalid(INVALID_TOKEN, "Invalid Access Token")
        return {
            "valid": True,
            "code": 0,
            "message": None,
            "expiration": iso(claims["exp"]),
            "realm_user_id": flex.get("realm_user_id"),
            "identity": claims["grants"].get("identity"),
            "roles": flex.get("roles", []),
            "worker_sid": flex["worker_sid"],
            "flex_instance_sid": flex.get("flex_instance_sid"),
        }

    @staticmethod
    def _invalid(code: int, message: str) -> dict[str, Any]:
        return {
            "valid": False,
            "code": code,
            "message": message,
            "expiration": None,
            "realm_user_id": None,
            "identity": None,
            "roles": None,
            "worker_sid": None,
        }


def routes(authority: TokenAuthority, account_sid: str, faults: Faults) -> list[Route]:
    def validate(req: Request, match: re.Match[str]) -> Response:
        if match["account"] != account_sid:
            raise not_found(f"/Accounts/{match['account']}")
        body = req.json
        answer = authority.validate(body.get("token") if isinstance(body, dict) else None)
        cfg = faults.config
        if answer["valid"] or cfg.token_invalid_status == 200:
            return Response(200, answer)
        if cfg.token_invalid_body == "error":
            refused = TwilioError(cfg.token_invalid_status, answer["code"], answer["message"])
            return Response(refused.status, refused.body())
        return Response(cfg.token_invalid_status, answer)

    return [route("POST", "/v1/Accounts/(?P<account>[^/]+)/Tokens/validate", "token_validate", validate)]
