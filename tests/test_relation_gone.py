"""A lookup whose record is gone — the caller's contact deleted between the pop and the log, the agent's user
deactivated — costs the log that one field, not the log: the Task is written without it and the task says why.

Issue #13 item 6. Sandbox strictness first (what Salesforce answers), then the activity, then end to end.
"""

from __future__ import annotations

import uuid

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest
from temporalio.exceptions import ApplicationError

from activities.activity_fields import ActivityFieldConfig
from activities.salesforce import SalesforceActivities, gone_fields
from activities.salesforce_connection import SalesforceConnection
from flexsf.models import RecordRef, Stage
from flexsf.salesforce_ids import to_18
from flexsf.vocabulary import SALESFORCE_VALIDATION
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.test_metrics_logs import scrape, total
from tests.test_salesforce_activities import log, request, stored

AGENT = tw_demo.DEMO_WORKERS[0]
AGENT_USER = sf_demo.AGENT_USERS[0]
DROPPED = "flexsf_activity_log_fields_dropped_total"


def new_contact(sandbox, phone: str | None = None) -> str:
    # The session sandbox keeps its records between tests: each test deletes a contact of its own.
    return sandbox.create_record("Contact", {"LastName": f"Gone-{uuid.uuid4().hex[:8]}", "Phone": phone})


def never_existed(sobject_prefix: str) -> str:
    return to_18(f"{sobject_prefix}8dZZZZZZZZZZ")


@pytest.fixture
def inactive_agent(clean_salesforce_sandbox):
    """AGENT_USER deactivated for the test, active again after it (the session sandbox is shared)."""
    clean_salesforce_sandbox.set_user_active(AGENT_USER.id, False)
    try:
        yield AGENT_USER
    finally:
        clean_salesforce_sandbox.set_user_active(AGENT_USER.id, True)


# ---- the sandbox answers as Salesforce does -------------------------------------------------------------------------


def error_of(exc_info) -> dict:
    [error] = exc_info.value.content
    return error


def test_a_deleted_who_id_is_entity_is_deleted_and_an_unknown_one_stays_invalid_cross_reference(
    sf, clean_salesforce_sandbox
) -> None:
    contact = new_contact(clean_salesforce_sandbox)
    clean_salesforce_sandbox.delete_record(contact)

    with pytest.raises(SalesforceMalformedRequest) as deleted:
        sf.Task.create({"Subject": "call", "Status": "Completed", "WhoId": contact})
    assert error_of(deleted) == {"message": "entity is deleted", "errorCode": "ENTITY_IS_DELETED", "fields": ["WhoId"]}

    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.Task.create({"Subject": "call", "Status": "Completed", "WhatId": never_existed("001")})
    assert (error_of(unknown)["errorCode"], error_of(unknown)["fields"]) == ("INVALID_CROSS_REFERENCE_KEY", ["WhatId"])


def test_an_inactive_owner_is_refused(sf, inactive_agent) -> None:
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.Task.create({"Subject": "call", "Status": "Completed", "OwnerId": inactive_agent.id})
    assert error_of(refused) == {
        "message": f"operation performed with inactive user [{inactive_agent.id}] as owner of task",
        "errorCode": "INACTIVE_OWNER_OR_USER",
        "fields": [],
    }


# ---- the activity writes what stands --------------------------------------------------------------------------------


@pytest.fixture(params=["Flex_Task_Sid__c", None], ids=["upsert", "find_or_create"])
def by_user_id(request, clean_salesforce_sandbox) -> SalesforceActivities:
    """Owners from the worker's `sfdcUserId`, which (unlike the email look-up) does not skip inactive users."""
    connection = SalesforceConnection(clean_salesforce_sandbox.credentials())
    fields = ActivityFieldConfig(external_id_field=request.param)
    return SalesforceActivities(connection, fields=fields, owner_mapping="sfdcUserId")


def test_a_deleted_contact_is_left_out_and_the_task_written(by_user_id, clean_salesforce_sandbox) -> None:
    contact = new_contact(clean_salesforce_sandbox)
    clean_salesforce_sandbox.delete_record(contact)

    result = log(by_user_id, request(related=RecordRef(id=contact, type="Contact"), worker_attributes={}))

    task = stored(clean_salesforce_sandbox, result.activity_id)
    assert result.created and not task["WhoId"] and "WhoId" not in result.fields
    assert result.dropped == ["WhoId"] and "ENTITY_IS_DELETED" in result.reason


def test_an_inactive_owner_gives_the_task_to_the_integration_user(
    by_user_id, clean_salesforce_sandbox, inactive_agent
) -> None:
    req = request(worker_attributes={"sfdcUserId": inactive_agent.id})

    result = log(by_user_id, req)

    task = stored(clean_salesforce_sandbox, result.activity_id)
    assert task["OwnerId"] == sf_demo.INTEGRATION_USER_ID and task["WhoId"] == sf_demo.UNIQUE_PHONE_CONTACT.id
    assert result.dropped == ["OwnerId"] and "INACTIVE_OWNER_OR_USER" in result.reason


def test_an_amend_after_the_contact_was_deleted_keeps_the_task(by_user_id, clean_salesforce_sandbox) -> None:
    contact = new_contact(clean_salesforce_sandbox)
    req = request(related=RecordRef(id=contact, type="Contact"), worker_attributes={})
    first = log(by_user_id, req)
    clean_salesforce_sandbox.delete_record(contact)

    amended = log(by_user_id, req.model_copy(update={"activity_id": first.activity_id, "description": "later"}))

    assert (amended.activity_id, amended.dropped) == (first.activity_id, ["WhoId"])
    assert stored(clean_salesforce_sandbox, first.activity_id)["Description"] == "later"


def test_a_configuration_error_still_fails_the_log(by_user_id, clean_salesforce_sandbox) -> None:
    """An OwnerId that names no user is a wrong `sfdcUserId` mapping: someone must fix it, not a gone relation."""
    before = len(clean_salesforce_sandbox.records("Task"))

    with pytest.raises(ApplicationError) as failed:
        log(by_user_id, request(worker_attributes={"sfdcUserId": never_existed("005")}))

    assert failed.value.type == SALESFORCE_VALIDATION and failed.value.non_retryable
    assert "INVALID_CROSS_REFERENCE_KEY" in str(failed.value)
    assert len(clean_salesforce_sandbox.records("Task")) == before


@pytest.mark.parametrize(
    ("content", "gone"),
    [
        ([{"errorCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": ["WhatId"]}], {"WhatId"}),
        ([{"errorCode": "INACTIVE_OWNER_OR_USER", "message": "inactive user", "fields": []}], {"OwnerId"}),
        ([{"errorCode": "INVALID_CROSS_REFERENCE_KEY", "message": "x", "fields": ["OwnerId"]}], set()),
        ([{"errorCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}], set()),
        (
            [
                {"errorCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": ["WhoId"]},
                {"errorCode": "STRING_TOO_LONG", "message": "too long", "fields": ["Subject"]},
            ],
            set(),
        ),
    ],
    ids=["deleted-what", "inactive-owner", "unknown-owner", "unnamed", "with-another-error"],
)
def test_only_a_named_gone_lookup_is_written_around(content, gone) -> None:
    exc = SalesforceMalformedRequest("https://x/services/data/v62.0/sobjects/Task", 400, "Task", content)
    assert set(gone_fields(exc)) == gone


# ---- end to end -----------------------------------------------------------------------------------------------------


async def finished(stack, sid: str):
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    return await stack.result(sid)


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "0"}], indirect=True)
async def test_a_contact_deleted_between_the_pop_and_the_log_is_logged_unassociated(stack, worker_metrics_url) -> None:
    phone = f"+1 628 {uuid.uuid4().int % 10**7:07d}"
    contact = new_contact(stack.sf, phone)
    sid = stack.tw.lifecycle({"from": phone}, worker_sid=AGENT.sid)["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == contact
    stack.sf.delete_record(contact)

    view = await finished(stack, sid)

    assert view.stage == Stage.LOGGED_UNASSOCIATED
    assert "related record" in view.log_note and "ENTITY_IS_DELETED" in view.log_note
    [task] = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid]
    assert task["Id"] == view.activity_id and not task["WhoId"] and not task["WhatId"]
    assert task["OwnerId"] == AGENT_USER.id
    metrics = scrape(worker_metrics_url)
    assert total(metrics, DROPPED, field="WhoId", reason="ENTITY_IS_DELETED", task_queue=stack.task_queue) == 1


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_NOTES_GRACE_S": "0"}], indirect=True)
async def test_an_owner_deactivated_since_the_look_up_leaves_the_task_to_the_integration_user(
    stack, worker_metrics_url
) -> None:
    contact = sf_demo.UNIQUE_PHONE_CONTACT
    # The first task looks the agent's user up; the worker remembers it, as it does for its lifetime.
    first = stack.tw.lifecycle({"from": contact.phone}, worker_sid=AGENT.sid)["sid"]
    assert (await finished(stack, first)).stage == Stage.LOGGED
    stack.sf.set_user_active(AGENT_USER.id, False)
    try:
        sid = stack.tw.lifecycle({"from": contact.phone}, worker_sid=AGENT.sid)["sid"]
        view = await finished(stack, sid)
    finally:
        stack.sf.set_user_active(AGENT_USER.id, True)

    assert view.stage == Stage.LOGGED and view.error is None
    assert "integration user owns it" in view.log_note and "INACTIVE_OWNER_OR_USER" in view.log_note
    [task] = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid]
    assert task["OwnerId"] == sf_demo.INTEGRATION_USER_ID and task["WhoId"] == contact.id
    metrics = scrape(worker_metrics_url)
    assert total(metrics, DROPPED, field="OwnerId", reason="INACTIVE_OWNER_OR_USER", task_queue=stack.task_queue) == 1
