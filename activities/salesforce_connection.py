"""One Salesforce login per token lifetime per worker process, shared by every activity thread."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession

from flexsf import metrics
from flexsf.salesforce_client import SalesforceCredentials, fetch_token, make_session

T = TypeVar("T")
_API_USAGE = re.compile(r"(?:^|[^-])api-usage=(?P<used>\d+)/(?P<total>\d+)")


class SalesforceConnection:
    def __init__(self, credentials: SalesforceCredentials, session: requests.Session | None = None) -> None:
        self._credentials = credentials
        self._session = session or make_session(credentials.ca_bundle)
        self._lock = threading.Lock()
        self._client: Salesforce | None = None
        self.logins = 0
        self.api_usage: tuple[int, int] | None = None
        # A response hook sees every call, whichever simple-salesforce object made it.
        self._session.hooks["response"].append(self._note_usage)

    def _login(self) -> Salesforce:
        token = fetch_token(self._credentials, self._session)
        self.logins += 1
        return Salesforce(
            instance_url=token.instance_url,
            session_id=token.access_token,
            session=self._session,
            version=self._credentials.api_version,
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
