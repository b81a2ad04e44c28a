"""The OAuth token endpoint (client credentials, JWT bearer, username-password) and the session table.

Error bodies follow Salesforce's token endpoint: HTTP 400 `{"error","error_description"}`.
Tokens are never logged. Two org shapes are switched through the faults (`login_host`, `jwt_audience`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import jwt

from sandboxes.salesforce.clock import Clock
from sandboxes.salesforce.faults import Faults

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The sandbox plays a production org: it takes login.salesforce.com as `aud`, and a sandbox org's
# test.salesforce.com only when `jwt_audience` says so (Salesforce Help "OAuth 2.0 JWT Bearer Flow for
# Server-to-Server Integration": aud is login.salesforce.com, test.salesforce.com or an Experience Cloud site URL).
PRODUCTION_LOGIN_URL = "https://login.salesforce.com"
# Salesforce Help 000886201: the client-credentials flow is not supported on login.salesforce.com or
# test.salesforce.com. The answer, as orgs report it (pozil/pub-sub-api-node-client issue #58), is HTTP 400
# invalid_grant "request not supported on this domain".
LOGIN_HOST_REFUSAL = ("invalid_grant", "request not supported on this domain")


@dataclass(frozen=True)
class OAuthConfig:
    client_id: str
    client_secret: str
    username: str
    password: str
    jwt_public_key: Any  # a cryptography public key, or None to refuse JWT
    token_lifetime_s: float
    org_id: str


@dataclass
class Session:
    user_id: str
    issued_at: float
    expires_at: float


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class OAuth:
    def __init__(self, config: OAuthConfig, clock: Clock, user_id: str, faults: Faults | None = None) -> None:
        self.config = config
        self.clock = clock
        self.user_id = user_id
        self.faults = faults or Faults()
        self.base_url = ""  # set once the server knows its port
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    # ---- token endpoint ----------------------------------------------------------------------
    def token(self, form: dict[str, str], basic: tuple[str, str] | None) -> tuple[str, dict[str, str]]:
        """Returns (grant type, success body) or raises OAuthError."""
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            if self.faults.settings().login_host:
                raise OAuthError(*LOGIN_HOST_REFUSAL)
            client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
            self._check_client(client_id, secret)
        elif grant == "password":
            self._check_client(form.get("client_id", ""), form.get("client_secret", ""))
            if form.get("username") != self.config.username or not hmac.compare_digest(
                form.get("password", ""), self.config.password
            ):
                raise OAuthError("invalid_grant", "authentication failure")
        elif grant == JWT_BEARER_GRANT:
            self._check_assertion(form.get("assertion", ""))
        else:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        return grant, self._issue()

    def _check_client(self, client_id: str, secret: str) -> None:
        if client_id != self.config.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not hmac.compare_digest(secret, self.config.client_secret):
            raise OAuthError("invalid_client", "invalid client credentials")

    def _check_assertion(self, assertion: str) -> None:
        key = self.config.jwt_public_key
        if key is None:
            raise OAuthError("invalid_grant", "no certificate configured for the JWT bearer flow")
        try:
            # Expiry is checked against the sandbox clock below, so tests can move time.
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=self._audiences(),
                options={"require": ["iss", "sub", "aud", "exp"], "verify_exp": False},
            )
        except jwt.InvalidAudienceError:
            raise OAuthError("invalid_grant", "audience is invalid") from None
        except jwt.PyJWTError:
            raise OAuthError("invalid_grant", "invalid assertion") from None
        if claims["iss"] != self.config.client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if claims["sub"] != self.config.username:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        if not isinstance(claims["exp"], (int, float)) or claims["exp"] <= self.clock.time():
            raise OAuthError("invalid_grant", "expired authorization code")

    def _audiences(self) -> list[str]:
        only = self.faults.settings().jwt_audience
        return [only] if only else [self.base_url, PRODUCTION_LOGIN_URL]

    def _issue(self) -> dict[str, str]:
        now = self.clock.time()
        token = f"{self.config.org_id[:15]}!{secrets.token_urlsafe(72)}"
        with self._lock:
            self._sessions[token] = Session(self.user_id, now, now + self.config.token_lifetime_s)
        issued_at = str(int(now * 1000))
        identity = f"{self.base_url}/id/{self.config.org_id}/{self.user_id}"
        signature = hmac.new(self.config.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256)
        return {
            "access_token": token,
            "instance_url": self.base_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": base64.b64encode(signature.digest()).decode(),
        }

    # ---- sessions ----------------------------------------------------------------------------
    def session_for(self, authorization: str | None) -> Session | None:
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            return None
        with self._lock:
            session = self._sessions.get(token.strip())
            if session is None:
                return None
            if session.expires_at <= self.clock.time():
                del self._sessions[token.strip()]
                return None
            return session

    def revoke(self, token: str | None = None) -> int:
        """Revoke one token, or every current one; returns how many were revoked."""
        with self._lock:
            if token is None:
                count = len(self._sessions)
                self._sessions.clear()
                return count
            return 1 if self._sessions.pop(token, None) else 0

    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)
