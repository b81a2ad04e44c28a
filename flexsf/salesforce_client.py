"""Obtain a Salesforce access token from a configurable token URL and build a simple-salesforce client.

simple-salesforce's own login helpers only talk to `*.salesforce.com`; fetching the token ourselves
lets the same code reach a My Domain, a sandbox org or the local emulator. In session-id mode
simple-salesforce never refreshes: callers re-run `fetch_token` on `SalesforceExpiredSession`.
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
# Salesforce accepts assertions valid for at most a few minutes.
_JWT_LIFETIME_S = 180
_TOKEN_TIMEOUT_S = 30


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

    @property
    def grant_type(self) -> str:
        if self.private_key_file and self.username:
            return JWT_BEARER_GRANT
        if self.client_secret and not self.password:
            return "client_credentials"
        return "password"

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


class SalesforceAuthError(Exception):
    """The token endpoint refused the credentials (OAuth `error` / `error_description`)."""

    def __init__(self, error: str, error_description: str, status: int | None = None) -> None:
        super().__init__(f"{error}: {error_description}")
        self.error = error
        self.error_description = error_description
        self.status = status


def make_session(ca_bundle: str | None = None, pool_size: int = 64) -> requests.Session:
    """A requests session that trusts `ca_bundle` even when REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE are set.

    requests lets those variables override `session.verify` unless `trust_env` is off, which
    also disables proxy settings from the environment.
    """
    session = requests.Session()
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


def fetch_token(creds: SalesforceCredentials, session: requests.Session) -> Token:
    grant = creds.grant_type
    auth: tuple[str, str] | None = None
    form: dict[str, str] = {"grant_type": grant}
    if grant == JWT_BEARER_GRANT:
        form["assertion"] = _assertion(creds)
    elif grant == "client_credentials":
        auth = (creds.client_id, creds.client_secret or "")
    else:
        form.update(
            client_id=creds.client_id,
            client_secret=creds.client_secret or "",
            username=creds.username or "",
            password=creds.password or "",
        )
    response = session.post(creds.token_url, data=form, auth=auth, timeout=_TOKEN_TIMEOUT_S)
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or "access_token" not in body:
        raise SalesforceAuthError(
            str(body.get("error") or f"http_{response.status_code}"),
            str(body.get("error_description") or "token request failed"),
            response.status_code,
        )
    return Token(
        access_token=body["access_token"],
        instance_url=body["instance_url"],
        issued_at=int(body.get("issued_at") or time.time() * 1000),
    )


def connect(creds: SalesforceCredentials, session: requests.Session | None = None) -> Salesforce:
    session = session or make_session(creds.ca_bundle)
    token = fetch_token(creds, session)
    return Salesforce(
        instance_url=token.instance_url,
        session_id=token.access_token,
        session=session,
        version=creds.api_version,
    )
