"""Inputs and outputs of the activities (one model in, one model out)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from flexsf.models import Notes, RecordRef, TaskEvent


class SearchRequest(BaseModel):
    task_sid: str
    term: str


class SearchResult(BaseModel):
    records: list[RecordRef] = Field(default_factory=list)


class SaveRecordRequest(BaseModel):
    task_sid: str
    record: RecordRef


class SaveRecordResult(BaseModel):
    written: bool
    attempts: int = 1
    task_gone: bool = False


class ActivityLogRequest(BaseModel):
    """The facts of a finished Flex task; the worker's configuration maps them to Task fields."""

    task_sid: str
    outcome: Literal["Completed", "Canceled"]
    direction: Literal["Inbound", "Outbound"]
    channel: str
    finished_at: datetime
    reason: str | None = None
    call_sid: str | None = None
    disposition: str | None = None
    description: str | None = None
    duration_s: int | None = None
    notes: Notes | None = None
    worker_sid: str | None = None
    worker_attributes: dict = Field(default_factory=dict)
    related: RecordRef | None = None
    # Set when amending a Task this workflow already wrote.
    activity_id: str | None = None


class ActivityLogResult(BaseModel):
    """The Salesforce Task written, and what was written to it, so a later step need not recompute it."""

    activity_id: str
    created: bool
    # The field values sent (on an amend, without the create-only ones); Subject, WhoId/WhatId, OwnerId … Empty in
    # results recorded before they were returned.
    fields: dict = Field(default_factory=dict)
    # Lookups left out because Salesforce refused them as gone (WhoId/WhatId: the record was deleted; OwnerId: an
    # inactive user, so the integration user owns the Task), and Salesforce's words for why. Empty in older results.
    dropped: list[str] = Field(default_factory=list)
    reason: str | None = None
    # Why the agent does not own the Task (FLEXSF_OWNER_MAPPING found no Salesforce user for the worker), naming the
    # mapping, never the worker's email or id; None when they do, nobody accepted the task, or the mapping is `none`.
    owner_unmapped: str | None = None

    @property
    def subject(self) -> str | None:
        return self.fields.get("Subject")


class ReconcileRequest(BaseModel):
    task_sid: str
    # TaskRouter's Events list covers only the last 15 minutes unless told where to start.
    since: datetime | None = None
    # Event sids the workflow has applied already: they come back as nothing, so a task open for days does not copy
    # its whole Events list into history every lost-event window.
    seen: list[str] = Field(default_factory=list)
    # The timestamp of the attributes the workflow holds: older attributes are not sent again.
    attributes_at: int = -1


class ReconcileResult(BaseModel):
    """What TaskRouter says happened to a task whose events went quiet."""

    status: Literal["active", "finished", "missing"]
    events: list[TaskEvent] = Field(default_factory=list)


# ---- the sweep (workflows/sweep_workflow.py, activities/sweep.py) ----------------------------------------------------


class SweepInput(BaseModel):
    """The sweep workflow's arguments, as its Schedule holds them (workflows/sweep_schedule.py)."""

    # How far before the last cursor each sweep reads again, in seconds (events listed late, clocks apart).
    overlap_s: float = 120
    # How far back a sweep reads when no earlier run left a cursor, in seconds.
    first_lookback_s: float = 3600


class SweepRequest(BaseModel):
    since: datetime
    task_queue: str


class SweepResult(BaseModel):
    """What one sweep did. The Schedule hands the last completed run's result to the next run, whose window starts at
    `cursor` minus the overlap: the cursor is durable without any store of our own."""

    # Where the next sweep reads from (before the overlap): when this one started listing, or held back to the
    # earliest task it could not start, so the next one tries it again.
    cursor: datetime | None = None
    since: datetime | None = None
    # When the earliest task it could not start finished (None: it started every one it had to).
    failed_since: datetime | None = None
    # Tasks it started a workflow for (the first thousand; `recovered_count` counts them all).
    recovered: list[str] = Field(default_factory=list)
    recovered_count: int = 0
    failed: int = 0
    # TaskRouter Events-list calls (pages) it made.
    api_calls: int = 0
    # Running task workflows in a repairable stage (failed, waiting_for_api_budget) when it ran; -1: not countable.
    repairable: int = 0
    # Why the sweep itself failed (its window is read again by the next one).
    error: str | None = None
