"""Obtain a Salesforce access token from a configurable token URL and build a simple-salesforce client.

simple-salesforce's own login helpers only talk to `*.salesforce.com`; fetching the token ourselves
lets the same code reach a My Domain, a sandbox org or the local emulator. In session-id mode
simple-salesforce never refreshes: callers re-run `fetch_token` on `SalesforceExpiredSession`.

A failed login is one of two kinds: `SalesforceLoginUnavailable` (the endpoint is down, busy or answered something
that is not OAuth: try again later) or `SalesforceAuthError` (the endpoint refused the credentials: a setting to
fix, named in `settings`). Connection errors and timeouts stay `requests` exceptions.

Every call through `make_session` gives up after a timeout (`SalesforceCredentials.timeout_s`, set by
SALESFORCE_TIMEOUT_S): simple-salesforce passes none, and requests' default is to wait forever.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce

from flexsf.tls import SharedContextAdapter, client_context

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_CREDENTIALS_GRANT = "client_credentials"
# Salesforce Help 000886201: the client-credentials flow does not work on these hosts, only on the org's My Domain
# (simple-salesforce 1.12.10 `login.py` takes its client-credentials branch only for a domain not in
# ('login', 'test'), and otherwise raises SalesforceAuthenticationFailed('INVALID AUTH', …)).
LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
MY_DOMAIN_TOKEN_URL_EXAMPLE = "https://<mydomain>.my.salesforce.com/services/oauth2/token"
# Salesforce accepts assertions valid for at most a few minutes.
_JWT_LIFETIME_S = 180
# (connect, read): well inside the start-to-close timeouts of the activities that log in.
_TOKEN_TIMEOUT_S = (5, 10)
# For connecting and for each wait on the answer (requests' meaning of one number). The steps that call Salesforce
# have 20-30 s each (workflows/policies.py) and some make two or three calls, so one hung call must end well inside
# that; a slow SOSL search or upsert answers within a few seconds.
DEFAULT_TIMEOUT_S = 10.0
# Worth another try later: the endpoint is down or busy, not refusing these credentials. 408/425/429 and 5xx by
# status; `rate_limit_exceeded` by OAuth error code (Salesforce's per-user login rate limit, Help 000381578).
_TRANSIENT_STATUS = frozenset({408, 425, 429})
_TRANSIENT_ERRORS = frozenset({"rate_limit_exceeded", "server_error", "temporarily_unavailable"})


def grant_type_for(*, username: object, private_key_file: object, client_secret: object, password: object) -> str:
    """The flow a set of credentials selects: JWT bearer, then client credentials, then username-password."""
    if private_key_file and username:
        return JWT_BEARER_GRANT
    if client_secret and not password:
        return CLIENT_CREDENTIALS_GRANT
    return "password"


def login_host_refusal(token_url: str, grant: str) -> str | None:
    """Why `grant` cannot work at `token_url` (one line naming the fix), or None."""
    host = (urlsplit(token_url).hostname or "").lower().rstrip(".")
    if grant == CLIENT_CREDENTIALS_GRANT and host in LOGIN_HOSTS:
        return (
            f"SALESFORCE_TOKEN_URL is {host}, where the client-credentials flow does not work: "
            f"use your My Domain URL, e.g. {MY_DOMAIN_TOKEN_URL_EXAMPLE}"
        )
    return None


@dataclass(frozen=True)
class SalesforceCredentials:
    token_url: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    private_key_file: str | None = None
    api_version: str = "62.0"
    ca_bundle: str | None = None
    jwt_audience: str | None = None  # default: see `login_url`
    timeout_s: float = DEFAULT_TIMEOUT_S  # every REST call after login (see `make_session`)

    @property
    def grant_type(self) -> str:
        return grant_type_for(
            username=self.username,
            private_key_file=self.private_key_file,
            client_secret=self.client_secret,
            password=self.password,
        )

    @property
    def login_url(self) -> str:
        """The JWT audience. Salesforce wants login.salesforce.com (test.salesforce.com for sandbox
        orgs) even when tokens come from a My Domain; other hosts (the local emulator) get their origin."""
        if self.jwt_audience:
            return self.jwt_audience
        parts = urlsplit(self.token_url)
        host = (parts.hostname or "").lower()
        if host.endswith(".salesforce.com") or host.endswith(".force.com"):
            sandbox_org = host.startswith("test.") or ".sandbox." in host
            return "https://test.salesforce.com" if sandbox_org else "https://login.salesforce.com"
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class Token:
    access_token: str = field(repr=False)
    instance_url: str
    issued_at: int


class SalesforceLoginError(Exception):
    """A login that did not give a token."""


class SalesforceAuthError(SalesforceLoginError):
    """The token endpoint refused the credentials (OAuth `error` / `error_description`); retrying will not help.

    `settings` names the settings to check, when the answer points at some; the message names them too.
    """

    def __init__(
        self,
        error: str,
        error_description: str,
        status: int | None = None,
        settings: tuple[str, ...] = (),
        hint: str = "",
    ) -> None:
        fix = f"; check {', '.join(settings)}" if settings else ""
        super().__init__(f"{error}: {error_description}{fix}{f' ({hint})' if hint else ''}")
        self.error = error
        self.error_description = error_description
        self.status = status
        self.settings = settings
        self.hint = hint


class SalesforceLoginUnavailable(SalesforceLoginError):
    """The token endpoint is down, busy or answered something that is not OAuth: a later login may work."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class TimeoutSession(requests.Session):
    """A session whose calls give up after `timeout` unless the caller passes its own.

    simple-salesforce never passes one, and without it a socket that stops answering holds the calling activity
    thread indefinitely: Temporal's start-to-close timeout ends the attempt but cannot free the thread, and enough
    of them starve the worker's pool.
    """

    def __init__(self, timeout: float | tuple[float, float]) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method, url, *args, **kwargs):
        if kwargs.get("timeout") is None and len(args) < 7:  # timeout is request()'s 9th positional parameter
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)


def make_session(
    ca_bundle: str | None = None, pool_size: int = 64, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT_S
) -> TimeoutSession:
    """A requests session that trusts `ca_bundle` even when REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE are set, and gives up
    on a call after `timeout` seconds (connect, and each read) when the call names none.

    requests lets those variables override `session.verify` unless `trust_env` is off, which
    also disables proxy settings from the environment.
    """
    session = TimeoutSession(timeout)
    # Retries stay off: a retried write is a duplicate write; callers decide.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if ca_bundle:
        session.trust_env = False
        session.verify = ca_bundle
        session.mount(
            "https://", SharedContextAdapter(client_context(ca_bundle), pool_connections=4, pool_maxsize=pool_size)
        )
    return session


def _assertion(creds: SalesforceCredentials) -> str:
    assert creds.private_key_file and creds.username
    key = Path(creds.private_key_file).read_bytes()
    claims = {
        "iss": creds.client_id,
        "sub": creds.username,
        "aud": creds.login_url,
        "exp": int(time.time()) + _JWT_LIFETIME_S,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="RS256")


_MY_DOMAIN_HINT = f"use your My Domain URL, e.g. {MY_DOMAIN_TOKEN_URL_EXAMPLE}"


def _settings_to_check(creds: SalesforceCredentials, error: str, description: str) -> tuple[str, ...]:
    """Which settings a refusal points at. Salesforce's descriptions are short phrases; these are the ones orgs
    report (`audience is invalid`, `request not supported on this domain`, `authentication failure` …)."""
    grant = creds.grant_type
    described = description.lower()
    if error == "invalid_client_id":
        return ("SALESFORCE_CLIENT_ID",)
    if error == "invalid_client":
        return (
            ("SALESFORCE_CLIENT_ID",)
            if grant == JWT_BEARER_GRANT
            else ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET")
        )
    if error == "unsupported_grant_type":
        return ("SALESFORCE_TOKEN_URL",)
    if error != "invalid_grant":
        return ()
    if "not supported on this domain" in described:
        return ("SALESFORCE_TOKEN_URL",)
    if grant == JWT_BEARER_GRANT:
        if "audience" in described:
            return ("SALESFORCE_JWT_AUDIENCE",)
        return ("SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_JWT_AUDIENCE")
    if grant == CLIENT_CREDENTIALS_GRANT:
        # e.g. "no client credentials user enabled": the connected app's Run As user, or the wrong org.
        return ("SALESFORCE_CLIENT_ID", "SALESFORCE_TOKEN_URL")
    return ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD")


def _redacted(text: str, creds: SalesforceCredentials) -> str:
    for secret in (creds.client_secret, creds.password):
        if secret:
            text = text.replace(secret, "***")
    return text


def _json_object(response: requests.Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def fetch_token(creds: SalesforceCredentials, session: requests.Session) -> Token:
    """Log in: a `Token`, or `SalesforceAuthError` (refused) / `SalesforceLoginUnavailable` (try later);
    connection errors and timeouts are raised as `requests` raises them."""
    grant = creds.grant_type
    refusal = login_host_refusal(creds.token_url, grant)
    if refusal:
        raise SalesforceAuthError("unsupported_host", refusal, settings=("SALESFORCE_TOKEN_URL",))
    auth: tuple[str, str] | None = None
    form: dict[str, str] = {"grant_type": grant}
    if grant == JWT_BEARER_GRANT:
        form["assertion"] = _assertion(creds)
    elif grant == CLIENT_CREDENTIALS_GRANT:
        auth = (creds.client_id, creds.client_secret or "")
    else:
        form.update(
            client_id=creds.client_id,
            client_secret=creds.client_secret or "",
            username=creds.username or "",
            password=creds.password or "",
        )
    response = session.post(creds.token_url, data=form, auth=auth, timeout=_TOKEN_TIMEOUT_S)
    status = response.status_code
    body = _json_object(response)
    if status == 200 and body is not None and body.get("access_token") and body.get("instance_url"):
        return _token(body)
    error = str((body or {}).get("error") or "")
    description = _redacted(str((body or {}).get("error_description") or ""), creds)
    if status >= 500 or status in _TRANSIENT_STATUS or error in _TRANSIENT_ERRORS:
        said = f" ({error}: {description})" if error else " (not JSON)" if body is None else ""
        raise SalesforceLoginUnavailable(f"the token endpoint answered HTTP {status}{said}", status)
    if status == 200:
        # Something between us and Salesforce (a proxy's sign-in page) or a partial answer: not a refusal.
        why = "not JSON" if body is None else "no access_token/instance_url"
        raise SalesforceLoginUnavailable(f"the token endpoint answered HTTP 200 with {why}", status)
    if not error:
        # A 4xx that is not OAuth's: the URL is not a token endpoint (404, 405) or something in front refuses.
        kind = "not JSON" if body is None else "no OAuth error"
        raise SalesforceAuthError(
            f"http_{status}", f"the token URL answered HTTP {status} with {kind}", status, ("SALESFORCE_TOKEN_URL",)
        )
    settings = _settings_to_check(creds, error, description)
    hint = _MY_DOMAIN_HINT if "not supported on this domain" in description.lower() else ""
    raise SalesforceAuthError(error, description or "refused", status, settings, hint)


def _token(body: dict) -> Token:
    return Token(
        access_token=body["access_token"],
        instance_url=body["instance_url"],
        issued_at=int(body.get("issued_at") or time.time() * 1000),
    )


def connect(creds: SalesforceCredentials, session: requests.Session | None = None) -> Salesforce:
    session = session or make_session(creds.ca_bundle, timeout=creds.timeout_s)
    token = fetch_token(creds, session)
    return Salesforce(
        instance_url=token.instance_url,
        session_id=token.access_token,
        session=session,
        version=creds.api_version,
    )
