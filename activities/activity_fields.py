"""Map the facts of a finished Flex task to the fields of one Salesforce Task (the call activity).

Pure and unit-tested. The defaults follow the original plugin's `saveLog` payload; the configurable parts are in
`ActivityFieldConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from activities.models import ActivityLogRequest
from flexsf.salesforce_ids import object_type_for_id

# Salesforce's own limits on these Task fields; longer values are cut rather than refused.
_LIMITS = {"Subject": 255, "CallDisposition": 255, "CallObject": 255, "Description": 32000}
# TaskSubtype can only be set on create: an update that sends it is refused, an upsert that matches a Task included.
CREATE_ONLY_FIELDS = frozenset({"TaskSubtype"})
WHO_TYPES = frozenset({"Contact", "Lead"})
# Which source of CallDisposition and Description wins when both have one: the copilot's notes (the original plugin
# uses them instead of the task's `conversations` values) or the task's attributes.
NotesPrecedence = Literal["copilot", "task"]


@dataclass(frozen=True)
class ActivityFieldConfig:
    priority: str = "Normal"
    external_id_field: str | None = None
    topics_field: str | None = None
    sentiment_field: str | None = None
    # Task Type of a voice call: a value of the org's Type picklist (standard: Call, Email, Meeting, Other), which an
    # org may restrict. None or "": Type is not sent, for an integration user that field-level security keeps from it.
    activity_type: str | None = "Call"
    notes_precedence: NotesPrecedence = "copilot"


def subject(req: ActivityLogRequest) -> str:
    when = req.finished_at.strftime("%Y-%m-%d %H:%M UTC")
    return f"{req.outcome} {req.direction} {req.channel} at {when}"


def relation_fields(req: ActivityLogRequest) -> dict[str, str]:
    """WhoId for a Contact or Lead (a person account through its contact), WhatId for anything else."""
    record = req.related
    if record is None:
        return {}
    if record.person_contact_id:
        return {"WhoId": record.person_contact_id}
    kind = record.type or object_type_for_id(record.id)
    return {"WhoId": record.id} if kind in WHO_TYPES else {"WhatId": record.id}


def disposition_and_description(req: ActivityLogRequest, precedence: NotesPrecedence) -> tuple[str | None, str | None]:
    """CallDisposition and Description from the copilot's notes and the task's `conversations.outcome`/`content`,
    field by field: the preferred source where it has a value, else the other. The request carries notes only when
    Flex's `copilot_notes` flag is on."""
    notes = req.notes
    copilot = (notes.disposition, notes.summary) if notes else (None, None)
    task = (req.disposition, req.description)
    first, second = (copilot, task) if precedence == "copilot" else (task, copilot)
    return first[0] or second[0], first[1] or second[1]


def task_fields(req: ActivityLogRequest, config: ActivityFieldConfig, owner_id: str | None) -> dict:
    """The direction of a call is its CallType (Inbound/Outbound); Type is the kind of activity. Other channels carry
    neither: the Call* fields describe phone calls, and a chat logged with a CallType counts as a call in every report
    grouped by call type. Their direction is in the Subject."""
    notes = req.notes
    voice = req.channel == "voice"
    disposition, description = disposition_and_description(req, config.notes_precedence)
    fields: dict = {
        "Subject": subject(req),
        "Status": "Completed",
        "Priority": config.priority,
        "ActivityDate": req.finished_at.date().isoformat(),
        "CallType": req.direction if voice else None,
        "Type": (config.activity_type or None) if voice else None,
        "TaskSubtype": "Call" if voice else "Task",
        "CallObject": req.call_sid,
        "CallDisposition": disposition,
        "Description": description,
        "CallDurationInSeconds": req.duration_s,
        "OwnerId": owner_id,
        **relation_fields(req),
    }
    if notes and config.topics_field and notes.topics:
        fields[config.topics_field] = ", ".join(notes.topics)
    if notes and config.sentiment_field and notes.sentiment:
        fields[config.sentiment_field] = notes.sentiment
    for name, limit in _LIMITS.items():
        if isinstance(fields.get(name), str):
            fields[name] = fields[name][:limit]
    return {k: v for k, v in fields.items() if v is not None}


def update_fields(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k not in CREATE_ONLY_FIELDS}
