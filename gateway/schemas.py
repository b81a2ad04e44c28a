"""Request and response bodies of the agent API (what `/docs` shows)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from flexsf.models import FeatureFlags, Notes, RecordRef, Stage, TaskView

TASK_SID_PATTERN = r"^WT[0-9a-fA-F]{32}$"
SALESFORCE_ID_PATTERN = r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$"

SalesforceId = Annotated[str, StringConstraints(pattern=SALESFORCE_ID_PATTERN)]
ShortText = Annotated[str, StringConstraints(max_length=255)]

# Caps of the copilot's notes; a body over one is answered 422 with the field's name in `loc`. Summary and disposition
# get what the Task fields they land in hold (Description 32,000, CallDisposition 255). Topics and sentiment go to
# custom fields each org sizes: room for what Agent Copilot sends (a short topic path, one word), and no more.
# One submission replaces the last (the workflow keeps one set of notes), so these also bound what a task holds.
NOTES_SUMMARY_MAX = 32_000
NOTES_DISPOSITION_MAX = 255
NOTES_TOPICS_MAX = 20
NOTES_TOPIC_MAX = 100
NOTES_SENTIMENT_MAX = 64


class RecordOut(BaseModel):
    id: str
    type: str | None = None
    name: str | None = None
    label: str = Field(description='"name - type", as the original plugin\'s dropdown shows it')
    person_contact_id: str | None = Field(None, description="For a person account: the contact activities relate to")

    @classmethod
    def of(cls, record: RecordRef | None) -> RecordOut | None:
        if record is None:
            return None
        return cls(
            id=record.id,
            type=record.type,
            name=record.name,
            label=record.label,
            person_contact_id=record.person_contact_id,
        )


class PopOut(BaseModel):
    search_term: str | None = None
    record: RecordOut | None = Field(None, description="The one record to open")
    candidates: list[RecordOut] = Field(default_factory=list, description="Several matches: the agent picks one")


class NotesOut(BaseModel):
    disposition: str | None = None
    summary: str | None = None
    topics: list[str] = Field(default_factory=list)
    sentiment: str | None = None


class TaskOut(BaseModel):
    """A Flex task as its workflow sees it."""

    task_sid: str
    stage: Stage
    direction: str | None = None
    channel: str | None = None
    worker_sid: str | None = Field(None, description="The worker who accepted the task")
    pop: PopOut
    record: RecordOut | None = Field(None, description="The record the task is (or will be) logged against")
    notes: NotesOut | None = Field(None, description="The copilot notes received")
    activity_id: str | None = Field(None, description="The Salesforce Task the call was logged as")
    outcome: str | None = Field(None, description="Completed or Canceled, once the task finished")
    error: str | None = None

    @classmethod
    def of(cls, view: TaskView) -> TaskOut:
        return cls(
            task_sid=view.task_sid,
            stage=view.stage,
            direction=view.direction,
            channel=view.channel,
            worker_sid=view.worker_sid,
            pop=PopOut(
                search_term=view.pop.search_term,
                record=RecordOut.of(view.pop.record),
                candidates=[RecordOut.of(c) for c in view.pop.candidates],
            ),
            record=RecordOut.of(view.record),
            notes=NotesOut(**view.notes.model_dump()) if view.notes else None,
            activity_id=view.activity_id,
            outcome=view.outcome,
            error=view.error,
        )


class RecordChoice(BaseModel):
    """The candidate the agent chose (15- or 18-character id)."""

    model_config = ConfigDict(extra="forbid")

    record_id: SalesforceId


class NotesIn(BaseModel):
    """What Flex's agent copilot hands over when the agent wraps up."""

    disposition: Annotated[str, StringConstraints(max_length=NOTES_DISPOSITION_MAX)] | None = None
    summary: Annotated[str, StringConstraints(max_length=NOTES_SUMMARY_MAX)] | None = None
    topics: list[Annotated[str, StringConstraints(max_length=NOTES_TOPIC_MAX)]] = Field(
        default_factory=list, max_length=NOTES_TOPICS_MAX
    )
    sentiment: Annotated[str, StringConstraints(max_length=NOTES_SENTIMENT_MAX)] | None = None

    def to_notes(self) -> Notes:
        return Notes(**self.model_dump())


class ClickToDialIn(BaseModel):
    """The payload Salesforce's Open CTI `onClickToDial` listener receives."""

    number: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    recordId: SalesforceId | None = None  # Open CTI's names
    objectType: ShortText | None = None
    recordName: ShortText | None = None
    accountId: SalesforceId | None = None
    contactId: SalesforceId | None = None
    personAccount: bool = False


class OutboundTaskAttributes(BaseModel):
    sfdcObjectId: str | None = None  # the task attribute names the workflow reads
    sfdcObjectType: str | None = None
    name: str | None = None


class StartOutboundCall(BaseModel):
    """The payload of Flex's `StartOutboundCall` action."""

    destination: str = Field(description="E.164")
    taskAttributes: OutboundTaskAttributes


class AgentConfig(FeatureFlags):
    """The `salesforce_integration` flags (Flex configuration, with the gateway's overrides)."""

    @classmethod
    def of(cls, flags: FeatureFlags) -> AgentConfig:
        return cls(**flags.model_dump())


class Problem(BaseModel):
    detail: str
