"""Pure logic: the Salesforce Task fields written for a finished Flex task."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from activities.activity_fields import ActivityFieldConfig, task_fields, update_fields
from activities.models import ActivityLogRequest
from flexsf.models import Notes, RecordRef

WHEN = datetime(2026, 11, 25, 14, 5, tzinfo=UTC)


def request(**kw) -> ActivityLogRequest:
    base = dict(task_sid="WT" + "0" * 32, outcome="Completed", direction="Inbound", channel="voice", finished_at=WHEN)
    return ActivityLogRequest(**{**base, **kw})


def test_inbound_voice_defaults() -> None:
    fields = task_fields(
        request(related=RecordRef(id="003000000000001AAA", type="Contact"), duration_s=42, call_sid="CA1"),
        ActivityFieldConfig(),
        owner_id="005000000000001AAA",
    )
    assert fields == {
        "Subject": "Completed Inbound voice at 2026-11-25 14:05 UTC",
        "Status": "Completed",
        "Priority": "Normal",
        "ActivityDate": "2026-11-25",
        "CallType": "Inbound",
        "Type": "Call",
        "TaskSubtype": "Call",
        "CallObject": "CA1",
        "CallDurationInSeconds": 42,
        "OwnerId": "005000000000001AAA",
        "WhoId": "003000000000001AAA",
    }


def test_what_id_for_accounts_and_cases_who_id_for_person_accounts_and_leads() -> None:
    cfg = ActivityFieldConfig()
    assert task_fields(request(related=RecordRef(id="001000000000001AAA", type="Account")), cfg, None)["WhatId"]
    assert task_fields(request(related=RecordRef(id="500000000000001AAA", type="Case")), cfg, None)["WhatId"]
    person = RecordRef(id="001000000000001AAA", type="Account", person_contact_id="003000000000009AAA")
    assert task_fields(request(related=person), cfg, None)["WhoId"] == "003000000000009AAA"
    untyped_lead = RecordRef(id="00Q000000000001EAA")
    assert task_fields(request(related=untyped_lead), cfg, None)["WhoId"] == "00Q000000000001EAA"
    assert "WhoId" not in task_fields(request(), cfg, None) and "WhatId" not in task_fields(request(), cfg, None)


def test_canceled_outbound_chat_with_copilot_notes_and_custom_fields() -> None:
    cfg = ActivityFieldConfig(priority="High", topics_field="Topics__c", sentiment_field="Sentiment__c")
    notes = Notes(disposition="Resolved", summary="s" * 40000, topics=["billing", "refund"], sentiment="positive")
    fields = task_fields(request(outcome="Canceled", direction="Outbound", channel="chat", notes=notes), cfg, None)
    assert fields["Subject"].startswith("Canceled Outbound chat at")
    assert fields["TaskSubtype"] == "Task" and fields["Priority"] == "High"
    assert "CallType" not in fields and "Type" not in fields  # call fields describe calls; the Subject has the rest
    assert fields["CallDisposition"] == "Resolved"
    assert len(fields["Description"]) == 32000
    assert fields["Topics__c"] == "billing, refund" and fields["Sentiment__c"] == "positive"


@pytest.mark.parametrize(
    ("precedence", "expected"),
    [("copilot", ("Resolved", "copilot summary")), ("task", ("Sale", "from flex"))],
)
def test_the_configured_source_wins_when_both_the_notes_and_the_task_say(precedence, expected) -> None:
    """The seed's default: the copilot's notes "are included in the payload", in place of the task's values."""
    both = request(
        disposition="Sale", description="from flex", notes=Notes(disposition="Resolved", summary="copilot summary")
    )
    fields = task_fields(both, ActivityFieldConfig(notes_precedence=precedence), None)
    assert (fields["CallDisposition"], fields["Description"]) == expected
    assert "TaskSubtype" not in update_fields(fields) and "Subject" in update_fields(fields)


@pytest.mark.parametrize("precedence", ["copilot", "task"])
def test_each_field_falls_back_to_the_other_source_when_the_preferred_has_none(precedence) -> None:
    half = request(disposition="Sale", notes=Notes(summary="copilot summary"))
    fields = task_fields(half, ActivityFieldConfig(notes_precedence=precedence), None)
    assert (fields["CallDisposition"], fields["Description"]) == ("Sale", "copilot summary")
    # No notes in the request (Flex's copilot_notes is off): the task's values, whatever the precedence.
    plain = task_fields(
        request(disposition="Sale", description="d"), ActivityFieldConfig(notes_precedence=precedence), None
    )
    assert (plain["CallDisposition"], plain["Description"]) == ("Sale", "d")


@pytest.mark.parametrize("direction", ["Inbound", "Outbound"])
def test_the_direction_is_the_call_type_and_type_is_the_orgs_activity_type(direction: str) -> None:
    """Type's standard values are Call, Email, Meeting, Other; Inbound/Outbound belong to the restricted CallType."""
    fields = task_fields(request(direction=direction), ActivityFieldConfig(), None)
    assert (fields["CallType"], fields["Type"]) == (direction, "Call")
    assert task_fields(request(direction=direction), ActivityFieldConfig(activity_type="Phone Call"), None)["Type"] == (
        "Phone Call"
    )
    for hidden in (None, ""):
        assert "Type" not in task_fields(request(), ActivityFieldConfig(activity_type=hidden), None)
