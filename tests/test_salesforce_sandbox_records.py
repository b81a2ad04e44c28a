"""sobject REST through simple-salesforce: create/get/update/delete/upsert and Salesforce's error codes."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from simple_salesforce import (
    Salesforce,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)
from simple_salesforce.format import format_external_id

from flexsf.salesforce_client import connect, make_session
from flexsf.salesforce_ids import is_valid_id, object_type_for_id
from sandboxes.salesforce import SalesforceSandbox
from sandboxes.salesforce.demo import (
    CONVERTED_LEAD,
    DEMO_CASE,
    DUPLICATE_LEGACY_ID,
    INTEGRATION_USER_ID,
    PERSON_ACCOUNT,
    PERSON_ACCOUNT_CONTACT_ID,
    UNIQUE_PHONE_ACCOUNT,
    UNIQUE_PHONE_CONTACT,
)
from sandboxes.salesforce.schema import LEGACY_ID_FIELD


def _call_task(**extra: object) -> dict:
    return {
        "Subject": "Inbound call",
        "Status": "Completed",
        "TaskSubtype": "Call",
        "CallType": "Inbound",
        "CallDurationInSeconds": 42,
        "WhoId": UNIQUE_PHONE_CONTACT.id,
        "ActivityDate": "2024-05-01",
        **extra,
    }


def _error(caught: pytest.ExceptionInfo) -> dict:
    content = caught.value.content
    assert isinstance(content, list) and len(content) == 1
    return content[0]


def test_create_get_update_delete_task(sf: Salesforce) -> None:
    created = sf.Task.create(_call_task())
    assert created["success"] is True and created["errors"] == []
    assert is_valid_id(created["id"]) and len(created["id"]) == 18 and object_type_for_id(created["id"]) == "Task"
    task = sf.Task.get(created["id"])
    assert task["attributes"]["type"] == "Task"
    assert task["Priority"] == "Normal"  # required, defaulted
    assert task["OwnerId"] == INTEGRATION_USER_ID
    assert task["IsClosed"] is True and task["IsDeleted"] is False
    assert task["CreatedDate"].endswith("+0000")
    assert "Phone" not in task
    assert sf.Task.update(created["id"], {"CallDisposition": "Resolved", "Description": "x" * 32000}) == 204
    assert sf.Task.get(created["id"][:15])["CallDisposition"] == "Resolved"  # 15-char ids work too
    assert sf.Task.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Task.get(created["id"])


def test_upsert_created_then_updated(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    sid = f"WT{uuid.uuid4().hex}"
    path = f"Flex_Task_Sid__c/{format_external_id('Flex_Task_Sid__c', sid)[len('Flex_Task_Sid__c/') :]}"
    response = sf.Task.upsert(path, _call_task(), raw_response=True)
    assert response.status_code == 201
    assert response.json()["created"] is True
    update = {k: v for k, v in _call_task(CallDisposition="Follow-up").items() if k != "TaskSubtype"}
    again = sf.Task.upsert(path, update, raw_response=True)
    assert again.status_code == 200
    assert again.json() == {"id": response.json()["id"], "success": True, "errors": [], "created": False}
    record = sf.Task.get_by_custom_id("Flex_Task_Sid__c", sid)
    assert record["CallDisposition"] == "Follow-up"
    # TaskSubtype is create-only: an upsert that updates may not carry it, not even repeating the stored value.
    for subtype in ("Call", "Task"):
        with pytest.raises(SalesforceMalformedRequest) as caught:
            sf.Task.upsert(path, _call_task(TaskSubtype=subtype))
        assert _error(caught)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
        assert _error(caught)["fields"] == ["TaskSubtype"]
    matching = [t for t in clean_salesforce_sandbox.records("Task") if t["Flex_Task_Sid__c"] == sid]
    assert len(matching) == 1 and matching[0]["TaskSubtype"] == "Call"
    assert clean_salesforce_sandbox.counters()["sobject_upsert:Task"] == 4


def test_update_by_id_refuses_create_only_fields(sf: Salesforce) -> None:
    created = sf.Task.create(_call_task())
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Task.update(created["id"], {"TaskSubtype": "Call", "CallDisposition": "x"})
    assert _error(caught)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert _error(caught)["fields"] == ["TaskSubtype"]
    assert sf.Task.get(created["id"])["CallDisposition"] is None  # nothing of the refused update was written


def test_upsert_answers_before_api_46_have_no_created_flag_and_an_update_no_body(
    clean_salesforce_sandbox: SalesforceSandbox,
) -> None:
    creds = replace(clean_salesforce_sandbox.credentials(), api_version="45.0")
    sf = connect(creds, make_session(creds.ca_bundle))
    path = f"Flex_Task_Sid__c/WT{uuid.uuid4().hex}"
    created = sf.Task.upsert(path, _call_task(), raw_response=True)
    assert created.status_code == 201 and set(created.json()) == {"id", "success", "errors"}
    updated = sf.Task.upsert(path, {"CallDisposition": "Follow-up"}, raw_response=True)
    assert (updated.status_code, updated.content) == (204, b"")


def test_upsert_several_matches_is_300(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMoreThanOneRecord) as caught:
        sf.Contact.upsert(f"{LEGACY_ID_FIELD.name}/{DUPLICATE_LEGACY_ID}", {"Title": "Dup"})
    assert caught.value.status == 300
    assert len(caught.value.content) == 2
    assert all(url.startswith("/services/data/v62.0/sobjects/Contact/003") for url in caught.value.content)


@pytest.mark.parametrize("field", ["No_Such_Field__c", "Subject"])
def test_upsert_on_unknown_or_non_external_field_is_404(sf: Salesforce, field: str) -> None:
    with pytest.raises(SalesforceResourceNotFound) as caught:
        sf.Task.upsert(f"{field}/abc", _call_task())
    assert _error(caught)["errorCode"] == "NOT_FOUND"


def test_unique_external_id_refuses_duplicates(sf: Salesforce) -> None:
    sid = f"WT{uuid.uuid4().hex}"
    sf.Task.create(_call_task(Flex_Task_Sid__c=sid))
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Task.create(_call_task(Flex_Task_Sid__c=sid))
    assert _error(caught)["errorCode"] == "DUPLICATE_VALUE"


@pytest.mark.parametrize(
    ("values", "code", "fields"),
    [
        ({"Phone": "+14155550100"}, "INVALID_FIELD", ["Phone"]),
        ({"CallType": "Sideways"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", ["CallType"]),
        ({"Subject": "s" * 256}, "STRING_TOO_LONG", ["Subject"]),
        ({"CallDisposition": "d" * 256}, "STRING_TOO_LONG", ["CallDisposition"]),
        ({"CallObject": "o" * 256}, "STRING_TOO_LONG", ["CallObject"]),
        ({"Description": "d" * 32001}, "STRING_TOO_LONG", ["Description"]),
        ({"WhoId": UNIQUE_PHONE_ACCOUNT.id}, "FIELD_INTEGRITY_EXCEPTION", ["WhoId"]),
        ({"WhatId": UNIQUE_PHONE_CONTACT.id}, "FIELD_INTEGRITY_EXCEPTION", ["WhatId"]),
        ({"WhoId": "003nonsense"}, "MALFORMED_ID", ["WhoId"]),
        ({"Status": None}, "REQUIRED_FIELD_MISSING", ["Status"]),
        ({"IsClosed": True}, "INVALID_FIELD_FOR_INSERT_UPDATE", ["IsClosed"]),
        ({"WhoId": CONVERTED_LEAD.id}, "CANNOT_UPDATE_CONVERTED_LEAD", ["WhoId"]),
    ],
)
def test_task_validation_errors(sf: Salesforce, values: dict, code: str, fields: list[str]) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Task.create(_call_task(**values))
    assert caught.value.status == 400
    error = _error(caught)
    assert error["errorCode"] == code
    assert error["fields"] == fields
    assert error["message"]


def test_without_flex_task_sid_field_it_is_an_unknown_field() -> None:
    with SalesforceSandbox(seed_demo=False, custom_fields=()) as sandbox:
        sf = connect(sandbox.credentials())
        with pytest.raises(SalesforceMalformedRequest) as caught:
            sf.Task.create({"Subject": "x", "Flex_Task_Sid__c": "WT1"})
        assert _error(caught)["errorCode"] == "INVALID_FIELD"
        with pytest.raises(SalesforceResourceNotFound):
            sf.Task.upsert("Flex_Task_Sid__c/WT1", {"Subject": "x"})
        describe = sf.Task.describe()
        assert "Flex_Task_Sid__c" not in {f["name"] for f in describe["fields"]}


def test_describe_shows_external_id(sf: Salesforce) -> None:
    fields = {f["name"]: f for f in sf.Task.describe()["fields"]}
    assert fields["Flex_Task_Sid__c"]["externalId"] and fields["Flex_Task_Sid__c"]["unique"]
    assert fields["CallType"]["restrictedPicklist"]
    assert [v["value"] for v in fields["CallType"]["picklistValues"]] == ["Inbound", "Internal", "Outbound"]
    assert "Phone" not in fields


def test_contact_name_is_computed_and_read_only(sf: Salesforce) -> None:
    created = sf.Contact.create({"FirstName": "Ada", "LastName": "Lovelace", "Phone": "(415) 555-0199"})
    assert sf.Contact.get(created["id"])["Name"] == "Ada Lovelace"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Contact.update(created["id"], {"Name": "Someone Else"})
    assert _error(caught)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Contact.create({"FirstName": "No"})
    assert _error(caught) == {
        "message": "Required fields are missing: [LastName]",
        "errorCode": "REQUIRED_FIELD_MISSING",
        "fields": ["LastName"],
    }


def test_ids_in_urls(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Contact.get(UNIQUE_PHONE_ACCOUNT.id)  # an Account id on the Contact URL
    assert _error(caught)["errorCode"] == "MALFORMED_ID"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Contact.get(UNIQUE_PHONE_CONTACT.id[:15] + "ZZZ")  # bad checksum
    assert _error(caught)["errorCode"] == "MALFORMED_ID"
    missing = UNIQUE_PHONE_CONTACT.id[:10] + "zzzzz"
    with pytest.raises(SalesforceResourceNotFound) as caught:
        sf.Contact.get(missing)
    assert _error(caught)["errorCode"] == "NOT_FOUND"


def test_unknown_sobject_and_old_version_are_404(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    with pytest.raises(SalesforceResourceNotFound) as caught:
        sf.Widget__c.create({"Name": "x"})
    assert _error(caught)["errorCode"] == "NOT_FOUND"
    response = sf.session.get(
        f"{sf.base_url.replace('v62.0', 'v30.0')}sobjects/Contact/",  # retired in Summer '25
        headers={"Authorization": f"Bearer {sf.session_id}"},
    )
    assert response.status_code == 404
    assert response.json()[0]["errorCode"] == "NOT_FOUND"


def test_person_account_has_person_contact(sf: Salesforce) -> None:
    account = sf.Account.get(PERSON_ACCOUNT.id)
    assert account["IsPersonAccount"] is True
    assert account["PersonContactId"] == PERSON_ACCOUNT_CONTACT_ID
    assert account["Name"] == PERSON_ACCOUNT.name
    contact = sf.Contact.get(PERSON_ACCOUNT_CONTACT_ID)
    assert contact["AccountId"] == PERSON_ACCOUNT.id
    assert contact["MobilePhone"] == PERSON_ACCOUNT.phone
    created = sf.Account.create({"FirstName": "Lena", "LastName": "Fischer", "PersonMobilePhone": "+1 415 555 0198"})
    new = sf.Account.get(created["id"])
    assert new["IsPersonAccount"] is True
    assert sf.Contact.get(new["PersonContactId"])["Name"] == "Lena Fischer"


def test_case_fixture(sf: Salesforce) -> None:
    case = sf.Case.get(DEMO_CASE.id)
    assert case["Subject"] == DEMO_CASE.name
    assert case["ContactId"] == UNIQUE_PHONE_CONTACT.id
    assert case["CaseNumber"].isdigit()
