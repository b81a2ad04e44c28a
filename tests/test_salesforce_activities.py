"""SalesforceActivities in an ActivityEnvironment against the Salesforce sandbox: what `log_activity` answers is what
Salesforce holds afterwards, so a step after the log can use the answer instead of recomputing the fields."""

from __future__ import annotations

import dataclasses
import uuid
from urllib.parse import unquote

import pytest
from temporalio.testing import ActivityEnvironment

from activities.activity_fields import ActivityFieldConfig
from activities.models import ActivityLogRequest, ActivityLogResult
from activities.salesforce import SalesforceActivities
from activities.salesforce_connection import SalesforceConnection
from flexsf.models import Notes, RecordRef
from flexsf.salesforce_client import connect, make_session
from sandboxes.salesforce import demo as sf_demo
from tests.fixtures_salesforce import log_request

CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
ACCOUNT = sf_demo.UNIQUE_PHONE_ACCOUNT
AGENT_USER = sf_demo.AGENT_USERS[0]


def request(**kw) -> ActivityLogRequest:
    return log_request(**{"worker_attributes": {"email": AGENT_USER.email}, **kw})


@pytest.fixture(params=["Flex_Task_Sid__c", None], ids=["upsert", "find_or_create"])
def salesforce(request, clean_salesforce_sandbox) -> SalesforceActivities:
    connection = SalesforceConnection(clean_salesforce_sandbox.credentials())
    return SalesforceActivities(connection, fields=ActivityFieldConfig(external_id_field=request.param))


def stored(sandbox, activity_id: str) -> dict:
    [task] = [t for t in sandbox.records("Task") if t["Id"] == activity_id]
    return task


def log(salesforce: SalesforceActivities, req: ActivityLogRequest, attempt: int = 1) -> ActivityLogResult:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=attempt)
    return env.run(salesforce.log_activity, req)


def test_the_result_names_the_fields_salesforce_now_holds(salesforce, clean_salesforce_sandbox) -> None:
    result = log(salesforce, request())

    assert result.created
    task = stored(clean_salesforce_sandbox, result.activity_id)
    assert result.subject == "Completed Inbound voice at 2026-11-25 14:05 UTC"
    assert result.fields["WhoId"] == CONTACT.id and result.fields["OwnerId"] == AGENT_USER.id
    assert {name: task[name] for name in result.fields} == result.fields


def test_an_amend_answers_with_what_it_changed_and_keeps_the_task(salesforce, clean_salesforce_sandbox) -> None:
    req = request()
    first = log(salesforce, req)
    later = {
        "activity_id": first.activity_id,
        "related": RecordRef(id=ACCOUNT.id, type="Account"),
        "notes": Notes(disposition="Resolved", summary="Refund issued"),
    }
    amended = log(salesforce, req.model_copy(update=later))

    assert (amended.activity_id, amended.created) == (first.activity_id, False)
    assert "TaskSubtype" not in amended.fields  # create-only: never sent on an update
    assert amended.fields["WhatId"] == ACCOUNT.id and amended.fields["Description"] == "Refund issued"
    task = stored(clean_salesforce_sandbox, amended.activity_id)
    assert {name: task[name] for name in amended.fields} == amended.fields


def test_a_retry_amends_the_task_an_earlier_attempt_wrote(salesforce, clean_salesforce_sandbox) -> None:
    """The first attempt's write committed but its answer was lost; the second finds the Task and amends it."""
    req = request()
    first = log(salesforce, req)
    retried = log(salesforce, req.model_copy(update={"disposition": "Resolved"}), attempt=2)

    assert (retried.activity_id, retried.created) == (first.activity_id, False)
    assert "TaskSubtype" not in retried.fields
    keyed = [
        t for t in clean_salesforce_sandbox.records("Task") if req.task_sid in (t["Flex_Task_Sid__c"], t["CallObject"])
    ]
    assert [t["Id"] for t in keyed] == [first.activity_id]
    assert (keyed[0]["CallDisposition"], keyed[0]["TaskSubtype"]) == ("Resolved", "Call")
    assert "error:INVALID_FIELD_FOR_INSERT_UPDATE" not in clean_salesforce_sandbox.counters()


@pytest.fixture
def upserting(clean_salesforce_sandbox) -> SalesforceActivities:
    connection = SalesforceConnection(clean_salesforce_sandbox.credentials())
    return SalesforceActivities(connection, fields=ActivityFieldConfig(external_id_field="Flex_Task_Sid__c"))


def test_a_relog_of_a_task_whose_write_committed_updates_it(upserting, clean_salesforce_sandbox) -> None:
    """A relog is a new activity (attempt 1) after a failed log; that log's write may have committed meanwhile."""
    req = request()
    first = log(upserting, req)
    relogged = log(upserting, req.model_copy(update={"disposition": "Resolved"}))

    assert (relogged.activity_id, relogged.created) == (first.activity_id, False)
    assert "TaskSubtype" not in relogged.fields
    task = stored(clean_salesforce_sandbox, first.activity_id)
    assert {name: task[name] for name in relogged.fields} == relogged.fields and task["TaskSubtype"] == "Call"


def test_a_straggler_landing_after_the_lookup_is_answered_with_an_update(clean_salesforce_sandbox) -> None:
    """Attempt 2 finds no Task, then attempt 1's write, slow in flight, lands before attempt 2's own upsert."""
    req = request()
    creds = clean_salesforce_sandbox.credentials()
    straggler = connect(creds, make_session(creds.ca_bundle))
    landed: list[int] = []

    def attempt_one_lands(response, *args, **kwargs) -> None:
        lookup = response.request.method == "GET" and "Flex_Task_Sid__c" in unquote(response.request.url)
        if lookup and not landed and response.json()["totalSize"] == 0:
            body = {"Subject": "attempt 1", "Status": "Completed", "TaskSubtype": "Call", "WhoId": CONTACT.id}
            landed.append(straggler.Task.upsert(f"Flex_Task_Sid__c/{req.task_sid}", body))

    session = make_session(creds.ca_bundle)
    session.hooks["response"].append(attempt_one_lands)
    salesforce = SalesforceActivities(
        SalesforceConnection(creds, session), fields=ActivityFieldConfig(external_id_field="Flex_Task_Sid__c")
    )
    result = log(salesforce, req, attempt=2)

    assert landed == [201]
    [task] = [t for t in clean_salesforce_sandbox.records("Task") if t["Flex_Task_Sid__c"] == req.task_sid]
    assert (result.activity_id, result.created) == (task["Id"], False)
    assert "TaskSubtype" not in result.fields and {name: task[name] for name in result.fields} == result.fields
    assert task["TaskSubtype"] == "Call" and task["Subject"] == result.subject
    assert clean_salesforce_sandbox.counters()["error:INVALID_FIELD_FOR_INSERT_UPDATE"] == 1


def test_a_lead_converted_during_the_call_is_logged_on_the_contact_it_became(
    salesforce, clean_salesforce_sandbox, sf
) -> None:
    """Salesforce refuses a converted lead's id in WhoId (CANNOT_UPDATE_CONVERTED_LEAD); the person is the contact."""
    name = f"Convert {uuid.uuid4().hex[:8]}"
    lead = sf.Lead.create({"LastName": name, "Company": "Initech"})["id"]
    contact = sf.Contact.create({"LastName": name, "AccountId": ACCOUNT.id})["id"]
    req = request(related=RecordRef(id=lead, type="Lead"))
    first = log(salesforce, req)
    assert first.fields["WhoId"] == lead

    with clean_salesforce_sandbox.store.lock:
        clean_salesforce_sandbox.org.convert_lead(lead, contact, ACCOUNT.id, AGENT_USER.id)
    amended = log(salesforce, req.model_copy(update={"activity_id": first.activity_id, "disposition": "Converted"}))
    dialed_again = log(salesforce, request(related=RecordRef(id=lead, type="Lead")))

    assert (amended.activity_id, amended.fields["WhoId"]) == (first.activity_id, contact)
    assert stored(clean_salesforce_sandbox, first.activity_id)["CallDisposition"] == "Converted"
    assert dialed_again.created and stored(clean_salesforce_sandbox, dialed_again.activity_id)["WhoId"] == contact


def test_results_recorded_before_fields_were_returned_still_load() -> None:
    """Histories of workflows in flight hold the old, two-field result."""
    old = ActivityLogResult.model_validate({"activity_id": "00T000000000001AAA", "created": True})
    assert old.fields == {} and old.subject is None
