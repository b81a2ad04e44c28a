"""Every vendor call gives up in time, and a transient Salesforce refusal is retried rather than final.

A hung socket must end as a retryable failure of the step, not pin an activity thread; `UNABLE_TO_LOCK_ROW` comes as
a 400 yet passes within seconds. Outcomes and failure types are asserted, never elapsed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import worker
from activities.activity_fields import ActivityFieldConfig
from activities.errors import salesforce_errors, twilio_errors
from activities.models import SearchRequest
from activities.salesforce import SalesforceActivities
from activities.salesforce_connection import SalesforceConnection
from flexsf.salesforce_client import DEFAULT_TIMEOUT_S, make_session
from flexsf.twilio_client import twilio_client_from
from flexsf.vocabulary import (
    NON_RETRYABLE_TYPES,
    SALESFORCE_NOT_FOUND,
    SALESFORCE_REFUSED,
    SALESFORCE_UNAVAILABLE,
    SALESFORCE_UNREACHABLE,
    SALESFORCE_VALIDATION,
    TWILIO_UNREACHABLE,
)
from gateway.auth import TokenServiceUnavailable, TokenValidator
from sandboxes.salesforce import demo as sf_demo
from tests.fixtures_salesforce import log_request
from tests.fixtures_stack import settings_from

CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
LOCKED = [
    {"message": "unable to obtain exclusive access to this record", "errorCode": "UNABLE_TO_LOCK_ROW", "fields": []}
]


@contextmanager
def silent_server() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog does) and never answers a byte."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def attempt(n: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=n)
    return env


# ---- timeouts ------------------------------------------------------------------------------------------------------


def test_a_salesforce_session_gives_up_on_a_socket_that_never_answers() -> None:
    assert make_session().timeout == DEFAULT_TIMEOUT_S
    with silent_server() as url, pytest.raises(requests.ReadTimeout):
        make_session(timeout=0.2).get(url)  # no timeout named by the caller, as simple-salesforce names none


def test_a_hung_salesforce_call_is_a_retryable_unreachable_failure(clean_salesforce_sandbox) -> None:
    sandbox = clean_salesforce_sandbox
    connection = SalesforceConnection(dataclasses.replace(sandbox.credentials(), timeout_s=0.5))
    connection.call(lambda sf: sf)  # logged in: only the REST call below meets the hang
    salesforce = SalesforceActivities(connection)
    sandbox.faults.set(latency_ms=4_000)

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(salesforce.search_salesforce, SearchRequest(task_sid="WT1", term=CONTACT.phone))

    assert raised.value.type == SALESFORCE_UNREACHABLE and not raised.value.non_retryable
    assert "Timeout" in raised.value.message
    # The sandbox did answer, later: the client gave up first (and the late answer lands before the next test).
    wait_until(lambda: sandbox.counters().get("search") == 1, "the delayed search answered")


def test_the_salesforce_timeout_setting_reaches_the_workers_connection() -> None:
    settings = settings_from(
        {
            "SALESFORCE_CLIENT_ID": "client",
            "SALESFORCE_TOKEN_URL": "https://example.my.salesforce.com/services/oauth2/token",
            "SALESFORCE_TIMEOUT_S": "2.5",
        }
    )
    creds = worker.salesforce_credentials(settings)
    assert creds.timeout_s == 2.5
    assert SalesforceConnection(creds)._session.timeout == 2.5


def twilio_settings(base_url: str, timeout_s: str):
    return settings_from(
        {
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "f" * 32,
            "TWILIO_API_BASE_URL": base_url,
            "TWILIO_TIMEOUT_S": timeout_s,
        }
    )


def test_a_hung_twilio_call_gives_up_after_twilio_timeout_s() -> None:
    with silent_server() as url:
        client = twilio_client_from(twilio_settings(url, "0.2"))
        with pytest.raises(ApplicationError) as raised, twilio_errors("fetch_task"):
            client.taskrouter.v1.workspaces("WS" + "0" * 32).tasks("WT" + "0" * 32).fetch()
    assert raised.value.type == TWILIO_UNREACHABLE and not raised.value.non_retryable


def test_token_validation_gives_up_after_twilio_timeout_s_whatever_the_http_client() -> None:
    async def validate(url: str) -> None:
        async with httpx.AsyncClient(timeout=None) as http:  # a client with no timeout of its own
            await TokenValidator.from_settings(twilio_settings(url, "0.2"), http).validate("a-flex-token")

    with silent_server() as url, pytest.raises(TokenServiceUnavailable, match="unreachable"):
        asyncio.run(validate(url))


# ---- transient refusals --------------------------------------------------------------------------------------------


def refused(cls: type[SalesforceError], status: int, code: str) -> SalesforceError:
    return cls("https://example.my.salesforce.com/services/data/v62.0/x", status, "x", [{"errorCode": code}])


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (refused(SalesforceMalformedRequest, 400, "UNABLE_TO_LOCK_ROW"), SALESFORCE_UNAVAILABLE),
        (refused(SalesforceMalformedRequest, 400, "SERVER_UNAVAILABLE"), SALESFORCE_UNAVAILABLE),
        (refused(SalesforceGeneralError, 503, "SERVER_UNAVAILABLE"), SALESFORCE_UNAVAILABLE),
        (refused(SalesforceRefusedRequest, 403, "REQUEST_LIMIT_EXCEEDED"), SALESFORCE_UNAVAILABLE),
        (refused(SalesforceExpiredSession, 401, "INVALID_SESSION_ID"), SALESFORCE_UNAVAILABLE),
        (refused(SalesforceGeneralError, 500, "UNKNOWN_EXCEPTION"), SALESFORCE_UNAVAILABLE),
        (refused(SalesforceMalformedRequest, 400, "INVALID_FIELD"), SALESFORCE_VALIDATION),
        (refused(SalesforceMalformedRequest, 400, "STRING_TOO_LONG"), SALESFORCE_VALIDATION),
        (refused(SalesforceResourceNotFound, 404, "NOT_FOUND"), SALESFORCE_NOT_FOUND),
        (refused(SalesforceRefusedRequest, 403, "INSUFFICIENT_ACCESS"), SALESFORCE_REFUSED),
    ],
    ids=lambda v: f"{v.status}-{v.content[0]['errorCode']}" if isinstance(v, SalesforceError) else v,
)
def test_salesforce_refusals_are_classed_by_error_code_then_status(error: SalesforceError, kind: str) -> None:
    with pytest.raises(ApplicationError) as raised, salesforce_errors("log_activity"):
        raise error
    assert raised.value.type == kind
    assert raised.value.non_retryable == (kind in NON_RETRYABLE_TYPES)
    assert error.content[0]["errorCode"] in raised.value.message


def test_the_sandbox_refuses_the_next_writes_with_unable_to_lock_row(clean_salesforce_sandbox) -> None:
    sandbox = clean_salesforce_sandbox
    sf = SalesforceConnection(sandbox.credentials())
    sandbox.faults.set(lock_row_next=1)
    sf.call(lambda c: c.query("SELECT Id FROM Contact LIMIT 1"))  # a read passes and leaves the fault armed
    subject = f"locked {uuid.uuid4().hex}"

    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.call(lambda c: c.Task.create({"Subject": subject, "Status": "Completed", "Priority": "Normal"}))
    assert raised.value.status == 400 and raised.value.content == LOCKED
    assert not [t for t in sandbox.records("Task") if t.get("Subject") == subject]  # refused whole

    created = sf.call(lambda c: c.Task.create({"Subject": subject, "Status": "Completed", "Priority": "Normal"}))
    assert created["success"] and sandbox.counters()["fault_lock_row"] == 1


def test_a_locked_row_fails_the_log_attempt_as_retryable_and_the_next_attempt_writes_once(
    clean_salesforce_sandbox,
) -> None:
    sandbox = clean_salesforce_sandbox
    salesforce = SalesforceActivities(
        SalesforceConnection(sandbox.credentials()), fields=ActivityFieldConfig(external_id_field="Flex_Task_Sid__c")
    )
    req = log_request()
    sandbox.faults.set(lock_row_next=1)

    with pytest.raises(ApplicationError) as raised:
        attempt(1).run(salesforce.log_activity, req)
    assert raised.value.type == SALESFORCE_UNAVAILABLE and not raised.value.non_retryable
    assert "UNABLE_TO_LOCK_ROW" in raised.value.message

    result = attempt(2).run(salesforce.log_activity, req)
    assert result.created
    assert [t["Id"] for t in sandbox.records("Task") if t.get("Flex_Task_Sid__c") == req.task_sid] == [
        result.activity_id
    ]
