"""Request and response bodies of the agent API (what `/docs` shows)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from flexsf.models import FeatureFlags, Notes, PopAnswer, PopView, RecordRef, Stage, TaskView
from flexsf.no_match_pop import NoMatchPop
from flexsf.task_events import clean_text

TASK_SID_PATTERN = r"^WT[0-9a-fA-F]{32}$"
SALESFORCE_ID_PATTERN = r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$"

SalesforceId = Annotated[str, StringConstraints(pattern=SALESFORCE_ID_PATTERN)]
TaskSidText = Annotated[str, StringConstraints(pattern=TASK_SID_PATTERN)]
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

# The pop's long-poll: how long one request may wait for the decision (the workflow's own bound is a minute).
POP_WAIT_DEFAULT_S = 20.0
POP_WAIT_MAX_S = 50.0


# No body of the agent API nests deeper than 3 levels (notes → topics → a topic); below this depth anything is
# invalid, and is dropped before validation so that the 422 echoing it stays shallow (FastAPI's encoder recurses).
MAX_BODY_DEPTH = 8
# Python's JSON parser takes NaN and Infinity, which JSON has not and a 422 cannot echo (its encoder refuses them).
# Such a number becomes this, which no field of these bodies takes (no body has a dict-valued field).
NOT_A_JSON_NUMBER = {"not a JSON number": True}


def _readable(value: Any) -> Any:
    """`value` (decoded JSON) with every lone surrogate in its text as U+FFFD, keys included, NaN and Infinity as
    NOT_A_JSON_NUMBER, and what is nested deeper than MAX_BODY_DEPTH as null. A loop, not recursion: the input's
    depth is the sender's choice."""
    holder = [value]
    pending: list[tuple[list | dict, Any, int]] = [(holder, 0, 1)]
    while pending:
        container, key, depth = pending.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = clean_text(item)
        elif isinstance(item, float) and not math.isfinite(item):
            container[key] = dict(NOT_A_JSON_NUMBER)
        elif isinstance(item, list | dict) and depth > MAX_BODY_DEPTH:
            container[key] = None
        elif isinstance(item, list):
            copy = list(item)
            container[key] = copy
            pending.extend((copy, index, depth + 1) for index in range(len(copy)))
        elif isinstance(item, dict):
            copied = {clean_text(k) if isinstance(k, str) else k: v for k, v in item.items()}
            container[key] = copied
            pending.extend((copied, name, depth + 1) for name in copied)
    return holder[0]


class RequestBody(BaseModel):
    """A body the agent API reads, made safe to validate and to echo in a 422. JSON may escape a lone surrogate
    (`"\\ud800"`), which Python decodes into a str no UTF-8 encoder takes: left in, it fails the 422 that echoes it,
    or the Temporal payload it is sent in, as a 500. Every one becomes U+FFFD before validation (as the TaskRouter
    webhook does), so such text is refused or carried like any other; NaN and Infinity, and nesting no field
    accepts, are refused without being echoed (tests/test_hostile_input.py)."""

    @model_validator(mode="before")
    @classmethod
    def _readable_text(cls, data: Any) -> Any:
        return _readable(data)


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

    @classmethod
    def of(cls, pop: PopView) -> PopOut:
        return cls(
            search_term=pop.search_term,
            record=RecordOut.of(pop.record),
            candidates=[RecordOut.of(c) for c in pop.candidates],
        )


class ScreenPopOut(BaseModel):
    """The arguments of one Open CTI `screenPop` call, for the bridge to make as they are."""

    type: Literal["NEW_RECORD_MODAL", "SEARCH"] = Field(description="An `sforce.opencti.SCREENPOP_TYPE` key")
    params: dict[str, Any]


def _no_match_pop(pop: PopView, no_match: NoMatchPop | None, region: str) -> ScreenPopOut | None:
    searched_in_vain = pop.search_term is not None and pop.record is None and not pop.candidates
    found = no_match.screen_pop(pop.search_term, region) if no_match and searched_in_vain else None
    return ScreenPopOut(**found) if found else None


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
    no_match_pop: ScreenPopOut | None = Field(
        None,
        description="What to open when the search found no record (FLEXSF_SEARCH_NO_MATCH_POP); None when it found "
        "one or more, searched nothing, or the setting is `none`",
    )
    activity_id: str | None = Field(None, description="The Salesforce Task the call was logged as")
    outcome: str | None = Field(None, description="Completed or Canceled, once the task finished")
    error: str | None = None

    @classmethod
    def of(cls, view: TaskView, no_match: NoMatchPop | None = None, region: str = "US") -> TaskOut:
        return cls(
            task_sid=view.task_sid,
            stage=view.stage,
            direction=view.direction,
            channel=view.channel,
            worker_sid=view.worker_sid,
            pop=PopOut.of(view.pop),
            record=RecordOut.of(view.record),
            no_match_pop=_no_match_pop(view.pop, no_match, region),
            notes=NotesOut(**view.notes.model_dump()) if view.notes else None,
            activity_id=view.activity_id,
            outcome=view.outcome,
            error=view.error,
        )


class PopAnswerOut(BaseModel):
    """The answer to the pop's long-poll: once `decided`, what to open (as `TaskOut` has it); else ask again."""

    decided: bool = Field(description="False when the wait ended before the pop was decided: ask again")
    stage: Stage
    pop: PopOut = Field(default_factory=PopOut)
    no_match_pop: ScreenPopOut | None = Field(
        None, description="What to open when the search found no record (as on `TaskOut`)"
    )

    @classmethod
    def of(cls, answer: PopAnswer, no_match: NoMatchPop | None = None, region: str = "US") -> PopAnswerOut:
        return cls(
            decided=answer.decided,
            stage=answer.stage,
            pop=PopOut.of(answer.pop),
            no_match_pop=_no_match_pop(answer.pop, no_match, region),
        )


class PopRequest(RequestBody):
    """The pop's long-poll asked in a body (`POST /agent/pop`): one URL for every task, so a browser's CORS preflight
    is cached once for all of them (the sid in a path makes every task's URL, and its preflight, a new one)."""

    model_config = ConfigDict(extra="forbid")

    task_sid: TaskSidText = Field(description="The Flex (TaskRouter) task sid, WT…")
    # A JSON number: `true` or `"20"` is a mistake of the caller's, not a wait.
    wait_s: float = Field(
        POP_WAIT_DEFAULT_S,
        gt=0,
        le=POP_WAIT_MAX_S,
        strict=True,
        description="How long to wait for the decision, in seconds",
    )


class RecordChoice(RequestBody):
    """The candidate the agent chose (15- or 18-character id)."""

    model_config = ConfigDict(extra="forbid")

    record_id: SalesforceId


class NotesIn(RequestBody):
    """What Flex's agent copilot hands over when the agent wraps up."""

    disposition: Annotated[str, StringConstraints(max_length=NOTES_DISPOSITION_MAX)] | None = None
    summary: Annotated[str, StringConstraints(max_length=NOTES_SUMMARY_MAX)] | None = None
    topics: list[Annotated[str, StringConstraints(max_length=NOTES_TOPIC_MAX)]] = Field(
        default_factory=list, max_length=NOTES_TOPICS_MAX
    )
    sentiment: Annotated[str, StringConstraints(max_length=NOTES_SENTIMENT_MAX)] | None = None

    def to_notes(self) -> Notes:
        return Notes(**self.model_dump())


class ClickToDialIn(RequestBody):
    """The payload Salesforce's Open CTI `onClickToDial` listener receives."""

    number: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    recordId: SalesforceId | None = None  # Open CTI's names
    objectType: ShortText | None = None
    recordName: ShortText | None = None
    accountId: SalesforceId | None = None
    contactId: SalesforceId | None = None
    personAccount: bool = False


class OutboundTaskAttributes(BaseModel):
    """Attributes for the outbound task; the click-to-dial route leaves out the unset ones rather than send nulls."""

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
