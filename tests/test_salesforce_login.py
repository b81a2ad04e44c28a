"""First contact with a real org: a login failure is either worth retrying (the token endpoint is down, busy or
unreachable) or a setting to fix (a refused grant, a login host that cannot serve the flow), and the failure says
which, naming the setting and never a secret. Against the sandbox's token-endpoint faults and org shapes: activities
in an ActivityEnvironment, then a task end to end through a worker.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import worker
from activities.models import SearchRequest, SearchResult
from activities.salesforce import SalesforceActivities
from activities.salesforce_connection import SalesforceConnection
from flexsf.models import Stage
from flexsf.salesforce_client import SalesforceCredentials
from flexsf.settings import settings_from_env
from flexsf.vocabulary import (
    NON_RETRYABLE_TYPES,
    SALESFORCE_AUTH,
    SALESFORCE_CONFIGURATION,
    SALESFORCE_UNAVAILABLE,
    SALESFORCE_UNREACHABLE,
)
from sandboxes.salesforce import SalesforceSandbox
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import eventually

CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
AGENT = tw_demo.DEMO_WORKERS[0]
SANDBOX_ORG_AUDIENCE = "https://test.salesforce.com"


def activities_for(creds: SalesforceCredentials, pause_s: float = 0) -> SalesforceActivities:
    connection = SalesforceConnection(creds)
    # Most tests are about how a failure is classified, not about the pause between logins after one.
    connection.login_retry_after_s = pause_s
    return SalesforceActivities(connection)


def search(activities: SalesforceActivities) -> SearchResult:
    request = SearchRequest(task_sid="WT" + uuid.uuid4().hex, term=CONTACT.phone)
    return ActivityEnvironment().run(activities.search_salesforce, request)


def found(result: SearchResult) -> list[str]:
    return [r.id for r in result.records]


def failed_search(activities: SalesforceActivities) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        search(activities)
    return caught.value


def retryable(error: ApplicationError) -> bool:
    return not error.non_retryable and error.type not in NON_RETRYABLE_TYPES


def secrets_of(creds: SalesforceCredentials) -> list[str]:
    return [s for s in (creds.client_secret, creds.password) if s]


def other_private_key(tmp_path: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "not-the-uploaded-certificate.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(path)


# ---- transient: retried, and the next attempt logs in --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "counter", "failure_type"),
    [
        ("token_unavailable_next", "token_fault_503", SALESFORCE_UNAVAILABLE),
        ("token_rate_limited_next", "token_fault_429", SALESFORCE_UNAVAILABLE),
        ("token_drop_next", "token_dropped", SALESFORCE_UNREACHABLE),
    ],
    ids=["maintenance_page_503", "rate_limited_429", "connection_dropped"],
)
def test_a_transient_login_failure_is_retryable_and_the_next_attempt_logs_in(
    clean_salesforce_sandbox: SalesforceSandbox, fault: str, counter: str, failure_type: str
) -> None:
    activities = activities_for(clean_salesforce_sandbox.credentials())
    clean_salesforce_sandbox.faults.set(**{fault: 1})

    error = failed_search(activities)
    assert (error.type, retryable(error)) == (failure_type, True), error
    assert clean_salesforce_sandbox.counters()[counter] == 1

    # The next attempt (Temporal's retry of the activity on the same worker) logs in and does the work.
    assert CONTACT.id in found(search(activities))
    assert clean_salesforce_sandbox.counters()["logins"] == 1


def test_a_re_login_after_an_expired_session_that_meets_a_503_is_retryable(
    clean_salesforce_sandbox: SalesforceSandbox,
) -> None:
    activities = activities_for(clean_salesforce_sandbox.credentials())
    search(activities)
    clean_salesforce_sandbox.expire_sessions()
    clean_salesforce_sandbox.faults.set(token_unavailable_next=1)

    error = failed_search(activities)
    assert (error.type, retryable(error)) == (SALESFORCE_UNAVAILABLE, True), error
    assert CONTACT.id in found(search(activities))
    assert clean_salesforce_sandbox.counters()["logins"] == 2


def test_after_a_failed_login_the_worker_pauses_before_asking_the_token_endpoint_again(
    clean_salesforce_sandbox: SalesforceSandbox,
) -> None:
    """Every activity thread retrying its own login through an outage would spend the user's login rate limit."""
    connection = SalesforceConnection(clean_salesforce_sandbox.credentials(), login_retry_after_s=3600)
    activities = SalesforceActivities(connection)
    clean_salesforce_sandbox.faults.set(token_unavailable_next=1)
    assert failed_search(activities).type == SALESFORCE_UNAVAILABLE

    paused = failed_search(activities)
    assert (paused.type, retryable(paused)) == (SALESFORCE_UNAVAILABLE, True)
    assert "HTTP 503" in paused.message  # says what the last login met
    assert clean_salesforce_sandbox.counters()["token_fault_503"] == 1  # the endpoint was not asked again
    assert clean_salesforce_sandbox.counters().get("oauth_token", 0) == 0

    connection.login_retry_after_s = 0
    assert CONTACT.id in found(search(activities))


# ---- refused: a typed configuration error that names the setting ---------------------------------------------------


def test_a_wrong_secret_is_a_configuration_error_naming_the_setting(
    clean_salesforce_sandbox: SalesforceSandbox,
) -> None:
    right = clean_salesforce_sandbox.credentials()
    wrong = dataclasses.replace(right, client_secret="wrong-" + uuid.uuid4().hex)

    error = failed_search(activities_for(wrong))
    assert (error.type, error.non_retryable) == (SALESFORCE_CONFIGURATION, True), error
    assert "SALESFORCE_CLIENT_SECRET" in error.message and "invalid_client" in error.message
    assert wrong.client_secret not in error.message and right.client_secret not in error.message


def _wrong_client_id(sandbox: SalesforceSandbox, tmp_path: Path) -> SalesforceCredentials:
    return dataclasses.replace(sandbox.credentials(), client_id="3MVG9not.this.app")


def _wrong_password(sandbox: SalesforceSandbox, tmp_path: Path) -> SalesforceCredentials:
    return dataclasses.replace(sandbox.credentials("password"), password="wrong-" + uuid.uuid4().hex)


def _unknown_key(sandbox: SalesforceSandbox, tmp_path: Path) -> SalesforceCredentials:
    return dataclasses.replace(sandbox.credentials("jwt"), private_key_file=other_private_key(tmp_path))


def _client_credentials_on_a_login_host(sandbox: SalesforceSandbox, tmp_path: Path) -> SalesforceCredentials:
    sandbox.faults.set(login_host=True)
    return sandbox.credentials()


def _audience_of_another_org_kind(sandbox: SalesforceSandbox, tmp_path: Path) -> SalesforceCredentials:
    sandbox.faults.set(jwt_audience=SANDBOX_ORG_AUDIENCE)
    return sandbox.credentials("jwt")


@pytest.mark.parametrize(
    ("make", "setting", "hint"),
    [
        (_wrong_client_id, "SALESFORCE_CLIENT_ID", "invalid_client_id"),
        (_wrong_password, "SALESFORCE_PASSWORD", "invalid_grant"),
        (_unknown_key, "SALESFORCE_PRIVATE_KEY_FILE", "invalid_grant"),
        (_client_credentials_on_a_login_host, "SALESFORCE_TOKEN_URL", "my.salesforce.com"),
        (_audience_of_another_org_kind, "SALESFORCE_JWT_AUDIENCE", "audience"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_a_refused_login_names_the_setting_to_fix(
    clean_salesforce_sandbox: SalesforceSandbox, tmp_path: Path, make, setting: str, hint: str
) -> None:
    creds = make(clean_salesforce_sandbox, tmp_path)
    error = failed_search(activities_for(creds))
    assert (error.type, error.non_retryable) == (SALESFORCE_CONFIGURATION, True), error
    assert setting in error.message and hint in error.message, error.message
    assert "\n" not in error.message
    for secret in secrets_of(creds) + secrets_of(clean_salesforce_sandbox.credentials("password")):
        assert secret not in error.message


# ---- what the token endpoint answered, classified (answers the sandbox does not give) ------------------------------


class _Canned(requests.Session):
    """A session whose token request gets one canned answer (or raises), without a server."""

    def __init__(self, status: int = 200, body: str = "", content_type: str = "application/json", exc=None) -> None:
        super().__init__()
        self.answer = (status, body, content_type, exc)
        self.calls = 0

    def post(self, url, *args, **kwargs):  # requests' signature
        self.calls += 1
        status, body, content_type, exc = self.answer
        if exc is not None:
            raise exc(request=requests.Request("POST", url).prepare())
        response = requests.Response()
        response.status_code, response._content, response.url = status, body.encode(), url
        response.headers["Content-Type"] = content_type
        response.request = requests.Request("POST", url).prepare()
        return response


CANNED_CREDS = SalesforceCredentials(
    token_url="https://acme.my.salesforce.com/services/oauth2/token",
    client_id="3MVG9canned",
    client_secret="canned-secret-value",
)
HTML = "text/html;charset=UTF-8"


@pytest.mark.parametrize(
    ("session", "failure_type", "words"),
    [
        (
            _Canned(500, '{"error":"unknown_error","error_description":"retry your request"}'),
            SALESFORCE_UNAVAILABLE,
            [],
        ),
        (_Canned(502, "<html>Bad Gateway</html>", HTML), SALESFORCE_UNAVAILABLE, ["HTTP 502"]),
        (_Canned(200, "<html>Please sign in to the proxy</html>", HTML), SALESFORCE_UNAVAILABLE, ["not JSON"]),
        (_Canned(200, '{"token_type":"Bearer"}'), SALESFORCE_UNAVAILABLE, ["access_token"]),
        (_Canned(exc=requests.Timeout), SALESFORCE_UNREACHABLE, ["Timeout"]),
        (_Canned(exc=requests.ConnectionError), SALESFORCE_UNREACHABLE, ["ConnectionError"]),
        (
            _Canned(400, '{"error":"unsupported_grant_type","error_description":"grant type not supported"}'),
            SALESFORCE_CONFIGURATION,
            ["SALESFORCE_TOKEN_URL", "unsupported_grant_type"],
        ),
        (_Canned(404, "<html>Not Found</html>", HTML), SALESFORCE_CONFIGURATION, ["SALESFORCE_TOKEN_URL", "404"]),
        (
            _Canned(400, '{"error":"invalid_client","error_description":"bad secret canned-secret-value"}'),
            SALESFORCE_CONFIGURATION,
            ["SALESFORCE_CLIENT_SECRET"],
        ),
        (
            _Canned(400, '{"error":"inactive_user","error_description":"user is inactive"}'),
            SALESFORCE_AUTH,
            ["inactive_user"],
        ),
    ],
    ids=[
        "500_json",
        "502_html",
        "200_html",
        "200_without_token",
        "timeout",
        "connection_error",
        "unsupported_grant_type",
        "404_html",
        "invalid_client_echoing_the_secret",
        "inactive_user",
    ],
)
def test_token_endpoint_answers_are_classified(session: _Canned, failure_type: str, words: list[str]) -> None:
    connection = SalesforceConnection(CANNED_CREDS, session=session)
    connection.login_retry_after_s = 0
    error = failed_search(SalesforceActivities(connection))
    assert error.type == failure_type, error
    assert retryable(error) == (failure_type in (SALESFORCE_UNAVAILABLE, SALESFORCE_UNREACHABLE))
    for word in words:
        assert word in error.message, error.message
    assert CANNED_CREDS.client_secret not in error.message and "<html>" not in error.message


def test_client_credentials_are_never_sent_to_a_login_host() -> None:
    creds = dataclasses.replace(CANNED_CREDS, token_url="https://test.salesforce.com/services/oauth2/token")
    session = _Canned()
    connection = SalesforceConnection(creds, session=session)
    error = failed_search(SalesforceActivities(connection))
    assert (error.type, error.non_retryable) == (SALESFORCE_CONFIGURATION, True)
    assert "SALESFORCE_TOKEN_URL" in error.message and "https://<mydomain>.my.salesforce.com" in error.message
    assert session.calls == 0


# ---- the JWT audience is a setting ----------------------------------------------------------------------------------


def jwt_env(sandbox: SalesforceSandbox, **extra: str) -> dict[str, str]:
    info = sandbox.info
    return {
        "SALESFORCE_TOKEN_URL": info["token_url"],
        "SALESFORCE_CLIENT_ID": info["client_id"],
        "SALESFORCE_USERNAME": info["username"],
        "SALESFORCE_PRIVATE_KEY_FILE": info["private_key_file"],
        "SALESFORCE_CA_BUNDLE": info["ca_bundle"],
        **extra,
    }


def test_the_jwt_audience_setting_reaches_the_assertion(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    # The sandbox plays an org (a sandbox or scratch org) whose assertions must name test.salesforce.com.
    clean_salesforce_sandbox.faults.set(jwt_audience=SANDBOX_ORG_AUDIENCE)
    env = jwt_env(clean_salesforce_sandbox, SALESFORCE_JWT_AUDIENCE=SANDBOX_ORG_AUDIENCE)
    creds = worker.salesforce_credentials(settings_from_env(env, _env_file=None))
    assert CONTACT.id in found(search(activities_for(creds)))
    assert clean_salesforce_sandbox.counters()["login:jwt_bearer"] == 1

    # Unset, the audience is derived from the token URL (here the sandbox's own), which this org refuses.
    derived = worker.salesforce_credentials(settings_from_env(jwt_env(clean_salesforce_sandbox), _env_file=None))
    error = failed_search(activities_for(derived))
    assert error.type == SALESFORCE_CONFIGURATION and "SALESFORCE_JWT_AUDIENCE" in error.message


# ---- end to end: a task's log survives a token-endpoint outage -----------------------------------------------------


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "0"}], indirect=True)
async def test_a_task_log_waits_out_a_token_endpoint_outage_and_is_written_once(stack) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert stack.sf.counters()["logins"] == 1
    # The worker's session dies and the token endpoint is down for maintenance when the log needs a new one.
    stack.sf.expire_sessions()
    stack.sf.faults.set(token_unavailable_next=1_000_000)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    await eventually(lambda: stack.sf.counters().get("token_fault_503", 0) >= 2, timeout=60, what="two refused logins")
    view = await stack.view(sid)
    assert view.stage == Stage.LOGGING and view.error is None, view  # still retrying, not failed

    stack.sf.faults.set(token_unavailable_next=0)
    view = await stack.result(sid, timeout=120)
    assert view.stage == Stage.LOGGED and view.error is None, view
    logged = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid]
    assert [t["Id"] for t in logged] == [view.activity_id]
    counters = stack.sf.counters()
    assert counters["logins"] == 2 and counters.get("sobject_upsert:Task") == 1
