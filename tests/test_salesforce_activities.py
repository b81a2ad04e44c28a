"""SalesforceActivities in an ActivityEnvironment against the Salesforce sandbox: what `log_activity` answers is what
Salesforce holds afterwards, so a step after the log can use the answer instead of recomputing the fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from temporalio.testing import ActivityEnvironment

from activities.activity_fields import ActivityFieldConfig
from activities.models import ActivityLogRequest, ActivityLogResult
from activities.salesforce import SalesforceActivities
from activities.salesforce_connection import SalesforceConnection
from flexsf.models import Notes, RecordRef
from sandboxes.salesforce import demo as sf_demo

CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
ACCOUNT = sf_demo.UNIQUE_PHONE_ACCOUNT
AGENT_USER = sf_demo.AGENT_USERS[0]


def request(**kw) -> ActivityLogRequest:
    base = dict(
        # The session sandbox keeps its records between tests: a task of its own per test.
        task_sid="WT" + uuid.uuid4().hex,
        outcome="Completed",
        direction="Inbound",
        channel="voice",
        finished_at=datetime(2026, 11, 25, 14, 5, tzinfo=UTC),
        related=RecordRef(id=CONTACT.id, type="Contact"),
        worker_attributes={"email": AGENT_USER.email},
    )
    return ActivityLogRequest(**{**base, **kw})


@pytest.fixture(params=["Flex_Task_Sid__c", None], ids=["upsert", "find_or_create"])
def salesforce(request, clean_salesforce_sandbox) -> SalesforceActivities:
    connection = SalesforceConnection(clean_salesforce_sandbox.credentials())
    return SalesforceActivities(connection, fields=ActivityFieldConfig(external_id_field=request.param))


def stored(sandbox, activity_id: str) -> dict:
    [task] = [t for t in sandbox.records("Task") if t["Id"] == activity_id]
    return task


def log(salesforce: SalesforceActivities, req: ActivityLogRequest) -> ActivityLogResult:
    return ActivityEnvironment().run(salesforce.log_activity, req)


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


def test_results_recorded_before_fields_were_returned_still_load() -> None:
    """Histories of workflows in flight hold the old, two-field result."""
    old = ActivityLogResult.model_validate({"activity_id": "00T000000000001AAA", "created": True})
    assert old.fields == {} and old.subject is None
