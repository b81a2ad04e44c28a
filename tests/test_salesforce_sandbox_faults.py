"""API limits, injected faults, commit-then-drop, counters, the control endpoint and concurrency."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from simple_salesforce import Salesforce, SalesforceGeneralError, SalesforceRefusedRequest

from flexsf.salesforce_client import make_session
from sandboxes.salesforce import SalesforceSandbox
from sandboxes.salesforce.demo import UNIQUE_PHONE_CONTACT


def _task(subject: str, **extra: object) -> dict:
    return {"Subject": subject, "Status": "Completed", "TaskSubtype": "Call", "WhoId": UNIQUE_PHONE_CONTACT.id, **extra}


def test_limit_header_is_parsed(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    sf.query("SELECT Id FROM Account LIMIT 1")
    sf.query("SELECT Id FROM Account LIMIT 1")
    usage = sf.api_usage["api-usage"]
    assert (usage.used, usage.total) == (2, clean_salesforce_sandbox.info["daily_limit"])
    limits = sf.limits()
    assert limits["DailyApiRequests"]["Remaining"] == usage.total - 3


def test_limit_exhaustion_is_refused(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    clean_salesforce_sandbox.set_daily_limit(3)
    for _ in range(3):
        sf.query("SELECT Id FROM Account LIMIT 1")
    with pytest.raises(SalesforceRefusedRequest) as caught:
        sf.query("SELECT Id FROM Account LIMIT 1")
    assert caught.value.status == 403
    assert caught.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    # Logging in does not count against the limit, and still works.
    info = clean_salesforce_sandbox.info
    token = make_session(info["ca_bundle"]).post(
        info["token_url"], data={"grant_type": "client_credentials"}, auth=(info["client_id"], info["client_secret"])
    )
    assert token.status_code == 200


def test_forced_limit_fault(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    clean_salesforce_sandbox.faults.set(limit_exceeded=True)
    with pytest.raises(SalesforceRefusedRequest):
        sf.Task.create(_task("refused"))
    raw = sf.session.get(
        f"{sf.base_url}query/",
        params={"q": "SELECT Id FROM Account"},
        headers={"Authorization": f"Bearer {sf.session_id}"},
    )
    assert raw.status_code == 403
    assert raw.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert raw.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def test_unavailable_fraction(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    clean_salesforce_sandbox.faults.set(fail_rate=0.5)
    outcomes = []
    for _ in range(40):
        try:
            sf.query("SELECT Id FROM Account LIMIT 1")
            outcomes.append("ok")
        except SalesforceGeneralError as exc:
            assert exc.status == 503
            assert exc.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
            outcomes.append("503")
    assert 5 < outcomes.count("503") < 35
    assert clean_salesforce_sandbox.counters()["fault_503"] == outcomes.count("503")


def test_fail_next_does_not_commit(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    subject = f"never-{uuid.uuid4()}"
    clean_salesforce_sandbox.faults.set(fail_next=1)
    with pytest.raises(SalesforceGeneralError):
        sf.Task.create(_task(subject))
    assert not [t for t in clean_salesforce_sandbox.records("Task") if t["Subject"] == subject]


def test_latency_is_injected(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    clean_salesforce_sandbox.faults.set(latency_ms=20, jitter_ms=10)
    sf.query("SELECT Id FROM Account LIMIT 1")
    sf.query("SELECT Id FROM Account LIMIT 1")
    counters = clean_salesforce_sandbox.counters()
    assert counters["delayed_requests"] == 2
    assert 40 <= counters["injected_delay_ms"] <= 60


def test_commit_then_drop(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    subject = f"dropped-{uuid.uuid4()}"
    clean_salesforce_sandbox.faults.set(drop_after_commit=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.Task.create(_task(subject))
    matching = sf.query(f"SELECT Id FROM Task WHERE Subject = '{subject}'")
    assert matching["totalSize"] == 1
    assert clean_salesforce_sandbox.counters()["dropped_after_commit"] == 1


def test_drop_then_retried_upsert_stays_single(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    sid = f"WT{uuid.uuid4().hex}"
    clean_salesforce_sandbox.faults.set(drop_after_commit=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.Task.upsert(f"Flex_Task_Sid__c/{sid}", _task("upserted"))
    # The retry matches the committed Task, so it is an update: the create-only TaskSubtype must not be sent again.
    retry = {k: v for k, v in _task("upserted").items() if k != "TaskSubtype"}
    assert sf.Task.upsert(f"Flex_Task_Sid__c/{sid}", retry) == 200
    assert sf.query(f"SELECT COUNT() FROM Task WHERE Flex_Task_Sid__c = '{sid}'")["totalSize"] == 1


def test_control_endpoint_over_http(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    info = clean_salesforce_sandbox.info
    control = info["control_url"]
    http = make_session(info["ca_bundle"])
    assert http.get(f"{control}/info").json()["token_url"] == info["token_url"]
    assert http.post(f"{control}/faults", json={"fail_next": 1}).json()["fail_next"] == 1
    with pytest.raises(SalesforceGeneralError):
        sf.query("SELECT Id FROM Account LIMIT 1")
    sf.query("SELECT Id FROM Account LIMIT 1")
    sf.Task.create(_task("counted"))
    counters = http.get(f"{control}/counters").json()
    assert (
        counters["fault_503"] == 1
        and counters["query"] == 1
        and counters["sobject_create:Task"] == 1
        and counters["logins"] == 1
    )
    assert http.post(f"{control}/faults", json={"no_such_fault": 1}).status_code == 400
    contacts = http.get(f"{control}/records/Contact").json()
    assert any(c["Id"] == UNIQUE_PHONE_CONTACT.id for c in contacts)
    assert http.post(f"{control}/reset").status_code == 200
    assert http.get(f"{control}/counters").json() == {"api_usage": 0}
    assert http.post(f"{control}/revoke", json={}).json()["revoked"] >= 1


def test_token_endpoint_faults(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    info = clean_salesforce_sandbox.info
    http = make_session(info["ca_bundle"])
    control = info["control_url"]
    armed = {"token_unavailable_next": 1, "token_rate_limited_next": 1, "token_drop_next": 1}
    assert {k: v for k, v in http.post(f"{control}/faults", json=armed).json().items() if k in armed} == armed

    def login() -> requests.Response:
        return http.post(
            info["token_url"],
            data={"grant_type": "client_credentials"},
            auth=(info["client_id"], info["client_secret"]),
        )

    maintenance = login()
    assert maintenance.status_code == 503 and maintenance.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        maintenance.json()
    limited = login()
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limit_exceeded"
    with pytest.raises(requests.exceptions.ConnectionError):
        login()
    assert login().status_code == 200
    counters = clean_salesforce_sandbox.counters()
    assert (counters["token_fault_503"], counters["token_fault_429"], counters["token_dropped"]) == (1, 1, 1)
    assert counters["logins"] == 1 and counters["oauth_token"] == 1  # the faults never reached the endpoint


def test_org_shapes_are_validated_and_reset(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    info = clean_salesforce_sandbox.info
    http = make_session(info["ca_bundle"])
    control = info["control_url"]
    assert http.post(f"{control}/faults", json={"login_host": "yes"}).status_code == 400
    assert http.post(f"{control}/faults", json={"jwt_audience": "test.salesforce.com"}).status_code == 400
    shapes = {"login_host": True, "jwt_audience": "https://test.salesforce.com"}
    assert {k: v for k, v in http.post(f"{control}/faults", json=shapes).json().items() if k in shapes} == shapes
    clean_salesforce_sandbox.reset()
    settings = clean_salesforce_sandbox.faults.settings()
    assert (settings.login_host, settings.jwt_audience) == (False, None)


def test_admin_secret_guards_control_endpoint() -> None:
    with SalesforceSandbox(seed_demo=False, admin_secret="let-me-in") as sandbox:
        http = make_session(sandbox.info["ca_bundle"])
        assert http.get(f"{sandbox.info['control_url']}/counters").status_code == 401
        ok = http.get(f"{sandbox.info['control_url']}/counters", headers={"X-Sandbox-Admin": "let-me-in"})
        assert ok.status_code == 200


def test_fifty_concurrent_creates(clean_salesforce_sandbox: SalesforceSandbox, sf: Salesforce) -> None:
    batch = uuid.uuid4().hex
    with ThreadPoolExecutor(max_workers=50) as pool:
        ids = list(pool.map(lambda i: sf.Task.create(_task(f"{batch}-{i}"))["id"], range(50)))
    assert len(set(ids)) == 50
    assert sf.query(f"SELECT COUNT() FROM Task WHERE Subject LIKE '{batch}-%'")["totalSize"] == 50
    assert clean_salesforce_sandbox.counters()["sobject_create:Task"] == 50
