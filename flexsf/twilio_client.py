"""Build the `twilio` SDK client the product uses, optionally pointed at another base URL (the sandbox).

twilio-python has no base-URL option: every domain (taskrouter, flex-api, iam) builds absolute
`https://<domain>.twilio.com/...` URLs. So when a base URL is configured we hand the SDK an HTTP client
that swaps scheme and host for that base URL; with no base URL the SDK talks to Twilio unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from flexsf import metrics
from flexsf.settings import ConfigurationError, Settings

DEFAULT_TIMEOUT_S = 10.0
# The SDK is called from a thread pool of activities; one pooled connection per worker thread.
DEFAULT_POOL_SIZE = max(32, (os.cpu_count() or 4) * 4)


def rebase_url(url: str, base_url: str | None) -> str:
    """`https://<anything>.twilio.com/path?q` -> `<base_url>/path?q`; other URLs (and base_url=None) unchanged."""
    if not base_url:
        return url
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not (host == "twilio.com" or host.endswith(".twilio.com")):
        return url
    base = urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, parts.fragment))


def response_header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """One response header, whatever its case: twilio-python 9.x hands `*_with_http_info().headers` over as
    `dict(response.headers)` (twilio/base/version.py, `fetch_with_response_info`), a plain dict keeping the server's
    spelling, and HTTP/2 front ends and proxies spell names in lower case."""
    wanted = name.lower()
    return next((value for key, value in (headers or {}).items() if key.lower() == wanted), None)


class CountingTwilioHttpClient(TwilioHttpClient):
    """A `TwilioHttpClient` that counts every call by product, method and status (`flexsf_twilio_calls_total`)."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        try:
            response = self._send(method, url, *args, **kwargs)
        except requests.RequestException:
            metrics.twilio_call(url, method, "unreachable")
            raise
        metrics.twilio_call(url, method, response.status_code)
        return response

    def _send(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        return super().request(method, url, *args, **kwargs)


class RebasedTwilioHttpClient(CountingTwilioHttpClient):
    """A `TwilioHttpClient` that sends every Twilio API call to `base_url` instead of `*.twilio.com`."""

    def __init__(
        self,
        base_url: str,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        pool_size: int = DEFAULT_POOL_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(pool_connections=True, timeout=timeout, **kwargs)
        self.base_url = base_url.rstrip("/")
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
        assert self.session is not None
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _send(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        return super()._send(method, rebase_url(url, self.base_url), *args, **kwargs)


def build_twilio_client(
    account_sid: str,
    auth_token: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Client:
    """A `twilio.rest.Client` authenticated with an API key (`SK…` + secret, preferred) or the auth token.

    `base_url` (e.g. the sandbox's `http://127.0.0.1:PORT`) replaces every Twilio host; leave it None in
    production.
    """
    if base_url:
        http_client: TwilioHttpClient = RebasedTwilioHttpClient(base_url, timeout=timeout)
    else:
        http_client = CountingTwilioHttpClient(pool_connections=True, timeout=timeout)
    if api_key or api_secret:
        if not (api_key and api_secret):
            raise ValueError("api_key and api_secret go together")
        return Client(api_key, api_secret, account_sid, http_client=http_client)
    if not auth_token:
        raise ValueError("either auth_token or api_key + api_secret is required")
    return Client(account_sid, auth_token, http_client=http_client)


def twilio_client_from(settings: Settings) -> Client:
    """The client every process (worker, gateway, operator commands) builds from the same settings."""
    if not settings.twilio_configured:
        raise ConfigurationError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or an API key) are required")
    return build_twilio_client(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None,
        api_key=settings.twilio_api_key,
        api_secret=settings.twilio_api_secret.get_secret_value() if settings.twilio_api_secret else None,
        base_url=settings.twilio_api_base_url,
        timeout=settings.twilio_timeout_s,
    )


class JsonBody:
    """Wraps a dict for the SDK's JSON-body updates, which call `body.to_dict()`.

    `client.flex_api.v1.configuration().update(body=JsonBody({"account_sid": ..., "ui_attributes": {...}}))`
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_dict(self) -> dict[str, Any]:
        return self._data
