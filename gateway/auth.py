"""Who is calling the agent API: the agent's Flex token, validated by Twilio, and what abusing it costs.

Flex tokens are opaque to us (real ones are JWEs only Twilio can open), so we ask Twilio's token validation endpoint,
as twilio-flex-token-validator does. The answer's body decides, not its status: a 2xx or 4xx saying the token is
invalid is a 401; a 5xx, a timeout, a body that is not JSON, or a 4xx about our own credentials is a 503 (the token
may be fine). Every cache is keyed by a SHA-256 of the token; the token itself is never stored, logged or echoed.

What a token costs Twilio (and our credentials' rate limit), whoever sends it:
- an accepted token is remembered until it expires, but asked about again every `FLEXSF_TOKEN_REVALIDATE_S`, so a
  revoked token stops working within that period; while Twilio cannot answer, the earlier answer holds (until the
  token expires), so a Twilio outage or 429 does not log every agent out;
- a refused token is answered 401 from memory for `FLEXSF_TOKEN_REFUSED_TTL_S` (the same forged token a hundred times
  is one call);
- each client address may fail authentication `FLEXSF_AUTH_FAILURE_LIMIT` times per `FLEXSF_AUTH_FAILURE_WINDOW_S`
  (`AuthFailureLimiter`); past that it is answered 429 with Retry-After and Twilio is not asked, except about a
  token already accepted (an agent behind the same address as an attacker keeps working).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from pydantic import BaseModel, Field

from flexsf.settings import Settings
from flexsf.twilio_client import DEFAULT_TIMEOUT_S, rebase_url
from gateway.sanitize import printable

log = logging.getLogger("flexsf.gateway.auth")

VALIDATE_URL = "https://iam.twilio.com/v1/Accounts/{account_sid}/Tokens/validate"
SUPERVISOR_ROLE = "supervisor"
# Twilio's "Invalid Access Token" family: 20101 invalid, 20104 expired, 20107 bad signature, …
ACCESS_TOKEN_ERRORS = range(20100, 20200)
# How many refused tokens (their hashes) are remembered at most; an older one is simply asked about again.
MAX_REFUSED_ENTRIES = 10_000
# After a failed revalidation (Twilio unreachable), how long the earlier answer holds before Twilio is asked again.
OUTAGE_RETRY_S = 30.0
UNREACHABLE = "Twilio's token validation is unreachable; retry later"
UNAVAILABLE = "Twilio's token validation is unavailable; retry later"


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
    """Twilio could not tell us whether the token is valid (→ 503). The message is for the caller; the details (HTTP
    status, Twilio's code, the exception) are logged where it is raised."""


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
    hint = " (check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN or TWILIO_API_KEY/SECRET)" if status in (401, 403) else ""
    log.warning(
        "Twilio token validation refused the gateway's request: HTTP %s, code %s%s", status, printable(code), hint
    )
    raise TokenServiceUnavailable(UNAVAILABLE)


@dataclass
class _Accepted:
    agent: Agent
    checked_at: float  # when Twilio last said yes (or, after an outage, when to ask again)


class TokenValidator:
    """Validates Flex tokens through Twilio: one pooled HTTP client, bounded LRU caches of accepted and refused
    tokens."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        auth: tuple[str, str],
        max_entries: int = 1024,
        clock: Callable[[], float] = time.time,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        revalidate_s: float = 300.0,
        refused_ttl_s: float = 60.0,
        max_refused: int = MAX_REFUSED_ENTRIES,
    ) -> None:
        self._http = http
        # Per call, not left to the shared client's default: an agent's request waits on this answer, and a Twilio
        # that never answers must become a 503 after TWILIO_TIMEOUT_S, however the client was built.
        self._timeout_s = timeout_s
        self._url = url
        self._auth = auth
        self._max_entries = max_entries
        self._clock = clock
        self._revalidate_s = revalidate_s
        self._refused_ttl_s = refused_ttl_s
        self._max_refused = max_refused
        self._cache: OrderedDict[str, _Accepted] = OrderedDict()
        self._refused: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key → (refused at, Twilio's reason)
        # One Twilio call per token at a time: concurrent requests with the same new token share it.
        self._inflight: dict[str, asyncio.Future[Agent]] = {}
        self.twilio_calls = 0
        self.refused_from_memory = 0

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> TokenValidator:
        account_sid = settings.twilio_account_sid or ""
        if settings.twilio_api_key and settings.twilio_api_secret:
            auth = (settings.twilio_api_key, settings.twilio_api_secret.get_secret_value())
        else:
            auth = (account_sid, settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else "")
        url = rebase_url(VALIDATE_URL.format(account_sid=account_sid), settings.twilio_api_base_url)
        return cls(
            http,
            url,
            auth,
            max_entries=settings.flexsf_token_cache_size,
            timeout_s=settings.twilio_timeout_s,
            revalidate_s=settings.flexsf_token_revalidate_s,
            refused_ttl_s=settings.flexsf_token_refused_ttl_s,
        )

    def known(self, token: str) -> bool:
        """Whether Twilio accepted this token before (and it has not expired): such a token is validated even from
        an address that is answered 429, since asking about it again costs at most one call per period."""
        return self._accepted(token_key(token)) is not None

    async def validate(self, token: str) -> Agent:
        key = token_key(token)
        entry = self._accepted(key)
        if entry is not None and self._clock() - entry.checked_at < self._revalidate_s:
            self._cache.move_to_end(key)
            return entry.agent
        if entry is None and (reason := self._refusal(key)) is not None:
            self.refused_from_memory += 1
            raise InvalidToken(reason)
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Agent] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            agent = await self._ask(token, key, entry)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(agent)
            return agent
        finally:
            del self._inflight[key]

    async def _ask(self, token: str, key: str, earlier: _Accepted | None) -> Agent:
        try:
            agent = await self._ask_twilio(token, key)
        except InvalidToken as exc:
            self._cache.pop(key, None)  # revoked (or expired) since it was accepted: it stops working now
            self._remember_refusal(key, str(exc))
            raise
        except TokenServiceUnavailable:
            if earlier is None or self._accepted(key) is None:
                raise
            # Twilio accepted this token before and cannot answer now: keep that answer until the token expires,
            # asking again in a while rather than on every request.
            earlier.checked_at = self._clock() - self._revalidate_s + min(OUTAGE_RETRY_S, self._revalidate_s)
            log.warning("could not revalidate a Flex token (key %s…); its earlier acceptance holds for now", key[:12])
            return earlier.agent
        self._remember(key, agent)
        return agent

    def _accepted(self, key: str) -> _Accepted | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.agent.expires_at is None or entry.agent.expires_at <= self._clock():
            del self._cache[key]
            return None
        return entry

    def _remember(self, key: str, agent: Agent) -> None:
        self._refused.pop(key, None)
        if agent.expires_at is None or agent.expires_at <= self._clock():
            self._cache.pop(key, None)
            return  # no usable expiration: ask Twilio every time rather than guess
        self._cache[key] = _Accepted(agent, self._clock())
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    def _refusal(self, key: str) -> str | None:
        found = self._refused.get(key)
        if found is None:
            return None
        refused_at, reason = found
        if self._clock() - refused_at >= self._refused_ttl_s:
            del self._refused[key]
            return None
        return reason

    def _remember_refusal(self, key: str, reason: str) -> None:
        if self._refused_ttl_s <= 0:
            return
        self._refused[key] = (self._clock(), reason)
        self._refused.move_to_end(key)
        while len(self._refused) > self._max_refused:
            self._refused.popitem(last=False)

    async def _ask_twilio(self, token: str, key: str) -> Agent:
        self.twilio_calls += 1
        try:
            response = await self._http.post(self._url, json={"token": token}, auth=self._auth, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            log.warning("Twilio token validation is unreachable: %s", type(exc).__name__)
            raise TokenServiceUnavailable(UNREACHABLE) from None
        status = response.status_code
        if not (200 <= status < 300 or 400 <= status < 500):
            log.warning("Twilio token validation answered HTTP %s", status)
            raise TokenServiceUnavailable(UNAVAILABLE)
        try:
            body = response.json()
        except ValueError:
            log.warning("Twilio token validation answered HTTP %s with something other than JSON", status)
            raise TokenServiceUnavailable(UNAVAILABLE) from None
        if not isinstance(body, dict):
            log.warning("Twilio token validation answered HTTP %s with an unexpected body", status)
            raise TokenServiceUnavailable(UNAVAILABLE)
        if status >= 400:
            _refusal_of_token_or_raise(status, body)
        if body.get("valid") is not True:
            message = body.get("message")
            reason = printable(message, 200) if isinstance(message, str) and message.strip() else None
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


class AuthFailureLimiter:
    """Failed authentications per client (`gateway.client_address.limiter_key`) in a sliding window.

    `retry_after(client)` is None while the client may try, else how many seconds to wait. A validation still waiting
    for Twilio counts as a failure until it is answered (`attempt`), so a burst of concurrent forgeries is held to the
    limit too, not only a sequence of them. Memory is bounded: at most `limit` timestamps for each of `max_clients`
    clients (the least recently failing client is forgotten first)."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._pending: dict[str, Counter[str]] = {}  # client → requests in flight per token (hash)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthFailureLimiter:
        return cls(settings.flexsf_auth_failure_limit, settings.flexsf_auth_failure_window_s)

    def _recent(self, client: str) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        horizon = self._clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def retry_after(self, client: str) -> float | None:
        failures = self._recent(client) or ()
        if len(failures) + len(self._pending.get(client, ())) < self.limit:
            return None
        if len(failures) >= self.limit:
            return max(failures[0] + self.window_s - self._clock(), 0.0)
        return 1.0  # validations in flight fill the limit: they are answered within a second or two

    @contextmanager
    def attempt(self, client: str, token_key: str) -> Iterator[None]:
        """Around one validation that may cost a Twilio call: each distinct token being validated counts against the
        client's limit until it is answered (the same token in several requests is one call, so counts once)."""
        pending = self._pending.setdefault(client, Counter())
        pending[token_key] += 1
        try:
            yield
        finally:
            pending[token_key] -= 1
            if not pending[token_key]:
                del pending[token_key]
            if not pending:
                del self._pending[client]

    def failed(self, client: str) -> None:
        failures = self._recent(client)
        if failures is None:
            failures = self._failures[client] = deque(maxlen=self.limit)
        reached = len(failures) == self.limit - 1  # logged once, as the limit is reached
        failures.append(self._clock())
        self._failures.move_to_end(client)
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)
        if reached:
            log.warning(
                "client %s failed authentication %d times within %gs: answering it 429 for up to %gs",
                client,
                self.limit,
                self.window_s,
                math.ceil(self.window_s),
            )
