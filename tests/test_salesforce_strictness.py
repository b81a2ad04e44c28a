"""First contact with a real org (issue #12): what a real Salesforce refuses or returns that a lenient stand-in hid.

Each test runs the product's activities against a sandbox that behaves like Salesforce does, by default where every
org does (CallType's values, create-only fields, converted leads in search, phone text matching) and through an org
setting where only some orgs do (a restricted or hidden Task Type, a Task table large enough to need indexed filters).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from simple_salesforce import SalesforceMalformedRequest
from temporalio.testing import ActivityEnvironment

from activities.activity_fields import ActivityFieldConfig
from activities.models import ActivityLogRequest, ActivityLogResult, SearchRequest
from activities.salesforce import SalesforceActivities, SearchConfig
from activities.salesforce_connection import SalesforceConnection
from flexsf.salesforce_client import connect, make_session
from sandboxes.salesforce import SalesforceSandbox
from sandboxes.salesforce import demo as sf_demo
from sandboxes.salesforce.schema import hide_field, restrict_picklist
from tests.fixtures_salesforce import log_request

CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
EXTERNAL_ID = "Flex_Task_Sid__c"


@pytest.fixture(scope="module")
def strict_org() -> Iterator[SalesforceSandbox]:
    """An org that restricted Task Type to its standard values and holds enough Tasks that Salesforce times out a
    query not filtered on an index."""
    with SalesforceSandbox(seed_demo=True) as sandbox:
        restrict_picklist(sandbox.org.schema, "Task.Type")
        sandbox.org.large_objects.add("Task")
        yield sandbox


def request(**kw) -> ActivityLogRequest:
    return log_request(**{"finished_at": datetime.now(UTC), "call_sid": "CA" + uuid.uuid4().hex, **kw})


def activities(
    sandbox: SalesforceSandbox, api_version: str | None = None, region: str = "US", **fields
) -> SalesforceActivities:
    creds = sandbox.credentials()
    if api_version:
        creds = dataclasses.replace(creds, api_version=api_version)
    return SalesforceActivities(
        SalesforceConnection(creds), SearchConfig(region=region), fields=ActivityFieldConfig(**fields)
    )


def log(salesforce: SalesforceActivities, req: ActivityLogRequest, attempt: int = 1) -> ActivityLogResult:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env.run(salesforce.log_activity, req)


def search(salesforce: SalesforceActivities, term: str) -> list[str]:
    result = ActivityEnvironment().run(salesforce.search_salesforce, SearchRequest(task_sid="WT1", term=term))
    return [r.id for r in result.records]


def stored(sandbox: SalesforceSandbox, activity_id: str) -> dict:
    [task] = [t for t in sandbox.records("Task") if t["Id"] == activity_id]
    return task


# ---- 4. the direction is CallType; Type is the kind of activity ------------------------------------------------------
@pytest.mark.parametrize("direction", ["Inbound", "Outbound"])
def test_an_org_with_a_restricted_type_accepts_the_call(strict_org: SalesforceSandbox, direction: str) -> None:
    result = log(activities(strict_org, external_id_field=EXTERNAL_ID), request(direction=direction))

    task = stored(strict_org, result.activity_id)
    assert (task["Type"], task["CallType"], task["TaskSubtype"]) == ("Call", direction, "Call")


def test_an_integration_user_who_cannot_see_type_logs_without_it() -> None:
    with SalesforceSandbox(seed_demo=False) as sandbox:
        hide_field(sandbox.org.schema, "Task.Type")
        salesforce = activities(sandbox, external_id_field=EXTERNAL_ID, activity_type=None)
        result = log(salesforce, request(related=None))
        assert "Type" not in result.fields and stored(sandbox, result.activity_id)["CallType"] == "Inbound"


# ---- 6. converted leads ----------------------------------------------------------------------------------------------
def test_the_lead_a_caller_was_converted_from_is_not_a_second_match(
    clean_salesforce_sandbox: SalesforceSandbox,
) -> None:
    salesforce = activities(clean_salesforce_sandbox)
    assert search(salesforce, CONTACT.phone) == [CONTACT.id]
    assert search(salesforce, CONTACT.name) == [CONTACT.id]


# ---- 7. create-only fields when the Task may exist -------------------------------------------------------------------
def test_before_api_46_an_upsert_that_updates_answers_204_and_the_id_is_looked_up(
    clean_salesforce_sandbox: SalesforceSandbox,
) -> None:
    salesforce = activities(clean_salesforce_sandbox, api_version="45.0", external_id_field=EXTERNAL_ID)
    req = request()
    first = log(salesforce, req)
    # A relog (a new activity, attempt 1) after a failed log whose write had committed.
    again = log(salesforce, req.model_copy(update={"disposition": "Resolved"}))

    assert first.created and not again.created and again.activity_id == first.activity_id
    task = stored(clean_salesforce_sandbox, first.activity_id)
    assert (task["CallDisposition"], task["TaskSubtype"]) == ("Resolved", "Call")
    counters = clean_salesforce_sandbox.counters()
    assert counters["error:INVALID_FIELD_FOR_INSERT_UPDATE"] == 1  # the create-only field, refused once
    assert counters["sobject_upsert:Task"] == 3


# ---- 8. non-US phone numbers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("caller", [sf_demo.UK_CONTACT_E164, "whatsapp:+442079460018", "+44 20 7946 0018"])
def test_a_london_caller_finds_the_contact_stored_as_the_uk_writes_it(
    clean_salesforce_sandbox: SalesforceSandbox, caller: str
) -> None:
    assert search(activities(clean_salesforce_sandbox), caller) == [sf_demo.UK_CONTACT.id]


def test_a_uk_org_searching_a_national_number(clean_salesforce_sandbox: SalesforceSandbox) -> None:
    assert search(activities(clean_salesforce_sandbox, region="GB"), "020 7946 0018") == [sf_demo.UK_CONTACT.id]


# ---- 11. the CallObject look-up in a large org -----------------------------------------------------------------------
def test_without_an_external_id_the_lookup_stays_selective_in_a_large_org(strict_org: SalesforceSandbox) -> None:
    creds = strict_org.credentials()
    with pytest.raises(SalesforceMalformedRequest) as caught:
        connect(creds, make_session(creds.ca_bundle)).query("SELECT Id FROM Task WHERE CallObject = 'CA1' LIMIT 1")
    assert caught.value.content[0]["errorCode"] == "QUERY_TIMEOUT"

    salesforce = activities(strict_org)
    req = request()
    first = log(salesforce, req)
    retried = log(salesforce, req.model_copy(update={"disposition": "Resolved"}), attempt=2)

    assert first.created and retried.activity_id == first.activity_id and not retried.created
    assert [t["Id"] for t in strict_org.records("Task") if t["CallObject"] == req.call_sid] == [first.activity_id]


def test_a_relog_a_week_later_still_finds_the_task(strict_org: SalesforceSandbox) -> None:
    week = timedelta(days=8)
    req = request(finished_at=datetime.now(UTC) - week)
    salesforce = activities(strict_org)
    strict_org.advance_clock(-week.total_seconds())  # the first log, written a week ago
    try:
        first = log(salesforce, req)
    finally:
        strict_org.reset()
    relogged = log(salesforce, req.model_copy(update={"disposition": "Resolved"}))

    assert relogged.activity_id == first.activity_id and not relogged.created
    created = datetime.fromisoformat(stored(strict_org, first.activity_id)["CreatedDate"])
    assert created < datetime.now(UTC) - week / 2
