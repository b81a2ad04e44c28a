"""Run-time switchable faults and the per-endpoint call counters.

Both are shared by every request thread, so each keeps its own small lock. Random decisions use
a seeded generator so a given fail rate produces the same sequence after every `reset()`.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

DEFAULT_FAULT_SEED = 1234


@dataclass
class FaultSettings:
    latency_ms: float = 0.0  # added to every Salesforce request (not the control endpoint)
    jitter_ms: float = 0.0  # plus uniform 0..jitter_ms
    fail_rate: float = 0.0  # fraction of REST calls answered 503 SERVER_UNAVAILABLE before doing anything
    fail_next: int = 0  # the next N REST calls answer 503
    limit_exceeded: bool = False  # every REST call answers 403 REQUEST_LIMIT_EXCEEDED
    expire_sessions_after: int | None = None  # after N more authenticated calls, every current token dies
    drop_after_commit: int = 0  # the next N successful writes commit, then the TCP connection is dropped
    # The next N record writes (POST/PATCH/PUT/DELETE under sobjects/) answer 400 UNABLE_TO_LOCK_ROW and change
    # nothing, as when another transaction holds the record: transient, though it comes as a 400.
    lock_row_next: int = 0
    # The token endpoint (POST /services/oauth2/token), whichever grant: the next N requests get, in this order of
    # precedence, a 503 HTML maintenance page, a 429, or a connection dropped without an answer.
    token_unavailable_next: int = 0
    token_rate_limited_next: int = 0
    token_drop_next: int = 0
    # Not faults but org shapes only some real orgs have; `reset()` turns them off like the faults.
    login_host: bool = False  # the token endpoint plays login/test.salesforce.com: client_credentials is refused
    jwt_audience: str | None = None  # the only JWT `aud` accepted; None: the sandbox's URL or login.salesforce.com


_COUNTS = (
    "fail_next",
    "drop_after_commit",
    "lock_row_next",
    "token_unavailable_next",
    "token_rate_limited_next",
    "token_drop_next",
)
# Which token-endpoint fault a `take_token_fault()` answers, by the setting that arms it.
TOKEN_FAULTS = {
    "token_unavailable_next": "unavailable",
    "token_rate_limited_next": "rate_limited",
    "token_drop_next": "drop",
}


def _typed(name: str, value: Any) -> Any:
    """Settings arrive as JSON from the control endpoint too: coerce, and refuse nonsense early."""
    if name == "expire_sessions_after":
        return None if value is None else int(value)
    if name in ("limit_exceeded", "login_host"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if name == "jwt_audience":
        if value is not None and not (isinstance(value, str) and value.startswith(("https://", "http://"))):
            raise ValueError("jwt_audience must be a URL or null")
        return value
    number = int(value) if name in _COUNTS else float(value)
    if number < 0 or (name == "fail_rate" and number > 1):
        raise ValueError(f"{name} out of range: {value}")
    return number


class Faults:
    def __init__(self, settings: FaultSettings | None = None, seed: int = DEFAULT_FAULT_SEED) -> None:
        self._lock = threading.Lock()
        self._initial = settings or FaultSettings()
        self._settings = FaultSettings(**asdict(self._initial))
        self._seed = seed
        self._random = random.Random(seed)

    def set(self, **changes: Any) -> FaultSettings:
        """Change some settings, e.g. `faults.set(fail_rate=0.2, latency_ms=50)`."""
        known = {f.name for f in fields(FaultSettings)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        typed = {name: _typed(name, value) for name, value in changes.items()}
        with self._lock:
            for name, value in typed.items():
                setattr(self._settings, name, value)
            return FaultSettings(**asdict(self._settings))

    def settings(self) -> FaultSettings:
        with self._lock:
            return FaultSettings(**asdict(self._settings))

    def reset(self) -> None:
        """Back to no faults (not to the start-up settings: tests expect a clean slate)."""
        with self._lock:
            self._settings = FaultSettings()
            self._random = random.Random(self._seed)

    def delay_s(self) -> float:
        with self._lock:
            s = self._settings
            if not s.latency_ms and not s.jitter_ms:
                return 0.0
            return (s.latency_ms + self._random.uniform(0, s.jitter_ms)) / 1000

    def take_unavailable(self) -> bool:
        with self._lock:
            s = self._settings
            if s.fail_next > 0:
                s.fail_next -= 1
                return True
            return s.fail_rate > 0 and self._random.random() < s.fail_rate

    def limit_forced(self) -> bool:
        with self._lock:
            return self._settings.limit_exceeded

    def take_session_call(self) -> bool:
        """Count one authenticated call; True when it was the last one before sessions expire."""
        with self._lock:
            s = self._settings
            if s.expire_sessions_after is None:
                return False
            s.expire_sessions_after -= 1
            if s.expire_sessions_after <= 0:
                s.expire_sessions_after = None
                return True
            return False

    def take_token_fault(self) -> str | None:
        """Count one token request against the armed token faults: "unavailable", "rate_limited", "drop" or None."""
        with self._lock:
            for name, fault in TOKEN_FAULTS.items():
                left = getattr(self._settings, name)
                if left > 0:
                    setattr(self._settings, name, left - 1)
                    return fault
            return None

    def take_lock_row(self) -> bool:
        with self._lock:
            if self._settings.lock_row_next > 0:
                self._settings.lock_row_next -= 1
                return True
            return False

    def take_drop(self) -> bool:
        with self._lock:
            if self._settings.drop_after_commit > 0:
                self._settings.drop_after_commit -= 1
                return True
            return False


class Counters:
    """Calls per endpoint (`sobject_create:Task`, `query`, `oauth_token`, …) and the daily API usage."""

    def __init__(self, daily_limit: int) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.daily_limit = daily_limit
        self._api_usage = 0

    def inc(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counts[name] += by

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts, api_usage=self._api_usage)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._api_usage = 0

    def take_api_call(self) -> bool:
        """Count a REST call against the daily limit; False (and not counted) once the limit is reached."""
        with self._lock:
            if self._api_usage >= self.daily_limit:
                return False
            self._api_usage += 1
            return True

    def set_api_usage(self, used: int) -> None:
        """Requests already used in the 24-hour window (tests put the org near or past its limit, then back)."""
        if used < 0:
            raise ValueError(f"api usage out of range: {used}")
        with self._lock:
            self._api_usage = used

    def limit_info(self) -> str:
        with self._lock:
            return f"api-usage={self._api_usage}/{self.daily_limit}"

    def usage(self) -> tuple[int, int]:
        with self._lock:
            return self._api_usage, self.daily_limit
