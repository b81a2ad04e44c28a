"""Typed inputs, events and state of the task workflow.

Every model has defaults for everything but its identity, so fields can be added without breaking
running histories.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer


class Stage(StrEnum):
    CREATED = "created"
    DISABLED = "disabled"
    ACCEPTED = "accepted"
    AWAITING_SELECTION = "awaiting_selection"
    IN_PROGRESS = "in_progress"
    LOGGING = "logging"
    # The org is near its daily API limit: the log waits (with backoff) rather than spend what searches need.
    WAITING_FOR_API_BUDGET = "waiting_for_api_budget"
    LOGGED = "logged"
    LOGGED_UNASSOCIATED = "logged_unassociated"
    NOT_LOGGED = "not_logged"
    FAILED = "failed"


class FeatureFlags(BaseModel):
    """Flex's `salesforce_integration` config; absent flags are off, as in the original plugin."""

    enabled: bool = False
    activity_logging: bool = False
    click_to_dial: bool = False
    copilot_notes: bool = False
    hide_crm_container: bool = False
    prevent_popout_during_call: bool = False
    screen_pop: bool = False


# The flags a task runs on when Flex's configuration cannot be read and this worker has never read it: the task is
# still screen-popped and logged, because a call with no Salesforce record is the failure this integration exists to
# prevent, and an admin who wants it off pins `FLEXSF_FEATURES__ENABLED=false` on the worker. Copilot notes stay off:
# their content goes to Salesforce only when Flex says so.
FALLBACK_FLAGS = FeatureFlags(enabled=True, activity_logging=True, screen_pop=True)

# Where a task's flags came from: Flex's configuration, the last one this worker read, or FALLBACK_FLAGS.
FlagsSource = Literal["flex", "last_seen", "defaults"]


class TaskPolicy(BaseModel):
    """Everything the workflow decides with, snapshotted once at start so a config change never
    changes a task mid-flight."""

    flags: FeatureFlags = Field(default_factory=FeatureFlags)
    selection_timeout: timedelta = timedelta(minutes=5)
    notes_grace: timedelta = timedelta(minutes=10)
    lost_event_window: timedelta = timedelta(minutes=30)
    repair_window: timedelta = timedelta(days=7)
    # History events after which a waiting workflow continues as new (it also does when Temporal suggests it).
    history_events_limit: int = 2000
    # First wait of a log held back by the org's API budget (doubles per check, up to 30 minutes).
    api_budget_retry: timedelta = timedelta(minutes=1)
    # Log tasks no agent accepted (canceled in the queue, abandoned), as runs before `log-handled-tasks-only` did.
    log_unhandled_tasks: bool = False
    flags_source: FlagsSource = "flex"
    # Why Flex's configuration could not be used (None when it was).
    flags_error: str | None = None


class RecordRef(BaseModel):
    """A Salesforce record the task relates to (or could)."""

    id: str
    type: str | None = None
    name: str | None = None
    # Set for person accounts: activities relate to the person's contact.
    person_contact_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name or self.id} - {self.type or 'Record'}"


class TaskEvent(BaseModel):
    """One TaskRouter event callback, as the gateway (or a reconciliation) saw it."""

    sid: str
    event_type: str
    task_sid: str
    timestamp_ms: int = 0
    task_attributes: dict = Field(default_factory=dict)
    task_assignment_status: str | None = None
    task_channel: str | None = None
    task_age: int | None = None
    reason: str | None = None
    worker_sid: str | None = None
    worker_name: str | None = None
    worker_attributes: dict = Field(default_factory=dict)
    reservation_sid: str | None = None


class TaskWorkflowInput(BaseModel):
    task_sid: str
    # Set for an operator's relog of a closed task (`flexsf relog`): this run only amends the log that run wrote.
    relog_of: RelogSeed | None = None
    # Set when a long-waiting run continued as new: where it was, so this run carries on from there.
    carried: CarriedState | None = None


class Notes(BaseModel):
    """What Flex's agent copilot submits when the agent wraps up."""

    disposition: str | None = None
    summary: str | None = None
    topics: list[str] = Field(default_factory=list)
    sentiment: str | None = None
    # Set only by Agent Copilot's wrap-up notes webhook (gateway/routes/copilot.py): which path brought the notes,
    # the note's sid (KQ…) and its event (note_created / note_updated), so the workflow can tell a late or repeated
    # delivery of the same note from new notes. The agent's browser leaves them unset.
    source: str | None = None
    note_sid: str | None = None
    note_event: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset_provenance(self, handler: SerializerFunctionWrapHandler) -> dict:
        # The browser's notes serialize exactly as before these fields existed (payloads, histories, API answers).
        dumped = handler(self)
        return {k: v for k, v in dumped.items() if k not in _PROVENANCE or v is not None}


_PROVENANCE = {"source", "note_sid", "note_event"}


class RecordSelection(BaseModel):
    worker_sid: str
    record_id: str


class PopView(BaseModel):
    """What the agent's browser should open: one record, or candidates to choose from, or nothing."""

    search_term: str | None = None
    record: RecordRef | None = None
    candidates: list[RecordRef] = Field(default_factory=list)


# The workflow update the agent's bridge long-polls for the pop (flexsf.delivery.await_pop).
POP_UPDATE = "await_pop"


class PopWait(BaseModel):
    """One long-poll for the pop: who asks (only the worker who accepted the task is answered) and how long the
    workflow may hold the answer back before saying it is not decided yet."""

    worker_sid: str
    wait: timedelta = timedelta(seconds=20)


class PopAnswer(BaseModel):
    """The pop once decided (one record, candidates, none, skipped, failed, or the task finished first); `decided`
    False when the wait ended before that."""

    decided: bool
    stage: Stage
    pop: PopView = Field(default_factory=PopView)


class TaskView(BaseModel):
    """The workflow's state as the gateway and ops see it (the query result)."""

    task_sid: str
    stage: Stage
    flags: FeatureFlags
    direction: str | None = None
    channel: str | None = None
    worker_sid: str | None = None
    pop: PopView = Field(default_factory=PopView)
    record: RecordRef | None = None
    notes: Notes | None = None
    activity_id: str | None = None
    outcome: str | None = None
    error: str | None = None
    # Kept apart from `error`, which a successful log clears: a task logged on fallback flags says so for good.
    flags_source: FlagsSource = "flex"
    flags_error: str | None = None
    # What the written log had to leave out and why (a related record deleted, an inactive owner); None when nothing.
    log_note: str | None = None
    # When the task finished, as the last log wrote it (its Subject and ActivityDate): a relog of the closed workflow
    # writes the same. None before a log, and in results recorded before it was kept.
    finished_at: datetime | None = None
    # Seconds from the agent's acceptance to wrap-up (or the finish): the call activity's CallDurationInSeconds.
    handle_time_s: int | None = None
    # TaskRouter's TaskAge at the finish (queue, handling and wrap-up together), kept for reports that want it.
    task_age_s: int | None = None
    # Why the log's owner is the integration user rather than the agent who handled the task (FLEXSF_OWNER_MAPPING
    # found no Salesforce user for the worker); None when the agent owns it, or the mapping is `none`.
    owner_unmapped: str | None = None


class RelogSeed(BaseModel):
    """What a relog of a closed task starts its new run from: the closed run's result, and the operator's reason
    (kept in the new run's history)."""

    view: TaskView
    reason: str | None = None


class RelogRequest(BaseModel):
    """An operator's request to write the task's activity log again (`flexsf relog`)."""

    reason: str | None = None


class RelogResult(BaseModel):
    """What the relog did: the stage and Salesforce Task afterwards, and the error if Salesforce refused again."""

    stage: Stage
    activity_id: str | None = None
    error: str | None = None


class CarriedFacts(BaseModel):
    """What TaskRouter had told the run that continued as new (workflows.task_facts.TaskFacts)."""

    seen: list[str] = Field(default_factory=list)
    event_count: int = 0
    attributes: dict = Field(default_factory=dict)
    attributes_at: int = -1
    channel: str | None = None
    accepted: TaskEvent | None = None
    wrapped: TaskEvent | None = None
    finished: TaskEvent | None = None


class CarriedState(BaseModel):
    """A task workflow's state across continue-as-new: everything its next stage decides with."""

    stage: Stage
    policy: TaskPolicy
    facts: CarriedFacts = Field(default_factory=CarriedFacts)
    popped: bool = False
    pop: PopView = Field(default_factory=PopView)
    record: RecordRef | None = None
    notes: Notes | None = None
    notes_submissions: int = 0
    version: int = 0
    error: str | None = None
    # Runs so far, this one included: shown on the task so ops know why its history starts mid-way.
    runs: int = 1
    # When the task's first run started.
    started_at: datetime | None = None


TaskWorkflowInput.model_rebuild()
CarriedState.model_rebuild()
