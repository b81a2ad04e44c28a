"""One Salesforce login per token lifetime per worker process, shared by every activity thread."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession

from flexsf import metrics
from flexsf.salesforce_client import (
    SalesforceAuthError,
    SalesforceCredentials,
    SalesforceLoginUnavailable,
    fetch_token,
    make_session,
)

T = TypeVar("T")
_API_USAGE = re.compile(r"(?:^|[^-])api-usage=(?P<used>\d+)/(?P<total>\d+)")
# After a failed login, every activity thread whose retry comes due would try its own: through an outage that spends
# the integration user's login rate limit (Salesforce Help 000381578: 3,600 an hour), and repeated refusals of a
# password can lock the user out. So a worker asks the token endpoint at most once per pause after a failure.
LOGIN_RETRY_AFTER_S = 5.0


class SalesforceConnection:
    def __init__(
        self,
        credentials: SalesforceCredentials,
        session: requests.Session | None = None,
        login_retry_after_s: float = LOGIN_RETRY_AFTER_S,
    ) -> None:
        self._credentials = credentials
        self._session = session or make_session(credentials.ca_bundle, timeout=credentials.timeout_s)
        self._lock = threading.Lock()
        self._client: Salesforce | None = None
        self.login_retry_after_s = login_retry_after_s
        self._failed_login: tuple[float, Exception] | None = None  # (monotonic time, what it raised)
        self.logins = 0
        self.api_usage: tuple[int, int] | None = None
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
            self.api_usage = (int(found["used"]), int(found["total"]))
            metrics.salesforce_api_usage(*self.api_usage)
