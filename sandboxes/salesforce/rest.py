"""Request routing for everything a Salesforce client sees: OAuth, `/services/data/…` REST and errors.

Kept free of socket code so the pipeline (latency → 503 fault → auth → API limit → handler →
commit-then-drop) reads in one place; `server.py` only moves bytes.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from sandboxes.salesforce.errors import ApiError, not_found
from sandboxes.salesforce.faults import Counters, Faults
from sandboxes.salesforce.oauth import OAuth, OAuthError
from sandboxes.salesforce.records import Org, render, sobject_url
from sandboxes.salesforce.schema import describe
from sandboxes.salesforce.soql import run_query
from sandboxes.salesforce.sosl import run_parameterized, run_search

# Salesforce Help, "Salesforce Platform API Versions 21.0 through 30.0 Retirement" (enforced from Summer '25).
MIN_API_VERSION = 31.0
# REST API Developer Guide, "Insert or Update (Upsert) a Record Using an External ID": from 46.0 an upsert answers
# `created` in its body and an update 200; before, an update answers 204 with no body.
UPSERT_RESULT_VERSION = 46.0
_VERSION_RE = re.compile(r"^v(\d{2,3}\.\d)$")
_WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}
_OTHER_LIMITS = {
    "DailyAsyncApexExecutions": {"Max": 250000, "Remaining": 250000},
    "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
    "DataStorageMB": {"Max": 1024, "Remaining": 1000},
    "FileStorageMB": {"Max": 2048, "Remaining": 2048},
}
UNAVAILABLE = ApiError(503, "SERVER_UNAVAILABLE", "Server is temporarily unavailable. Please try again later.")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise ApiError(400, "JSON_PARSER_ERROR", "Unexpected character in request body: not valid JSON") from None


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop_connection: bool = False  # the write is committed; the client gets no response at all


class RestApi:
    def __init__(self, org: Org, oauth: OAuth, faults: Faults, counters: Counters) -> None:
        self.org = org
        self.oauth = oauth
        self.faults = faults
        self.counters = counters

    # ---- OAuth -------------------------------------------------------------------------------
    def token(self, req: Request) -> Response:
        self.counters.inc("oauth_token")
        if req.method != "POST":
            return Response(405, {"error": "invalid_request", "error_description": "must use HTTP POST"})
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        try:
            grant, body = self.oauth.token(form, _basic_auth(req.headers.get("authorization")))
        except OAuthError as exc:
            self.counters.inc("login_failed")
            return Response(exc.status, exc.body())
        self.counters.inc("logins")
        self.counters.inc(f"login:{_GRANT_NAMES.get(grant, grant)}")
        return Response(200, body)

    def revoke(self, req: Request) -> Response:
        self.counters.inc("oauth_revoke")
        form = parse_qs(req.body.decode("utf-8", "replace")) if req.body else req.query
        token = (form.get("token") or [""])[0]
        self.oauth.revoke(token)
        return Response(200, None)

    # ---- /services/data ----------------------------------------------------------------------
    def data(self, req: Request) -> Response:
        parts = [unquote(p) for p in req.path.split("/")[3:] if p]  # after /services/data/
        if not parts:
            return Response(
                200,
                [
                    {"label": "Sandbox", "url": f"/services/data/v{v}", "version": v}
                    for v in ("58.0", "59.0", "60.0", "61.0", "62.0")
                ],
            )
        m = _VERSION_RE.match(parts[0])
        if not m or float(m.group(1)) < MIN_API_VERSION:
            return self._error(not_found())
        version = m.group(1)
        if self.faults.take_unavailable():
            self.counters.inc("fault_503")
            return self._error(UNAVAILABLE)
        session = self.oauth.session_for(req.headers.get("authorization"))
        if session is None:
            self.counters.inc("unauthorized")
            return self._error(ApiError(401, "INVALID_SESSION_ID", "Session expired or invalid"))
        if self.faults.take_session_call():
            self.oauth.revoke()
        if self.faults.limit_forced() or not self.counters.take_api_call():
            self.counters.inc("limit_exceeded")
            return self._error(ApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
        try:
            response = self._route(req, parts[1:], version, session.user_id)
        except ApiError as exc:
            return self._error(exc)
        response.headers["Sforce-Limit-Info"] = self.counters.limit_info()
        if req.method in _WRITE_METHODS and response.status < 300 and self.faults.take_drop():
            self.counters.inc("dropped_after_commit")
            response.drop_connection = True
        return response

    def _error(self, exc: ApiError) -> Response:
        self.counters.inc(f"error:{exc.code}")
        return Response(exc.status, exc.body(), {"Sforce-Limit-Info": self.counters.limit_info()})

    def _route(self, req: Request, parts: list[str], version: str, user_id: str) -> Response:
        method = req.method
        head = parts[0] if parts else ""
        if not parts and method == "GET":
            base = f"/services/data/v{version}"
            return Response(
                200,
                {
                    name: f"{base}/{name}"
                    for name in ("sobjects", "query", "queryAll", "search", "parameterizedSearch", "limits")
                },
            )
        if head in ("query", "queryAll") and len(parts) == 1 and method == "GET":
            self.counters.inc(head if head == "query" else "query_all")
            q = req.param("q")
            if not q:
                raise ApiError(400, "MALFORMED_QUERY", "The query string is missing: use ?q=SELECT …")
            return Response(200, run_query(self.org, q, version, include_deleted=head == "queryAll"))
        if head == "search" and len(parts) == 1 and method == "GET":
            self.counters.inc("search")
            q = req.param("q")
            if not q:
                raise ApiError(400, "MALFORMED_SEARCH", "The search string is missing: use ?q=FIND {…}")
            return Response(200, run_search(self.org, q, version))
        if head == "parameterizedSearch" and len(parts) == 1 and method in ("GET", "POST"):
            self.counters.inc("parameterized_search")
            try:
                params = req.json() if method == "POST" else _parameterized_from_query(req.query)
            except ValueError as exc:
                raise ApiError(400, "MALFORMED_SEARCH", f"invalid parameter: {exc}") from None
            if not isinstance(params, dict):
                raise ApiError(400, "JSON_PARSER_ERROR", "the request body must be a JSON object")
            return Response(200, run_parameterized(self.org, params, version))
        if head == "limits" and len(parts) == 1 and method == "GET":
            # Counted against the limit like any call (done above): the Limit Info Header page of the REST API
            # Developer Guide names only the Versions URI as not counting; unverified beyond that, so strict.
            self.counters.inc("limits")
            used, limit = self.counters.usage()
            # The real answer lists dozens of limits, each {Max, Remaining}; a few fixed ones stand for the rest.
            return Response(
                200, {"DailyApiRequests": {"Max": limit, "Remaining": max(limit - used, 0)}, **_OTHER_LIMITS}
            )
        if head == "sobjects":
            return self._sobjects(req, parts[1:], version, user_id)
        raise not_found()

    def _sobjects(self, req: Request, parts: list[str], version: str, user_id: str) -> Response:
        method = req.method
        if not parts:
            self.counters.inc("describe_global")
            return Response(
                200,
                {
                    "encoding": "UTF-8",
                    "maxBatchSize": 200,
                    "sobjects": [
                        {
                            "name": o.name,
                            "label": o.name,
                            "keyPrefix": o.key_prefix,
                            "queryable": True,
                            "searchable": True,
                            "urls": {"sobject": f"/services/data/v{version}/sobjects/{o.name}"},
                        }
                        for o in self.org.schema.values()
                    ],
                },
            )
        obj = self.org.sobject(parts[0])
        if obj is None:
            raise not_found()
        name = obj.name
        org = self.org
        if len(parts) == 1:
            if method == "POST":
                self.counters.inc(f"sobject_create:{name}")
                body = _object_body(req)
                with org.store.lock:
                    record = org.create(obj, body, user_id)
                return Response(201, {"id": record["Id"], "success": True, "errors": []})
            if method == "GET":
                self.counters.inc(f"sobject_info:{name}")
                return Response(
                    200,
                    {"objectDescribe": {k: v for k, v in describe(obj).items() if k != "fields"}, "recentItems": []},
                )
            raise _method_not_allowed(method)
        if len(parts) == 2 and parts[1] == "describe" and method == "GET":
            self.counters.inc(f"sobject_describe:{name}")
            return Response(200, describe(obj))
        if len(parts) == 2:
            raw_id = parts[1]
            if method == "GET":
                self.counters.inc(f"sobject_get:{name}")
                with org.store.lock:
                    record = org.get_live(obj, raw_id)
                    return Response(200, render(obj, record, version, _field_list(obj, req.param("fields"))))
            if method == "PATCH":
                self.counters.inc(f"sobject_update:{name}")
                body = _object_body(req)
                with org.store.lock:
                    org.update(obj, org.get_live(obj, raw_id), body, user_id)
                return Response(204)
            if method == "DELETE":
                self.counters.inc(f"sobject_delete:{name}")
                with org.store.lock:
                    org.delete(obj, org.get_live(obj, raw_id), user_id)
                return Response(204)
            raise _method_not_allowed(method)
        if len(parts) == 3:
            field_name, value = parts[1], parts[2]
            if method == "PATCH":
                self.counters.inc(f"sobject_upsert:{name}")
                body = _object_body(req)
                with org.store.lock:
                    outcome, result = org.upsert(obj, field_name, value, body, user_id)
                if outcome == "multiple":
                    assert isinstance(result, list)
                    return Response(300, [sobject_url(version, name, r["Id"]) for r in result])
                assert isinstance(result, dict)
                created = outcome == "created"
                if float(version) < UPSERT_RESULT_VERSION:
                    return (
                        Response(201, {"id": result["Id"], "success": True, "errors": []}) if created else Response(204)
                    )
                return Response(
                    201 if created else 200, {"id": result["Id"], "success": True, "errors": [], "created": created}
                )
            if method == "GET":
                self.counters.inc(f"sobject_get_by_external_id:{name}")
                with org.store.lock:
                    f = org.external_id_field(obj, field_name)
                    found = org.find_by_field(obj, f, value)
                    if not found:
                        raise not_found()
                    if len(found) > 1:
                        return Response(300, [sobject_url(version, name, r["Id"]) for r in found])
                    return Response(200, render(obj, found[0], version, _field_list(obj, req.param("fields"))))
            raise _method_not_allowed(method)
        raise not_found()


_GRANT_NAMES = {"urn:ietf:params:oauth:grant-type:jwt-bearer": "jwt_bearer"}


def _method_not_allowed(method: str) -> ApiError:
    return ApiError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET,PATCH,DELETE")


def _object_body(req: Request) -> dict[str, Any]:
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of SObject from a non-object")
    return body


def _field_list(obj: Any, raw: str | None) -> list[str] | None:
    if not raw:
        return None
    names = []
    for name in raw.split(","):
        f = obj.field(name.strip())
        if f is None:
            raise ApiError(400, "INVALID_FIELD", f"No such column '{name.strip()}' on sobject of type {obj.name}")
        names.append(f.name)
    return names


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
    except ValueError:
        return None
    return unquote(user), unquote(secret)


def _parameterized_from_query(query: dict[str, list[str]]) -> dict[str, Any]:
    """GET form: `q`, `in`, `fields`, `sobject` (repeatable), `Obj.fields`, `Obj.limit`, `overallLimit`,
    `defaultLimit`."""

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    params: dict[str, Any] = {"q": one("q"), "in": one("in")}
    if one("fields"):
        params["fields"] = one("fields").split(",")  # type: ignore[union-attr]
    for name in ("overallLimit", "defaultLimit"):
        if one(name):
            params[name] = int(one(name))  # type: ignore[arg-type]
    sobjects = []
    for name in query.get("sobject", []):
        spec: dict[str, Any] = {"name": name}
        if one(f"{name}.fields"):
            spec["fields"] = one(f"{name}.fields").split(",")  # type: ignore[union-attr]
        if one(f"{name}.limit"):
            spec["limit"] = int(one(f"{name}.limit"))  # type: ignore[arg-type]
        sobjects.append(spec)
    if sobjects:
        params["sobjects"] = sobjects
    return params
