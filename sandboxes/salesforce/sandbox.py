"""`SalesforceSandbox`: the whole emulator, startable in-process (tests, demo) or from the CLI."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from flexsf.salesforce_client import SalesforceCredentials
from sandboxes.http_common import timed
from sandboxes.salesforce import control, demo, server
from sandboxes.salesforce.clock import Clock
from sandboxes.salesforce.errors import ApiError, not_found
from sandboxes.salesforce.faults import Counters, Faults, FaultSettings
from sandboxes.salesforce.oauth import OAuth, OAuthConfig
from sandboxes.salesforce.records import Org, render
from sandboxes.salesforce.rest import Request, Response, RestApi
from sandboxes.salesforce.schema import DEFAULT_CUSTOM_FIELDS, CustomField, build_schema
from sandboxes.salesforce.server import SandboxHTTPServer
from sandboxes.salesforce.store import Store

log = logging.getLogger("flexsf.sandbox.salesforce")

DEFAULT_API_VERSION = "62.0"
DEFAULT_CLIENT_ID = "3MVG9flexsf.sandbox.client"
DEFAULT_USERNAME = "integration@flexsf-sandbox.example.com"
# What answers while an org is down for maintenance is a web page, not an OAuth error (the page's wording is not
# verified; what matters is that it is HTML with a 503, so a client that expects JSON finds none).
MAINTENANCE_PAGE = (
    "<!DOCTYPE html><html><head><title>Down for maintenance</title></head>"
    "<body><h1>Salesforce is down for maintenance</h1><p>Please try again later.</p></body></html>"
)
# The refusal Salesforce gives a write while another transaction holds the record (the `lock_row_next` fault).
UNABLE_TO_LOCK_ROW = ApiError(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", [])
LOCKABLE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


class Page(str):
    """A response body written as is (HTML) instead of as JSON."""


class _Handler(server._Handler):
    def _write(self, response: Response) -> None:
        if not isinstance(response.body, Page):
            super()._write(response)
            return
        payload = response.body.encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "text/html;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class SalesforceSandbox:
    """A small Salesforce org on `https://127.0.0.1:PORT` with its own throw-away CA.

    with SalesforceSandbox() as sandbox:
        sf = connect(sandbox.credentials())
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        state: str = ":memory:",
        seed_demo: bool = True,
        token_lifetime_s: float = 7200,
        daily_limit: int = 100_000,
        custom_fields: tuple[CustomField, ...] | list[CustomField] = DEFAULT_CUSTOM_FIELDS,
        api_version: str = DEFAULT_API_VERSION,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str | None = None,
        username: str = DEFAULT_USERNAME,
        password: str | None = None,
        jwt_private_key_file: str | None = None,
        jwt_certificate_file: str | None = None,
        admin_secret: str | None = None,
        faults: FaultSettings | None = None,
        workdir: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_version = api_version
        self.admin_secret = admin_secret
        self.clock = Clock()
        self.faults = Faults(faults)
        self._counters = Counters(daily_limit)
        self._daily_limit = daily_limit
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="flexsf-salesforce-sandbox-"))
        self.workdir.mkdir(parents=True, exist_ok=True)

        self.store = Store(state)
        self.org = Org(build_schema(tuple(custom_fields)), self.store, self.clock)
        fresh = self.store.is_empty()
        self.org.integration_user_id = demo.ensure_integration_user(self.org, username)
        if seed_demo and fresh:
            demo.seed(self.org)

        self.private_key_file, public_key = self._jwt_keys(jwt_private_key_file, jwt_certificate_file)
        self._oauth_config = OAuthConfig(
            client_id=client_id,
            client_secret=client_secret or secrets.token_hex(24),
            username=username,
            password=password or secrets.token_urlsafe(18),
            jwt_public_key=public_key,
            token_lifetime_s=token_lifetime_s,
            org_id=demo.ORG_ID,
        )
        self.oauth = OAuth(self._oauth_config, self.clock, self.org.integration_user_id, self.faults)
        self.api = RestApi(self.org, self.oauth, self.faults, self._counters)
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._on_request = None
        self.info: dict[str, Any] = {}

    # ---- life cycle --------------------------------------------------------------------------
    def start(self) -> SalesforceSandbox:
        ca = trustme.CA(organization_name="flexsf Salesforce sandbox")
        ca_path = self.workdir / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._server = SandboxHTTPServer((self.host, self.port), context, self._dispatch)
        self._server.RequestHandlerClass = _Handler  # the server module writes JSON only; a fault writes HTML
        self.port = self._server.server_address[1]
        url = f"https://{self.host}:{self.port}"
        self.oauth.base_url = url
        cfg = self._oauth_config
        self.info = {
            "url": url,
            "instance_url": url,
            "login_url": url,
            "token_url": f"{url}/services/oauth2/token",
            "ca_bundle": str(ca_path),
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret,
            "username": cfg.username,
            "password": cfg.password,
            "private_key_file": self.private_key_file,
            "api_version": self.api_version,
            "control_url": f"{url}{control.PREFIX}",
            "org_id": demo.ORG_ID,
            "user_id": self.org.integration_user_id,
            "daily_limit": self._counters.daily_limit,
        }
        # The listening socket exists once the server is constructed; serve_forever accepts from it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="salesforce-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all_connections()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.store.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SalesforceSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- in-process control (the same as /__sandbox__) -----------------------------------------
    def counters(self) -> dict[str, int]:
        return self._counters.snapshot()

    def reset(self) -> None:
        """Faults off; counters, API usage, daily limit and clock back to their start. Data and tokens stay."""
        self.faults.reset()
        self._counters.reset()
        self.set_daily_limit(self._daily_limit)
        self.clock.reset()

    def time_requests(self, hook) -> None:
        """Benchmarks: `hook(request, response, started_wall_s, handler_s)` after every request (time inside the
        sandbox's handler, injected latency included; not TLS or HTTP parsing); None turns it off."""
        self._on_request = hook

    def revoke_tokens(self, token: str | None = None) -> int:
        return self.oauth.revoke(token)

    def expire_sessions(self, after_calls: int = 0) -> None:
        """Every current token becomes invalid now, or after `after_calls` more authenticated REST calls."""
        if after_calls <= 0:
            self.oauth.revoke()
        else:
            self.faults.set(expire_sessions_after=after_calls)

    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def set_daily_limit(self, limit: int) -> None:
        self._counters.daily_limit = limit
        self.info["daily_limit"] = limit

    def api_usage(self) -> tuple[int, int]:
        """(requests used, daily limit)."""
        return self._counters.usage()

    def set_api_usage(self, used: int) -> None:
        """The org's API requests used in its 24-hour window, as if other clients had spent them (or the window had
        moved on): `set_api_usage(950)` with a daily limit of 1,000 is an org at 95 %. Past the limit every call is
        refused with 403 REQUEST_LIMIT_EXCEEDED; `reset()` puts it back to 0."""
        self._counters.set_api_usage(int(used))

    def records(self, sobject: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        obj = self.org.sobject(sobject)
        if obj is None:
            raise ValueError(f"unknown sobject {sobject}")
        return [render(obj, r, self.api_version) for r in self.store.all(obj.name, include_deleted)]

    def create_record(self, sobject: str, fields: dict[str, Any]) -> str:
        """Tests: a record written as the integration user would through the API, with the same validation."""
        obj = self.org.sobject(sobject)
        if obj is None:
            raise ValueError(f"unknown sobject {sobject}")
        with self.store.lock:
            return self.org.create(obj, fields, self.org.integration_user_id or "")["Id"]

    def delete_record(self, record_id: str) -> None:
        """Tests: someone in the org deletes a record (it goes to the recycle bin: `IsDeleted`, still queryAll-able)."""
        with self.store.lock:
            found = self.store.get(record_id)
            if found is None:
                raise ValueError(f"no record {record_id}")
            self.org.delete(self.org.schema[found[0]], found[1], self.org.integration_user_id or "")

    def set_user_active(self, user_id: str, active: bool) -> None:
        """Tests: an admin deactivates (or reactivates) a user; the API cannot write User here."""
        with self.store.lock:
            found = self.store.get(user_id)
            if found is None or found[0] != "User":
                raise ValueError(f"no user {user_id}")
            now = self.clock.iso()
            self.store.put("User", dict(found[1], IsActive=active, LastModifiedDate=now, SystemModstamp=now))

    def credentials(self, grant: str = "client_credentials") -> SalesforceCredentials:
        """Credentials for `flexsf.salesforce_client`: grant is client_credentials, jwt or password."""
        i = self.info
        common = {
            "token_url": i["token_url"],
            "client_id": i["client_id"],
            "api_version": self.api_version,
            "ca_bundle": i["ca_bundle"],
        }
        if grant == "jwt":
            return SalesforceCredentials(**common, username=i["username"], private_key_file=i["private_key_file"])
        if grant == "password":
            return SalesforceCredentials(
                **common, client_secret=i["client_secret"], username=i["username"], password=i["password"]
            )
        return SalesforceCredentials(**common, client_secret=i["client_secret"])

    # ---- internals -----------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> Response:
        return timed(self._route, req, self._on_request)

    def _route(self, req: Request) -> Response:
        path = req.path
        if path.startswith(control.PREFIX):
            return control.handle(self, req)
        delay = self.faults.delay_s()
        if delay:
            self._counters.inc("delayed_requests")
            self._counters.inc("injected_delay_ms", round(delay * 1000))
            time.sleep(delay)  # injected latency: the point is to hold this request thread
        trimmed = path.rstrip("/")
        if trimmed == "/services/oauth2/token":
            return self._token_fault() or self.api.token(req)
        if trimmed == "/services/oauth2/revoke":
            return self.api.revoke(req)
        if trimmed == "/services/data" or path.startswith("/services/data/"):
            return self._lock_row_fault(req) or self.api.data(req)
        return Response(404, not_found().body())

    def _lock_row_fault(self, req: Request) -> Response | None:
        """An authenticated record write refused as if another transaction held the record; anything else (a read,
        a search, a caller without a session) goes on to the API unchanged and counts nothing."""
        if req.method not in LOCKABLE_METHODS or "/sobjects/" not in req.path:
            return None
        if self.oauth.session_for(req.headers.get("authorization")) is None or not self.faults.take_lock_row():
            return None
        self._counters.inc("fault_lock_row")
        return Response(400, UNABLE_TO_LOCK_ROW.body(), {"Sforce-Limit-Info": self._counters.limit_info()})

    def _token_fault(self) -> Response | None:
        fault = self.faults.take_token_fault()
        if fault == "unavailable":
            self._counters.inc("token_fault_503")
            return Response(503, Page(MAINTENANCE_PAGE))
        if fault == "rate_limited":
            # Shape unverified: Salesforce documents a per-user login rate limit (Help 000381578, 3,600 an hour)
            # but not the token endpoint's answer to it; a client must not need more than the status.
            self._counters.inc("token_fault_429")
            return Response(429, {"error": "rate_limit_exceeded", "error_description": "too many login attempts"})
        if fault == "drop":
            self._counters.inc("token_dropped")
            return Response(503, None, drop_connection=True)
        return None

    def _jwt_keys(self, private_file: str | None, certificate_file: str | None) -> tuple[str | None, Any]:
        if certificate_file:
            data = Path(certificate_file).read_bytes()
            try:
                public = x509.load_pem_x509_certificate(data).public_key()
            except ValueError:
                public = serialization.load_pem_public_key(data)
            return private_file, public
        if private_file:
            key = serialization.load_pem_private_key(Path(private_file).read_bytes(), password=None)
            return private_file, key.public_key()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path = self.workdir / "jwt_private_key.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        os.chmod(path, 0o600)
        return str(path), key.public_key()
