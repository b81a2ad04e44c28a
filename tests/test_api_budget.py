"""Limit-aware writes: near the org's daily API limit the call activity's log waits, searches go on.

The activity side through the real simple-salesforce client against the Salesforce sandbox, whose API usage a test
sets (`set_api_usage`): a log held back makes no call at all and fails fast with the non-retryable
`SalesforceApiBudgetLow`; a stale reading over the budget is checked with the REST `limits` resource. Then end to end
through Temporal: the task shows `waiting_for_api_budget` and is logged once, when the usage fell.
"""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceGeneralError, SalesforceRefusedRequest
from temporalio.exceptions import ApplicationError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment

import worker
from activities.activity_fields import ActivityFieldConfig
from activities.models import ActivityLogRequest, ActivityLogResult, SearchRequest, SearchResult
from activities.salesforce import ApiBudget, SalesforceActivities
from activities.salesforce_connection import API_USAGE_FRESH_S, SalesforceConnection
from flexsf.metrics import ACTIVITY_LOGS_HELD
from flexsf.models import Stage
from flexsf.salesforce_client import make_session
from flexsf.vocabulary import NON_RETRYABLE_TYPES, SALESFORCE_API_BUDGET, SALESFORCE_UNAVAILABLE
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_salesforce import log_request
from tests.fixtures_stack import eventually, settings_from
from tests.test_metrics_logs import scrape, total

CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
AGENT = tw_demo.DEMO_WORKERS[0]
LIMIT = 5_000
WRITES = ("sobject_upsert:Task", "sobject_create:Task", "sobject_update:Task")

# One runtime whose meter records into a buffer: the activities' counters, read back by name.
_BUFFER = MetricBuffer(10_000)
_RUNTIME = Runtime(telemetry=TelemetryConfig(metrics=_BUFFER))


class Worker:
    """The worker's Salesforce side: one connection and its activities, run as Temporal runs them."""

    def __init__(self, sandbox, share: float = 0.9) -> None:
        self.connection = SalesforceConnection(sandbox.credentials())
        self.activities = SalesforceActivities(
            self.connection, fields=ActivityFieldConfig(external_id_field="Flex_Task_Sid__c"), api_budget_share=share
        )
        self.held = 0

    def _env(self) -> ActivityEnvironment:
        env = ActivityEnvironment()
        env.metric_meter = _RUNTIME.metric_meter
        return env

    def search(self) -> SearchResult:
        return self._env().run(self.activities.search_salesforce, SearchRequest(task_sid="WT1", term=CONTACT.phone))

    def log(self, req: ActivityLogRequest | None = None) -> ActivityLogResult:
        try:
            return self._env().run(self.activities.log_activity, req or log_request())
        finally:
            self.held += sum(u.value for u in _BUFFER.retrieve_updates() if u.metric.name == ACTIVITY_LOGS_HELD)

    def held_back(self, req: ActivityLogRequest | None = None) -> ApplicationError:
        with pytest.raises(ApplicationError) as raised:
            self.log(req)
        return raised.value


@pytest.fixture
def org(clean_salesforce_sandbox):
    """The sandbox with a daily limit of 5,000 requests (reset() restores its start-up limit afterwards)."""
    clean_salesforce_sandbox.set_daily_limit(LIMIT)
    return clean_salesforce_sandbox


def at_usage(org, used: int, share: float = 0.9) -> Worker:
    """A worker whose last reading (from a search: it counts itself) is `used` of 5,000."""
    org.set_api_usage(used - 1)
    sf = Worker(org, share)
    assert sf.search().records
    assert sf.connection.api_usage == (used, LIMIT)
    return sf


def written(org, task_sid: str) -> list[dict]:
    return [t for t in org.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]


# ---- the activity --------------------------------------------------------------------------------------------------


def test_at_95_percent_the_log_is_held_without_a_call_and_searches_go_on(org) -> None:
    sf = at_usage(org, 4_750)
    before = org.counters()
    req = log_request()

    held = sf.held_back(req)

    assert held.type == SALESFORCE_API_BUDGET and held.non_retryable and SALESFORCE_API_BUDGET in NON_RETRYABLE_TYPES
    assert held.message == (
        "the org has used 4,750 of its 5,000 daily API requests (95 %, at or above the 90 % kept for searches): "
        "the log waits"
    )
    assert list(held.details) == [4_750, LIMIT, 0.9]
    assert org.counters() == before  # not one call: no write, no lookup, no login, no usage spent
    assert not written(org, req.task_sid)
    assert sf.held == 1

    assert sf.search().records  # the agent's screen pop is never held
    assert org.counters()["search"] == before["search"] + 1
    assert sf.held_back(req).type == SALESFORCE_API_BUDGET and sf.held == 2
    assert not written(org, req.task_sid) and not any(org.counters().get(w) for w in WRITES)


@pytest.mark.parametrize(("used", "held"), [(4_500, True), (4_499, False)], ids=["at-90-percent", "just-below"])
def test_the_budget_holds_from_the_share_itself(org, used: int, held: bool) -> None:
    sf = at_usage(org, used)
    req = log_request()
    if held:
        assert "(90 %, at or above the 90 % kept" in sf.held_back(req).message
        assert not written(org, req.task_sid)
    else:
        result = sf.log(req)
        assert result.created and [t["Id"] for t in written(org, req.task_sid)] == [result.activity_id]
        assert sf.held == 0


def test_never_past_the_limit_even_with_a_share_of_one(org) -> None:
    sf = at_usage(org, LIMIT - 1, share=1.0)
    first = log_request()
    assert sf.log(first).created  # 4,999 of 5,000: the write takes the last request
    assert sf.connection.api_usage == (LIMIT, LIMIT)

    req = log_request()
    held = sf.held_back(req)
    assert held.type == SALESFORCE_API_BUDGET and list(held.details) == [LIMIT, LIMIT, 1.0]
    assert "(100 %, the limit: Salesforce refuses more)" in held.message
    assert not written(org, req.task_sid) and org.counters().get("limit_exceeded", 0) == 0  # never even asked


def test_a_stale_reading_over_the_budget_is_checked_once_and_a_fallen_usage_lets_the_log_go(org) -> None:
    sf = at_usage(org, 4_750)
    assert sf.connection.usage_fresh_s == API_USAGE_FRESH_S == 60
    sf.connection.usage_fresh_s = 0  # as if the last reading were older than a minute
    org.set_api_usage(300)  # the org's 24-hour window moved on, and no search ran since
    req = log_request()

    result = sf.log(req)

    assert result.created and [t["Id"] for t in written(org, req.task_sid)] == [result.activity_id]
    assert org.counters()["limits"] == 1  # one GET of the limits resource, counted like any call
    assert sf.held == 0
    assert sf.connection.api_usage == org.api_usage()


def test_a_stale_reading_still_over_the_budget_holds_on_the_new_one(org) -> None:
    sf = at_usage(org, 4_750)
    sf.connection.usage_fresh_s = 0
    org.set_api_usage(4_800)
    req = log_request()

    held = sf.held_back(req)

    assert list(held.details) == [4_801, LIMIT, 0.9]  # Max - Remaining of the limits resource, which counted itself
    assert org.counters()["limits"] == 1 and not written(org, req.task_sid)


def test_past_the_limit_the_refused_limits_check_holds_the_log(org) -> None:
    sf = at_usage(org, 4_750)
    sf.connection.usage_fresh_s = 0
    org.set_api_usage(LIMIT)

    held = sf.held_back()

    assert held.type == SALESFORCE_API_BUDGET and list(held.details) == [LIMIT, LIMIT, 0.9]
    assert org.counters()["limit_exceeded"] == 1 and not any(org.counters().get(w) for w in WRITES)


def refusal(cls: type[SalesforceError], status: int, code: str):
    def limits(self, **kwargs):
        raise cls(f"{self.base_url}limits/", status, "limits", [{"message": "refused", "errorCode": code}])

    return limits


def test_a_limits_resource_refused_for_good_drops_the_stale_reading_and_the_log_goes(org, monkeypatch) -> None:
    sf = at_usage(org, 4_750)
    sf.connection.usage_fresh_s = 0
    org.set_api_usage(300)
    # An integration user without "View Setup and Configuration", and an answer without Sforce-Limit-Info.
    monkeypatch.setattr(Salesforce, "limits", refusal(SalesforceRefusedRequest, 403, "INSUFFICIENT_ACCESS"))
    req = log_request()

    result = sf.log(req)

    assert result.created and [t["Id"] for t in written(org, req.task_sid)] == [result.activity_id]
    assert sf.connection.api_usage == org.api_usage()  # the write's answer is the new reading


def test_a_limits_resource_unavailable_fails_the_attempt_as_retryable_without_a_write(org, monkeypatch) -> None:
    sf = at_usage(org, 4_750)
    sf.connection.usage_fresh_s = 0
    monkeypatch.setattr(Salesforce, "limits", refusal(SalesforceGeneralError, 503, "SERVER_UNAVAILABLE"))
    req = log_request()

    failed = sf.held_back(req)

    assert failed.type == SALESFORCE_UNAVAILABLE and not failed.non_retryable
    assert not written(org, req.task_sid) and sf.held == 0


def test_a_fresh_reading_under_the_budget_is_not_asked_again(org) -> None:
    sf = at_usage(org, 100)
    sf.connection.usage_fresh_s = 0  # stale, but under the budget: the write's answer brings the next reading
    assert sf.log().created
    assert org.counters().get("limits", 0) == 0


def test_with_no_reading_yet_the_log_goes_and_its_answer_brings_one(org) -> None:
    org.set_api_usage(4_750)
    sf = Worker(org)
    assert sf.connection.api_usage is None

    assert sf.log().created
    used, limit = sf.connection.api_usage
    assert limit == LIMIT and used > 4_750

    assert sf.held_back().type == SALESFORCE_API_BUDGET  # the next one waits


def test_the_budget_compares_exactly() -> None:
    assert ApiBudget(0.9).over(4_500, 5_000) and not ApiBudget(0.9).over(4_499, 5_000)
    assert ApiBudget(0.7).over(70, 100) and not ApiBudget(0.7).over(69, 100)  # 0.7 * 100 is 70.00000000000001
    assert ApiBudget(1.0).over(5_000, 5_000) and not ApiBudget(1.0).over(4_999, 5_000)
    assert ApiBudget(0.9).over(0, 0)  # an org without API requests holds every log


def test_the_worker_passes_the_budget_share_from_settings() -> None:
    settings = settings_from(
        {
            "SALESFORCE_CLIENT_ID": "client",
            "SALESFORCE_TOKEN_URL": "https://example.my.salesforce.com/services/oauth2/token",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "f" * 32,
            "TWILIO_WORKSPACE_SID": "WS" + "0" * 32,
            "FLEXSF_SALESFORCE_API_BUDGET_SHARE": "0.75",
        }
    )
    assert worker.build_activities(settings).salesforce._budget == ApiBudget(0.75)


# ---- the sandbox ---------------------------------------------------------------------------------------------------


def test_the_sandbox_serves_the_limits_resource_counts_it_and_refuses_past_the_limit(org) -> None:
    sf = Worker(org).connection
    control = org.info["control_url"]
    http = make_session(org.info["ca_bundle"])
    answer = http.post(f"{control}/api-usage", json={"used": 4_749})
    assert answer.json() == {"used": 4_749, "daily_limit": LIMIT}

    limits = sf.call(lambda c: c.limits())
    assert limits["DailyApiRequests"] == {"Max": LIMIT, "Remaining": LIMIT - 4_750}  # it counted itself
    assert all(set(v) >= {"Max", "Remaining"} for v in limits.values())
    assert sf.api_usage == (4_750, LIMIT) == org.api_usage()

    org.set_api_usage(LIMIT)
    response = sf.call(lambda c: c.session.get(f"{c.base_url}limits/", headers=c.headers))
    assert response.status_code == 403
    assert response.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert response.headers["Sforce-Limit-Info"] == f"api-usage={LIMIT}/{LIMIT}"

    org.set_api_usage(500)  # the window moved on: calls are answered again
    assert sf.call(lambda c: c.limits())["DailyApiRequests"]["Remaining"] == LIMIT - 501
    assert http.post(f"{control}/api-usage", json={"used": -1}).status_code == 400


# ---- end to end ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stack_overrides", [{"FLEXSF_API_BUDGET_RETRY_S": "1", "FLEXSF_NOTES_GRACE_S": "0"}], indirect=True
)
async def test_a_task_finished_at_95_percent_waits_visibly_and_is_logged_once_when_usage_fell(
    stack, worker_metrics_url
) -> None:
    queue = {"task_queue": stack.task_queue}
    stack.sf.set_daily_limit(LIMIT)
    stack.sf.set_api_usage(4_750)

    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    popped = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert popped.pop.record is not None and popped.pop.record.id == CONTACT.id  # the search was not held
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)

    waiting = await stack.wait_for(sid, lambda v: v.stage == Stage.WAITING_FOR_API_BUDGET)
    assert "daily API requests" in waiting.error and "the log waits" in waiting.error, waiting.error
    assert not written(stack.sf, sid)
    await eventually(
        lambda: total(scrape(worker_metrics_url), "flexsf_activity_logs_held_total", **queue) >= 2,
        what="a second look held back too (the wait repeats)",
    )
    assert not written(stack.sf, sid)

    stack.sf.set_api_usage(300)  # the org's 24-hour window moved on
    stack.activities.connection.usage_fresh_s = 0  # and the worker's reading is older than a minute

    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED and view.error is None
    assert [t["Id"] for t in written(stack.sf, sid)] == [view.activity_id]
    assert stack.sf.counters()["limits"] >= 1
    after = scrape(worker_metrics_url)
    assert total(after, "flexsf_salesforce_task_writes_total", result="created", **queue) == 1
    assert total(after, "flexsf_salesforce_task_writes_total", result="failed", **queue) == 0
