"""Vendor errors → Temporal failures, in one place.

Retryable: rate limits, 5xx, timeouts, dropped connections — at login as anywhere else. Non-retryable (a typed
failure that stops the step with a clear message): anything that would fail the same way again — validation errors,
missing records, refused credentials (a configuration error naming the setting to fix).
Messages carry Salesforce's / Twilio's error code and text, never a token or secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from simple_salesforce.exceptions import SalesforceError
from temporalio.exceptions import ApplicationError
from twilio.base.exceptions import TwilioException, TwilioRestException

from flexsf import metrics
from flexsf.salesforce_client import SalesforceAuthError, SalesforceLoginUnavailable
from flexsf.vocabulary import (
    NON_RETRYABLE_TYPES,
    SALESFORCE_AUTH,
    SALESFORCE_CONFIGURATION,
    SALESFORCE_NOT_FOUND,
    SALESFORCE_REFUSED,
    SALESFORCE_UNAVAILABLE,
    SALESFORCE_UNREACHABLE,
    SALESFORCE_VALIDATION,
    TWILIO_REQUEST,
    TWILIO_UNAVAILABLE,
    TWILIO_UNREACHABLE,
)

# A lookup of the write points at a record that is gone (deleted, never there, or an owner since deactivated): the
# write stands without that field (activities.salesforce). Where it cannot, it is the validation error it always was.
SALESFORCE_RELATION_GONE = "SalesforceRelationGone"

# Salesforce's errorCode decides before the HTTP status: some 400s are not final, and a 403 can be a rate limit.
# A code not listed here is classed by its status (`_by_status`). Retryable types are those not in
# flexsf.vocabulary.NON_RETRYABLE_TYPES; the workflow's retry policy backs off between attempts.
SALESFORCE_ERROR_CLASSES: dict[str, str] = {
    # 400, yet transient: another transaction (a trigger, a flow, a data load) holds a lock on the record or its
    # parent, and releases it within seconds, so a later attempt succeeds.
    "UNABLE_TO_LOCK_ROW": SALESFORCE_UNAVAILABLE,
    # 503 usually, but the code says it wherever it arrives: maintenance or overload.
    "SERVER_UNAVAILABLE": SALESFORCE_UNAVAILABLE,
    # 403: an API limit (the org's rolling 24-hour allowance, or too many long requests at once); it lifts by itself.
    "REQUEST_LIMIT_EXCEEDED": SALESFORCE_UNAVAILABLE,
    # 401 that the connection's one re-login did not cure (revoked again at once): the next attempt logs in anew.
    "INVALID_SESSION_ID": SALESFORCE_UNAVAILABLE,
    # 400: the record a lookup names was deleted (ENTITY_IS_DELETED), or no such record is visible to this user
    # (INVALID_CROSS_REFERENCE_KEY; `fields` names the lookup), or the owner is an inactive user.
    "ENTITY_IS_DELETED": SALESFORCE_RELATION_GONE,
    "INVALID_CROSS_REFERENCE_KEY": SALESFORCE_RELATION_GONE,
    "INACTIVE_OWNER_OR_USER": SALESFORCE_RELATION_GONE,
}


def _by_status(status: int) -> str:
    if status >= 500 or status == 401:
        return SALESFORCE_UNAVAILABLE
    if status == 404:
        return SALESFORCE_NOT_FOUND
    if status == 403:
        return SALESFORCE_REFUSED
    return SALESFORCE_VALIDATION


def salesforce_error_class(exc: SalesforceError) -> str:
    """The failure type (flexsf.vocabulary) of a Salesforce error answer: by errorCode, else by HTTP status."""
    return SALESFORCE_ERROR_CLASSES.get(salesforce_error_code(exc) or "") or _by_status(exc.status)


def salesforce_errors_of(exc: SalesforceError) -> list[dict]:
    content = exc.content
    return [e for e in content if isinstance(e, dict)] if isinstance(content, list) else []


def salesforce_error_summary(exc: SalesforceError) -> str:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in content)
    return f"HTTP {exc.status}"


def salesforce_error_code(exc: SalesforceError) -> str | None:
    content = exc.content
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0].get("errorCode")
    return None


@contextmanager
def salesforce_errors(step: str) -> Iterator[None]:
    try:
        yield
    except SalesforceAuthError as exc:
        # A refusal that points at settings is theirs to fix; one that does not (an inactive user or org) is the org's.
        kind = SALESFORCE_CONFIGURATION if exc.settings else SALESFORCE_AUTH
        raise ApplicationError(f"{step}: Salesforce refused the login: {exc}", type=kind, non_retryable=True) from None
    except SalesforceLoginUnavailable as exc:
        raise ApplicationError(f"{step}: Salesforce login unavailable: {exc}", type=SALESFORCE_UNAVAILABLE) from None
    except SalesforceError as exc:
        summary = f"{step}: Salesforce answered {exc.status}: {salesforce_error_summary(exc)}"
        kind = salesforce_error_class(exc)
        if kind == SALESFORCE_RELATION_GONE:
            kind = SALESFORCE_VALIDATION
        raise ApplicationError(summary, type=kind, non_retryable=kind in NON_RETRYABLE_TYPES) from None
    except requests.RequestException as exc:
        sent = exc.request
        metrics.salesforce_call(getattr(sent, "url", None) or "", getattr(sent, "method", None) or "", "unreachable")
        raise ApplicationError(
            f"{step}: Salesforce unreachable: {type(exc).__name__}", type=SALESFORCE_UNREACHABLE
        ) from None


def twilio_status(exc: TwilioException) -> tuple[int | None, int | None]:
    """(HTTP status, Twilio error code) of a Twilio failure; (None, None) for one without an answer. List calls raise
    a plain `TwilioException("Unable to fetch page", response)` on any non-200 (twilio/base/page.py), not a
    `TwilioRestException`, so both are read from the response it carries."""
    if isinstance(exc, TwilioRestException):
        return exc.status, exc.code
    response = exc.args[1] if len(exc.args) > 1 else None
    code = None
    try:
        body = json.loads(getattr(response, "text", None) or "")
        code = body.get("code") if isinstance(body, dict) else None
    except (TypeError, ValueError):
        pass
    return getattr(response, "status_code", None), code


@contextmanager
def twilio_errors(step: str) -> Iterator[None]:
    try:
        yield
    except TwilioRestException as exc:
        summary = f"{step}: Twilio answered {exc.status} (code {exc.code}): {exc.msg}"
        if exc.status == 429 or exc.status >= 500:
            raise ApplicationError(summary, type=TWILIO_UNAVAILABLE) from None
        raise ApplicationError(summary, type=TWILIO_REQUEST, non_retryable=True) from None
    except (requests.RequestException, TwilioException) as exc:
        raise ApplicationError(f"{step}: Twilio unreachable: {type(exc).__name__}", type=TWILIO_UNREACHABLE) from None
