"""One Salesforce login per token lifetime per worker process, shared by every activity thread."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from activities.errors import salesforce_error_class, salesforce_error_code
from flexsf import metrics
from flexsf.salesforce_client import (
    SalesforceAuthError,
    SalesforceCredentials,
    SalesforceLoginUnavailable,
    fetch_token,
    make_session,
)
from flexsf.vocabulary import NON_RETRYABLE_TYPES

T = TypeVar("T")
log = logging.getLogger("flexsf.activities.salesforce_connection")
_API_USAGE = re.compile(r"(?:^|[^-])api-usage=(?P<used>\d+)/(?P<total>\d+)")
# After a failed login, every activity thread whose retry comes due would try its own: through an outage that spends
# the integration user's login rate limit (Salesforce Help 000381578: 3,600 an hour), and repeated refusals of a
# password can lock the user out. So a worker asks the token endpoint at most once per pause after a failure.
LOGIN_RETRY_AFTER_S = 5.0
# How long the org's API usage read from the last response stays good enough to hold a log back on. The usage is a
# rolling 24-hour count that Salesforce itself recalculates asynchronously, so a minute changes little; but a worker
# that holds logs and runs no searches (a quiet night) sees no new responses, and its last reading would hold them
# forever. Past this age a reading over the budget is checked with one GET of the limits resource: at most one call
# a minute per worker, however many logs are waiting.
API_USAGE_FRESH_S = 60.0


class SalesforceConnection:
    def __init__(
        self,
        credentials: SalesforceCredentials,
        session: requests.Session | None = None,
        login_retry_after_s: float = LOGIN_RETRY_AFTER_S,
        usage_fresh_s: float = API_USAGE_FRESH_S,
    ) -> None:
        self._credentials = credentials
        self._session = session or make_session(credentials.ca_bundle, timeout=credentials.timeout_s)
        self._lock = threading.Lock()
        self._client: Salesforce | None = None
        self.login_retry_after_s = login_retry_after_s
        self._failed_login: tuple[float, Exception] | None = None  # (monotonic time, what it raised)
        self.logins = 0
        self.api_usage: tuple[int, int] | None = None  # (used, limit) from the last response this process saw
        self._usage_seen_at: float | None = None  # its monotonic time
        self.usage_fresh_s = usage_fresh_s
        self._usage_refresh = threading.Lock()
        # A response hook sees every call, whichever simple-salesforce object made it.
        self._session.hooks["response"].append(self._note_usage)

    def _login(self) -> Salesforce:
        """Called with the lock held."""
        self._raise_if_pausing()
        try:
            token = fetch_token(self._credentials, self._session)
        except (SalesforceAuthError, SalesforceLoginUnavailable, requests.RequestException) as exc:
            self._failed_login = (time.monotonic(), exc)
            raise
        self._failed_login = None
        self.logins += 1
        return Salesforce(
            instance_url=token.instance_url,
            session_id=token.access_token,
            session=self._session,
            version=self._credentials.api_version,
        )

    def _raise_if_pausing(self) -> None:
        if self._failed_login is None:
            return
        at, failure = self._failed_login
        if time.monotonic() - at >= self.login_retry_after_s:
            return
        if isinstance(failure, SalesforceAuthError):
            raise SalesforceAuthError(
                failure.error, failure.error_description, failure.status, failure.settings, failure.hint
            )
        met = str(failure) if isinstance(failure, SalesforceLoginUnavailable) else type(failure).__name__
        raise SalesforceLoginUnavailable(
            f"the last login met: {met}; the next is tried {self.login_retry_after_s:g}s after it"
        )

    def _current(self) -> Salesforce:
        with self._lock:
            if self._client is None:
                self._client = self._login()
            return self._client

    def _refresh(self, stale: Salesforce) -> Salesforce:
        with self._lock:
            # Several threads may see the same expired session; only the first one logs in again.
            if self._client is stale or self._client is None:
                self._client = self._login()
            return self._client

    def call(self, fn: Callable[[Salesforce], T]) -> T:
        """Run one API call; on INVALID_SESSION_ID log in again once and repeat it."""
        client = self._current()
        try:
            result = fn(client)
        except SalesforceExpiredSession:
            client = self._refresh(client)
            result = fn(client)
        return result

    def _note_usage(self, response: requests.Response, *args, **kwargs) -> None:
        # Runs in the calling (activity) thread, so the call is counted with that activity's labels.
        metrics.salesforce_call(response.request.url or "", response.request.method or "", response.status_code)
        found = _API_USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if found:
            self._set_usage(int(found["used"]), int(found["total"]))

    def _set_usage(self, used: int, limit: int) -> None:
        self.api_usage = (used, limit)
        self._usage_seen_at = time.monotonic()
        metrics.salesforce_api_usage(used, limit)

    def api_usage_age_s(self) -> float | None:
        """Seconds since the last reading of the org's API usage; None before any."""
        return None if self._usage_seen_at is None else time.monotonic() - self._usage_seen_at

    def fresh_api_usage(self, over: Callable[[int, int], bool]) -> tuple[int, int] | None:
        """The org's API usage (used, limit), asked again of Salesforce when the last reading is stale and `over` it
        (a reading under the budget lets the write go, and the write's answer brings a new one); None before any."""
        usage = self.api_usage  # one read: another thread may replace it meanwhile
        if usage is None or not over(*usage) or not self._stale():
            return usage
        with self._usage_refresh:
            if self._stale():  # the first of several waiting threads asks; the others use its answer
                self._refresh_usage()
        return self.api_usage

    def _stale(self) -> bool:
        age = self.api_usage_age_s()
        return age is None or age >= self.usage_fresh_s

    def _refresh_usage(self) -> None:
        # REST API Developer Guide, "Limits" (GET /services/data/vXX.X/limits/): DailyApiRequests {Max, Remaining}.
        asked_at = time.monotonic()
        try:
            limits = self.call(lambda sf: sf.limits())
        except SalesforceError as exc:
            if salesforce_error_code(exc) == "REQUEST_LIMIT_EXCEEDED":
                # Past the limit Salesforce refuses every call, this one too: the org is out of requests for now.
                used, limit = self.api_usage or (0, 0)
                self._set_usage(max(used, limit), limit)
                return
            if self._usage_seen_at is not None and self._usage_seen_at >= asked_at:
                return  # refused (the user may not view setup), but its Sforce-Limit-Info header is a new reading
            if salesforce_error_class(exc) not in NON_RETRYABLE_TYPES:
                raise  # 5xx and the like: the log's attempt fails and is retried
            # Refused for good and no reading with it: rather than hold logs on a stale reading for ever, forget it.
            # The write goes; its answer brings the next reading, and Salesforce itself refuses past the limit.
            log.warning("the limits resource refused (%s); the stale API usage reading is dropped", exc.status)
            self.api_usage = self._usage_seen_at = None
            return
        daily = limits.get("DailyApiRequests") if isinstance(limits, dict) else None
        if isinstance(daily, dict) and isinstance(daily.get("Max"), int) and isinstance(daily.get("Remaining"), int):
            self._set_usage(daily["Max"] - daily["Remaining"], daily["Max"])
