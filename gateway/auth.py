"""Who is calling the agent API: the agent's Flex token, validated by Twilio and remembered until it expires.

Flex tokens are opaque to us (real ones are JWEs only Twilio can open), so we ask Twilio's token validation endpoint,
as twilio-flex-token-validator does, and cache a valid answer until the token's `expiration`. The answer's body
decides, not its status: a 2xx or 4xx saying the token is invalid is a 401; a 5xx, a timeout, a body that is not
JSON, or a 4xx about our own credentials is a 503 (the token may be fine). The cache is keyed by a
SHA-256 of the token; the token itself is never stored, logged or echoed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from pydantic import BaseModel, Field

from flexsf.settings import Settings
from flexsf.twilio_client import DEFAULT_TIMEOUT_S, rebase_url

log = logging.getLogger("flexsf.gateway.auth")

VALIDATE_URL = "https://iam.twilio.com/v1/Accounts/{account_sid}/Tokens/validate"
SUPERVISOR_ROLE = "supervisor"
# Twilio's "Invalid Access Token" family: 20101 invalid, 20104 expired, 20107 bad signature, …
ACCESS_TOKEN_ERRORS = range(20100, 20200)


class Agent(BaseModel):
    """The caller, as Twilio vouches for them."""

    worker_sid: str
    identity: str | None = None
    roles: list[str] = Field(default_factory=list)
    expires_at: float | None = None

    @property
    def is_supervisor(self) -> bool:
        return SUPERVISOR_ROLE in self.roles


class InvalidToken(Exception):
    """The token is missing, forged, malformed or expired (→ 401); the message says which, never the token."""


class TokenServiceUnavailable(Exception):
    """Twilio could not tell us whether the token is valid (→ 503)."""


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _parse_expiration(value: object) -> float | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _refusal_of_token_or_raise(status: int, body: dict) -> None:
    """A 4xx from token validation: return if it says the token is invalid, else raise TokenServiceUnavailable.

    Whether IAM ever answers an invalid token with a 4xx is unverified (twilio-flex-token-validator reads only
    `valid`); if it does, the body is either the validate body (`valid: false`) or Twilio's error body with an
    access-token code (201xx, twilio.com/docs/api/errors/20101). Any other 4xx — 20003 for our own credentials, 20404
    for a wrong account, 429 — says nothing about the agent's token, so the agent is not told it is invalid.
    """
    code = body.get("code")
    if body.get("valid") is False or (isinstance(code, int) and code in ACCESS_TOKEN_ERRORS):
        return
    log.warning("Twilio token validation refused the gateway's request: HTTP %s, code %s", status, code)
    hint = " (check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN or TWILIO_API_KEY/SECRET)" if status in (401, 403) else ""
    raise TokenServiceUnavailable(f"Twilio token validation answered HTTP {status}, code {code}{hint}")


class TokenValidator:
    """Validates Flex tokens through Twilio; one pooled HTTP client, a bounded LRU cache of valid answers."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        auth: tuple[str, str],
        max_entries: int = 1024,
        clock: Callable[[], float] = time.time,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._http = http
        # Per call, not left to the shared client's default: an agent's request waits on this answer, and a Twilio
        # that never answers must become a 503 after TWILIO_TIMEOUT_S, however the client was built.
        self._timeout_s = timeout_s
        self._url = url
        self._auth = auth
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[str, Agent] = OrderedDict()
        # One Twilio call per token at a time: concurrent requests with the same new token share it.
        self._inflight: dict[str, asyncio.Future[Agent]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> TokenValidator:
        account_sid = settings.twilio_account_sid or ""
        if settings.twilio_api_key and settings.twilio_api_secret:
            auth = (settings.twilio_api_key, settings.twilio_api_secret.get_secret_value())
        else:
            auth = (account_sid, settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else "")
        url = rebase_url(VALIDATE_URL.format(account_sid=account_sid), settings.twilio_api_base_url)
        return cls(http, url, auth, max_entries=settings.flexsf_token_cache_size, timeout_s=settings.twilio_timeout_s)

    async def validate(self, token: str) -> Agent:
        key = token_key(token)
        cached = self._cached(key)
        if cached is not None:
            return cached
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Agent] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            agent = await self._ask_twilio(token, key)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(agent)
            self._remember(key, agent)
            return agent
        finally:
            del self._inflight[key]

    def _cached(self, key: str) -> Agent | None:
        agent = self._cache.get(key)
        if agent is None:
            return None
        if agent.expires_at is None or agent.expires_at <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return agent

    def _remember(self, key: str, agent: Agent) -> None:
        if agent.expires_at is None or agent.expires_at <= self._clock():
            return  # no usable expiration: ask Twilio every time rather than guess
        self._cache[key] = agent
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    async def _ask_twilio(self, token: str, key: str) -> Agent:
        try:
            response = await self._http.post(self._url, json={"token": token}, auth=self._auth, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            log.warning("Twilio token validation is unreachable: %s", type(exc).__name__)
            raise TokenServiceUnavailable(f"Twilio token validation is unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if not (200 <= status < 300 or 400 <= status < 500):
            log.warning("Twilio token validation answered HTTP %s", status)
            raise TokenServiceUnavailable(f"Twilio token validation answered HTTP {status}")
        try:
            body = response.json()
        except ValueError:
            raise TokenServiceUnavailable(
                f"Twilio token validation answered HTTP {status} with something other than JSON"
            ) from None
        if not isinstance(body, dict):
            raise TokenServiceUnavailable(f"Twilio token validation answered HTTP {status} with an unexpected body")
        if status >= 400:
            _refusal_of_token_or_raise(status, body)
        if body.get("valid") is not True:
            reason = body.get("message") if isinstance(body.get("message"), str) else None
            log.info("rejected a Flex token (key %s…): %s", key[:12], reason or "not valid")
            raise InvalidToken(reason or "the Flex token is not valid")
        worker_sid = body.get("worker_sid")
        if not isinstance(worker_sid, str) or not worker_sid:
            raise InvalidToken("the Flex token does not belong to a TaskRouter worker")
        roles = body.get("roles")
        return Agent(
            worker_sid=worker_sid,
            identity=body.get("identity") if isinstance(body.get("identity"), str) else None,
            roles=[r for r in roles if isinstance(r, str)] if isinstance(roles, list) else [],
            expires_at=_parse_expiration(body.get("expiration")),
        )
