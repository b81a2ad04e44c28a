"""One durable workflow per Flex task: screen pop, record association, notes, exactly one activity log.

Reads as the business process: `run` walks the stages, one small method each. Handlers only record facts; the
stages act on them. Every wait has a timer and a documented outcome (docs/how-a-task-moves.md).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.interfaces import PolicySteps, SalesforceSteps, TwilioSteps
    from activities.models import (
        ActivityLogRequest,
        ActivityLogResult,
        ReconcileRequest,
        SaveRecordRequest,
        SearchRequest,
    )
    from flexsf import search_attributes as sa
    from flexsf.models import (
        FALLBACK_FLAGS,
        POP_UPDATE,
        CarriedState,
        FeatureFlags,
        Notes,
        PopAnswer,
        PopView,
        PopWait,
        RecordRef,
        RecordSelection,
        RelogRequest,
        RelogResult,
        RelogSeed,
        Stage,
        TaskEvent,
        TaskPolicy,
        TaskView,
        TaskWorkflowInput,
    )
    from flexsf.salesforce_ids import same_id
    from flexsf.search_terms import first_search_term
    from flexsf.vocabulary import (
        FINISHED_EVENTS,
        NOTES_PER_TASK_MAX,
        NOTES_UPDATE,
        RESERVATION_ACCEPTED,
        SALESFORCE_API_BUDGET,
        TASK_CANCELED,
        TASK_COMPLETED,
        WORKFLOW_TYPE,
    )
    from workflows import policies
    from workflows.task_facts import TaskFacts

LOGGED_STAGES = {Stage.LOGGED, Stage.LOGGED_UNASSOCIATED}
RELATION_FIELDS = {"WhoId", "WhatId"}
# The longest a log held back by the org's API budget waits before looking again.
API_BUDGET_MAX_WAIT = timedelta(minutes=30)
# Runs from before these patches named channels as TaskRouter's unique name (unknown: voice), logged every finished
# task and measured the call by the task's age; their histories replay so.
CHANNEL_NAMES_PATCH = "task-channel-names"
HANDLED_ONLY_PATCH = "log-handled-tasks-only"
HANDLE_TIME_PATCH = "handle-time-duration"
# Runs from before it never indexed the interaction sids: their histories have no such upsert.
INDEX_INTERACTION_PATCH = "index-interaction-sids"
# Only the worker who accepted the task hears its pop (the long-poll's refusal).
NOT_THIS_WORKERS_TASK = "NotThisWorkersTask"
# The longest one long-poll may hold the update open: each is a timer in the history.
POP_WAIT_MAX = timedelta(minutes=1)
# What of the notes reaches the log; equal content from a repeated delivery changes nothing.
_NOTES_CONTENT = {"disposition", "summary", "topics", "sentiment"}


@workflow.defn(name=WORKFLOW_TYPE)
class FlexTaskWorkflow:
    @workflow.init
    def __init__(self, input: TaskWorkflowInput) -> None:
        self._task_sid = input.task_sid
        self._stage = Stage.CREATED
        self._policy: TaskPolicy | None = None
        self._facts = TaskFacts()
        self._pop = PopView()
        self._record: RecordRef | None = None
        self._notes: Notes | None = None
        self._notes_submissions = 0
        # Every change the log must reflect bumps this; the log remembers the version it wrote.
        self._version = 0
        self._logged_version = -1
        self._activity_id: str | None = None
        # What the last log wrote (its fields), for a step that follows the log.
        self._logged: ActivityLogResult | None = None
        self._error: str | None = None
        self._log_note: str | None = None
        self._finished_at: datetime | None = None
        self._retry_requested = False
        self._awaiting_repair = False
        # One Salesforce write at a time: the process and an operator's relog never race on the same Task.
        self._log_lock = asyncio.Lock()
        self._log_attempts = 0
        self._indexed: dict[str, str] = {}
        # The pop is known (one record, candidates, none, skipped, failed): what the long-poll waits for.
        self._pop_decided = False
        # Whether the screen pop ran (a continued run must not pop again), and how many runs this task has had.
        self._popped = False
        self._runs = 1
        # When the task's first run started: TaskRouter's Events list is read from (an hour before) it.
        self._started_at = workflow.info().start_time
        # Set by a write the org's API budget held back (its reason); the log waits and tries again.
        self._held: str | None = None
        # Which channel names this run uses (CHANNEL_NAMES_PATCH), decided at the first command that carries one.
        self._channel_names: bool | None = None
        # Why the last log's owner is not the agent (FLEXSF_OWNER_MAPPING found no user for the worker).
        self._owner_unmapped: str | None = None
        meter = workflow.metric_meter()
        self._pops = meter.create_counter(
            "flexsf_screen_pops_total", "Screen pops by outcome (single, several, none, by_id, skipped, error)"
        )
        self._selections = meter.create_counter(
            "flexsf_selections_total", "Records chosen by agents among several candidates"
        )
        self._logs = meter.create_counter(
            "flexsf_activity_logs_total", "Activity log writes by outcome (logged, logged_unassociated, failed)"
        )
        self._relogs = meter.create_counter("flexsf_relogs_total", "Operator relogs by resulting stage")
        self._budget_waits = meter.create_counter(
            "flexsf_api_budget_waits_total", "Waits of activity logs held back by the org's daily API budget"
        )
        self._continued = meter.create_counter(
            "flexsf_task_continued_as_new_total", "Task workflows that continued as new to keep their history short"
        )

    # ---- the process -------------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: TaskWorkflowInput) -> TaskView:
        if input.relog_of is not None:
            return await self._relog_closed(input.relog_of)
        if input.carried is not None:
            self._carry_on(input.carried)
        else:
            self._set_stage(Stage.CREATED)
            await self._load_policy(input)
            if not self._flags.enabled:
                self._set_stage(Stage.DISABLED)
                # A long-poll that started the workflow is answered (nothing to pop) before it closes.
                await workflow.wait_condition(workflow.all_handlers_finished)
                return self.view()
        await self._until(lambda: self._facts.accepted is not None or self._facts.finished is not None)
        if self._facts.accepted is not None and not self._popped:
            await self._screen_pop()
        await self._until(lambda: self._facts.finished is not None)
        if self._facts.accepted is None and self._facts.finished.event_type == TASK_COMPLETED:
            await self._recover_acceptance()
        if self._flags.activity_logging and self._logs_this_task():
            await self._await_selection()
            await self._log_activity()
            await self._amend_during_grace()
        else:
            self._set_stage(Stage.NOT_LOGGED)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.view()

    def _logs_this_task(self) -> bool:
        """The seed logs the task an agent was handling; one canceled or abandoned in the queue is nobody's call, and
        would be a Task owned by the integration user related to nothing. FLEXSF_LOG_UNHANDLED_TASKS logs those too."""
        if self._facts.accepted is not None or self._policy.log_unhandled_tasks:
            return True
        if self._facts.finished.event_type == TASK_COMPLETED:
            # Only an assigned task can be completed: an agent handled it, though its acceptance was lost and the
            # Events list could not tell who (a refused reconcile). Logged without an owner rather than lost.
            return True
        if not workflow.patched(HANDLED_ONLY_PATCH):
            return True
        self._log_note = "not logged: no agent accepted the task (FLEXSF_LOG_UNHANDLED_TASKS=true logs such tasks)"
        return False

    async def _relog_closed(self, seed: RelogSeed) -> TaskView:
        """An operator's relog of a closed task: its new run amends the Task the closed run wrote, from that run's
        result, so repeating it changes nothing. No pop and no waiting: the task is long over."""
        self._restore(seed.view)
        error = await self._write_log()
        if error is not None:
            # The Task written earlier still stands; the refusal is reported, as a relog of an open workflow does.
            self._error = f"relog refused: {error}"
            self._set_stage(seed.view.stage)
        self._relogs.add(1, {"stage": self._stage.value})
        return self.view()

    def _restore(self, view: TaskView) -> None:
        """The facts the log is written from, as the closed run's result states them. What the result does not keep
        (disposition, description, duration, call leg, owner) is left out of the amend, so Salesforce keeps it."""
        self._policy = TaskPolicy(flags=view.flags, flags_source=view.flags_source, flags_error=view.flags_error)
        finished_type = next((t for t, outcome in FINISHED_EVENTS.items() if outcome == view.outcome), TASK_CANCELED)
        shared = {
            "task_sid": self._task_sid,
            "task_channel": view.channel,
            "task_attributes": {"direction": (view.direction or "Inbound").lower()},
        }
        if view.worker_sid:
            self._facts.apply(
                TaskEvent(sid="relog-accepted", event_type=RESERVATION_ACCEPTED, worker_sid=view.worker_sid, **shared)
            )
        finished_ms = round(view.finished_at.timestamp() * 1000) if view.finished_at else 0
        self._facts.apply(TaskEvent(sid="relog-finished", event_type=finished_type, timestamp_ms=finished_ms, **shared))
        self._pop = view.pop
        self._record = view.record
        self._notes = view.notes
        self._activity_id = view.activity_id
        self._log_note = view.log_note

    def _carry_on(self, carried: CarriedState) -> None:
        """Resume a run that continued as new: its facts, its pop and its stage, as it left them."""
        self._policy = carried.policy
        self._facts = TaskFacts.carried(carried.facts)
        self._popped = carried.popped
        self._pop_decided = carried.popped  # a run continues as new only while waiting, never mid-pop
        self._pop = carried.pop
        self._record = carried.record
        self._notes = carried.notes
        self._notes_submissions = carried.notes_submissions
        self._version = carried.version
        self._error = carried.error
        self._runs = carried.runs
        self._started_at = carried.started_at or self._started_at
        self._set_stage(carried.stage)

    def _carried(self) -> CarriedState:
        return CarriedState(
            stage=self._stage,
            policy=self._policy,
            facts=self._facts.carry(),
            popped=self._popped,
            pop=self._pop,
            record=self._record,
            notes=self._notes,
            notes_submissions=self._notes_submissions,
            version=self._version,
            error=self._error,
            runs=self._runs + 1,
            started_at=self._started_at,
        )

    def _history_is_long(self) -> bool:
        info = workflow.info()
        limit = self._policy.history_events_limit  # loaded before the first wait, as the window beside it is
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= limit

    async def _continue_as_new(self) -> None:
        """A task open for days (a lost completion, a long chat) waits in windows; each leaves events behind. Past
        the limit, the same task carries on in a fresh run, so its history never nears Temporal's limits."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._continued.add(1)
        workflow.continue_as_new(TaskWorkflowInput(task_sid=self._task_sid, carried=self._carried()))

    async def _load_policy(self, input: TaskWorkflowInput) -> None:
        try:
            self._policy = await workflow.execute_activity_method(
                PolicySteps.load_task_policy, input, summary="load Flex feature flags", **policies.READ
            )
        except ActivityError as err:
            # The activity falls back on Flex failures itself; this is for the rest (no worker serving it within the
            # window, a bug). Older runs failed here, and a query of one must replay to that failure.
            if not workflow.patched("policy-load-fallback"):
                raise
            # The worker's timers are unknown here too: the model's defaults stand in for them.
            self._policy = TaskPolicy(flags=FALLBACK_FLAGS, flags_source="defaults", flags_error=str(err.cause or err))

    async def _screen_pop(self) -> None:
        self._popped = True
        self._set_stage(Stage.ACCEPTED)
        attributes = self._facts.attributes
        given = self._facts.record_from_attributes()
        if self._facts.direction() == "Outbound" or not self._flags.screen_pop or given is not None:
            # Click-to-dial and IVR data dips carry the record already; never search for it.
            self._record = given
            self._pop = PopView(record=given) if given and self._facts.direction() == "Inbound" else PopView()
            self._count_pop("by_id" if given is not None else "skipped")
            self._pop_decided = True
            self._set_stage(Stage.IN_PROGRESS)
            return
        term = first_search_term(attributes)
        if term is None:
            self._count_pop("skipped")
            self._pop_decided = True
            self._set_stage(Stage.IN_PROGRESS)
            return
        try:
            found = await workflow.execute_activity_method(
                SalesforceSteps.search_salesforce,
                SearchRequest(task_sid=self._task_sid, term=term),
                # History is plaintext: name the attribute searched, never the caller's name or number.
                summary=f"search Salesforce by the task's `{self._facts.term_source()}`",
                **policies.SEARCH,
            )
        except ActivityError as err:
            # A pop that cannot happen must not cost the task its log: carry on without a record.
            self._error = f"screen pop search failed: {err.cause or err}"
            self._count_pop("error")
            self._pop_decided = True
            self._set_stage(Stage.IN_PROGRESS)
            return
        records = found.records
        self._pop = PopView(
            search_term=term,
            record=records[0] if len(records) == 1 else None,
            candidates=records if len(records) > 1 else [],
        )
        self._pop_decided = True
        self._count_pop("single" if len(records) == 1 else "several" if records else "none")
        if len(records) == 1:
            await self._associate(records[0])
            self._set_stage(Stage.IN_PROGRESS)
        elif records and self._flags.activity_logging:
            self._set_stage(Stage.AWAITING_SELECTION)
        else:
            self._set_stage(Stage.IN_PROGRESS)

    async def _recover_acceptance(self) -> None:
        """A completed task was accepted by someone: when that callback was lost, TaskRouter's Events list still
        knows who (the log's owner) and the pop that never ran finds the record to relate the log to."""
        await self._reconcile()
        if self._facts.accepted is not None and not self._popped:
            await self._screen_pop()

    async def _await_selection(self) -> None:
        if self._stage != Stage.AWAITING_SELECTION:
            return
        try:
            await workflow.wait_condition(lambda: self._record is not None, timeout=self._policy.selection_timeout)
        except TimeoutError:
            pass  # logged without a relation; a later selection amends it (see _amend_during_grace)

    async def _log_activity(self) -> None:
        wait = self._policy.api_budget_retry
        while True:
            error = await self._write_log()
            if error is None:
                return
            if self._held is not None:
                await self._wait_for_budget(wait)
                wait = min(wait * 2, API_BUDGET_MAX_WAIT)
                continue
            self._error = error
            self._set_stage(Stage.FAILED)
            if not await self._await_repair():
                return

    async def _wait_for_budget(self, wait: timedelta) -> None:
        """Near the org's daily API limit the calls left are for screen pops (an agent waits for those); the log
        is durable and can wait. Visible on the task, and in metrics, while it does."""
        self._error = f"{self._held}; next look in {wait.total_seconds():.0f} s"
        self._set_stage(Stage.WAITING_FOR_API_BUDGET)
        self._budget_waits.add(1)
        await workflow.sleep(wait)

    async def _write_log(self) -> str | None:
        """One write of the log (create, or amend the Task already written); the error when Salesforce refused.
        A write the org's API budget held back sets `_held` (and is not counted as a failed log)."""
        async with self._log_lock:
            self._held = None
            self._set_stage(Stage.LOGGING)
            version = self._version
            request = self._log_request()
            try:
                result = await workflow.execute_activity_method(
                    SalesforceSteps.log_activity,
                    request,
                    summary=f"amend Salesforce Task {request.activity_id}"
                    if request.activity_id
                    else "create the Salesforce Task",
                    **policies.WRITE,
                )
            except ActivityError as err:
                if isinstance(err.cause, ApplicationError) and err.cause.type == SALESFORCE_API_BUDGET:
                    self._held = err.cause.message
                    return self._held
                self._logs.add(1, {"outcome": "failed"})
                return str(err.cause or err)
            finally:
                self._log_attempts += 1
            self._activity_id = result.activity_id
            self._finished_at = request.finished_at
            self._logged = result
            self._logged_version = version
            self._error = None
            self._log_note = self._note_on(result)
            self._owner_unmapped = result.owner_unmapped
            unrelated = self._related() is None or RELATION_FIELDS & set(result.dropped)
            self._set_stage(Stage.LOGGED_UNASSOCIATED if unrelated else Stage.LOGGED)
            self._logs.add(1, {"outcome": self._stage.value})
            return None

    async def _amend_during_grace(self) -> None:
        """Notes or a selection that arrive shortly after the log amend the same Salesforce Task."""
        if self._activity_id is None:
            return
        deadline = workflow.now() + self._policy.notes_grace
        while True:
            remaining = (deadline - workflow.now()).total_seconds()
            if remaining <= 0:
                return
            try:
                await workflow.wait_condition(
                    lambda: self._version != self._logged_version, timeout=timedelta(seconds=remaining)
                )
            except TimeoutError:
                return
            await self._log_activity()
            if self._stage == Stage.FAILED:
                return

    async def _await_repair(self) -> bool:
        """A failed log waits for an operator's `relog` update rather than disappearing."""
        self._retry_requested = False
        self._awaiting_repair = True
        try:
            await workflow.wait_condition(lambda: self._retry_requested, timeout=self._policy.repair_window)
        except TimeoutError:
            return self._retry_requested  # a request that came with the timer's expiry still counts
        finally:
            self._awaiting_repair = False
        return True

    async def _associate(self, record: RecordRef) -> None:
        """The workflow holds the record for the log; writing it on the task is for Flex and other readers, so a
        failure to write is recorded, not fatal."""
        self._record = record
        self._version += 1
        self._index()
        try:
            await workflow.execute_activity_method(
                TwilioSteps.save_record_on_task,
                SaveRecordRequest(task_sid=self._task_sid, record=record),
                summary=f"write {record.type or 'record'} {record.id} on the task's attributes",
                **policies.WRITE,
            )
        except ActivityError as err:
            self._error = f"writing the record on the task failed: {err.cause or err}"

    async def _until(self, done) -> None:
        """Wait for events; when they go quiet for a window, ask TaskRouter what happened."""
        while not done():
            seen = self._facts.event_count
            try:
                await workflow.wait_condition(
                    lambda seen=seen: done() or self._facts.gone or self._facts.event_count != seen,
                    timeout=self._policy.lost_event_window,
                )
                if done() or not self._facts.gone:
                    continue
            except TimeoutError:
                pass
            await self._reconcile()
            if not done() and self._history_is_long() and workflow.patched("continue-as-new"):
                await self._continue_as_new()

    async def _reconcile(self) -> None:
        try:
            result = await workflow.execute_activity_method(
                TwilioSteps.reconcile_task,
                ReconcileRequest(
                    task_sid=self._task_sid,
                    since=self._started_at - timedelta(hours=1),
                    seen=sorted(self._facts.seen),
                    attributes_at=self._facts.attributes_at,
                ),
                summary="read the task's TaskRouter Events list",
                **policies.READ,
            )
        except ActivityError as err:
            # Older runs failed here, and a query of one must replay to that failure.
            if not workflow.patched("reconcile-failure-waits"):
                raise
            # A failed workflow answers every later event "ignored": better to say why and keep waiting, for the
            # callbacks to resume or the next window's attempt (a credential fixed meanwhile) to succeed.
            self._error = f"reading the task's TaskRouter Events failed: {err.cause or err}"
            self._facts.gone = False
            return
        for event in result.events:
            self._facts.apply(event)
        if result.status != "active" and self._facts.finished is None:
            # Purged or unknown to TaskRouter, with no completion on record: it ended without telling us how.
            self._facts.finished = TaskEvent(
                sid=f"reconciled-{self._task_sid}",
                event_type=TASK_CANCELED,
                task_sid=self._task_sid,
                timestamp_ms=self._now_ms(),
                reason="ended without a completion event",
            )
        self._facts.gone = False

    # ---- handlers: record facts, decide nothing ----------------------------------------------------------------

    @workflow.signal
    def task_event(self, event: TaskEvent) -> None:
        self._facts.apply(event)

    @workflow.signal
    def submit_notes(self, notes: Notes) -> None:
        """Notes as older gateways sent them: a signal cannot be refused, so the gateway now uses `add_notes`."""
        self._keep_notes(notes)

    @workflow.update(name=NOTES_UPDATE)
    def add_notes(self, notes: Notes) -> int:
        """The copilot's notes (each submission replaces the last); answers how many this task has had. A refused
        submission (over the cap) never reaches the history."""
        self._keep_notes(notes)
        return self._notes_submissions

    @add_notes.validator
    def _validate_notes(self, notes: Notes) -> None:
        if self._notes_submissions >= NOTES_PER_TASK_MAX:
            raise ValueError(
                f"this task already had {NOTES_PER_TASK_MAX} notes submissions, the most one task takes; "
                "the last one stands"
            )

    def _keep_notes(self, notes: Notes) -> None:
        self._notes_submissions += 1
        if notes.source is not None and not _replaces(notes, self._notes):
            return  # a late or repeated webhook delivery: what the task holds is as new or newer
        self._notes = notes
        if self._policy is None or self._flags.copilot_notes:
            self._version += 1

    @workflow.update
    async def select_record(self, selection: RecordSelection) -> RecordRef:
        if self._pop_pending():
            # The choice came with (or before) the search result it was made from: one workflow task can hold both,
            # and the validator runs before the result is applied. Decide once the pop is known.
            await workflow.wait_condition(lambda: not self._pop_pending())
        record = self._candidate(selection.record_id)
        if record is None:
            raise ApplicationError(
                f"{selection.record_id} is not one of the candidate records", type="NotACandidate", non_retryable=True
            )
        self._selections.add(1, {"when": "after_log" if self._activity_id else "before_log"})
        if self._stage == Stage.AWAITING_SELECTION:
            self._set_stage(Stage.IN_PROGRESS)
        await self._associate(record)
        return record

    @select_record.validator
    def _validate_selection(self, selection: RecordSelection) -> None:
        if not self._pop.candidates and not self._pop_pending():
            raise ValueError("this task has no candidate records to choose from")
        if self._facts.accepted is None or selection.worker_sid != self._facts.accepted.worker_sid:
            raise ValueError("only the worker who accepted the task can choose its record")
        if not self._pop_pending() and self._candidate(selection.record_id) is None:
            raise ValueError(f"{selection.record_id} is not one of the candidate records")

    @workflow.update(name=POP_UPDATE)
    async def await_pop(self, request: PopWait) -> PopAnswer:
        """The agent's bridge long-polls the pop: answered the moment it is decided (the update completes in the
        workflow task that decided it), or undecided once `request.wait` has passed, when the bridge asks again."""
        if not self._pop_known():
            try:
                await workflow.wait_condition(self._pop_known, timeout=request.wait)
            except TimeoutError:
                if self._facts.event_count == 0:
                    # Nothing from TaskRouter yet: its callbacks are late or lost, or the sid names no task (anyone
                    # signed in may ask about any sid). Ask TaskRouter now, not after the lost-event window: a task
                    # it does not know ends here, unlogged, and one it does is caught up.
                    self._facts.gone = True
                return PopAnswer(decided=False, stage=self._stage)
        # Asked before anyone accepted: the acceptance that decided the pop says whose it is.
        self._refuse_other_worker(request)
        return PopAnswer(decided=True, stage=self._stage, pop=self._pop)

    @await_pop.validator
    def _validate_pop_wait(self, request: PopWait) -> None:
        if not timedelta(0) < request.wait <= POP_WAIT_MAX:
            raise ValueError(f"the wait must be more than 0 and at most {POP_WAIT_MAX.total_seconds():.0f} s")
        self._refuse_other_worker(request)

    def _refuse_other_worker(self, request: PopWait) -> None:
        if self._facts.accepted is not None and request.worker_sid != self._facts.accepted.worker_sid:
            raise ApplicationError(
                "only the worker who accepted the task hears its pop", type=NOT_THIS_WORKERS_TASK, non_retryable=True
            )

    def _pop_known(self) -> bool:
        """Decided, or never to be: the flags turned the integration off, or the task finished first."""
        return self._pop_decided or self._stage == Stage.DISABLED or self._facts.finished is not None

    def _pop_pending(self) -> bool:
        """Accepted, and the screen pop not decided yet (the flags still loading, or the search under way)."""
        return self._facts.accepted is not None and self._stage in (Stage.CREATED, Stage.ACCEPTED)

    def _candidate(self, record_id: str) -> RecordRef | None:
        return next((c for c in self._pop.candidates if same_id(c.id, record_id)), None)

    @workflow.update
    async def relog(self, request: RelogRequest) -> RelogResult:
        """Write the log again: a failed one is retried, a written one is amended in place
        (same Salesforce Task, so repeating this changes nothing). Answers once the write is done."""
        if self._stage == Stage.FAILED:
            before = self._log_attempts
            self._retry_requested = True  # the process, waiting in _await_repair, writes it
            await workflow.wait_condition(lambda: self._log_attempts > before and self._stage != Stage.LOGGING)
        else:
            previous = self._stage
            error = await self._write_log()
            if error is not None:
                # The Task written earlier still stands; the refusal is reported, not turned into a failed log.
                self._error = f"relog refused: {error}"
                self._set_stage(previous)
        self._relogs.add(1, {"stage": self._stage.value})
        return RelogResult(stage=self._stage, activity_id=self._activity_id, error=self._error)

    @relog.validator
    def _validate_relog(self, request: RelogRequest) -> None:
        if self._facts.finished is None:
            raise ValueError(f"the task has not finished (stage {self._stage.value}); relog is for finished tasks")
        if self._stage == Stage.FAILED and not self._awaiting_repair:
            raise ValueError("the repair window of this failed log has passed")
        if self._stage not in LOGGED_STAGES | {Stage.FAILED}:
            raise ValueError(
                f"nothing to relog at stage {self._stage.value}; only a logged or failed task can be logged again"
            )

    @workflow.query
    def view(self) -> TaskView:
        return TaskView(
            task_sid=self._task_sid,
            stage=self._stage,
            flags=self._flags,
            direction=self._facts.direction(),
            channel=self._channel(decide=False),
            worker_sid=self._facts.worker_sid,
            pop=self._pop,
            record=self._related(),
            notes=self._notes,
            activity_id=self._activity_id,
            outcome=self._facts.outcome,
            error=self._error,
            flags_source=self._policy.flags_source if self._policy else "flex",
            flags_error=self._policy.flags_error if self._policy else None,
            log_note=self._log_note,
            finished_at=self._finished_at,
            handle_time_s=self._facts.handle_time_s(),
            task_age_s=self._facts.task_age_s(),
            owner_unmapped=self._owner_unmapped,
        )

    # ---- facts -------------------------------------------------------------------------------------------------

    @property
    def _flags(self) -> FeatureFlags:
        return self._policy.flags if self._policy else FeatureFlags()

    def _related(self) -> RecordRef | None:
        return self._record or self._facts.record_from_attributes()

    def _channel(self, decide: bool = True) -> str:
        """The task's channel name; `decide=False` (a query, which issues no command) reads it without deciding."""
        if self._channel_names is None and decide:
            self._channel_names = workflow.patched(CHANNEL_NAMES_PATCH)
        return self._facts.legacy_channel_name() if self._channel_names is False else self._facts.channel_name()

    def _duration_s(self) -> int | None:
        """CallDurationInSeconds: the time the agent handled the call, not its time in the queue or wrap-up."""
        if not workflow.patched(HANDLE_TIME_PATCH):
            return self._facts.finished.task_age
        return self._facts.handle_time_s()

    @staticmethod
    def _note_on(result: ActivityLogResult) -> str | None:
        if not result.dropped:
            return None
        left_out = []
        if RELATION_FIELDS & set(result.dropped):
            left_out.append("the related record (gone from Salesforce)")
        if "OwnerId" in result.dropped:
            left_out.append("the agent as owner (the integration user owns it)")
        return f"logged without {' and '.join(left_out)}: {result.reason}"

    def _log_request(self) -> ActivityLogRequest:
        facts, finished, accepted = self._facts, self._facts.finished, self._facts.accepted
        channel = self._channel()
        return ActivityLogRequest(
            task_sid=self._task_sid,
            outcome=facts.outcome or "Canceled",
            direction=facts.direction(),
            channel=channel,
            finished_at=datetime.fromtimestamp(finished.timestamp_ms / 1000, UTC)
            if finished.timestamp_ms
            else workflow.now(),
            reason=finished.reason,
            call_sid=facts.worker_call_leg(),
            disposition=facts.conversations().get("outcome"),
            description=facts.conversations().get("content"),
            duration_s=self._duration_s() if channel == "voice" else None,
            notes=self._notes if self._flags.copilot_notes else None,
            worker_sid=facts.worker_sid,
            worker_attributes=accepted.worker_attributes if accepted else {},
            related=self._related(),
            activity_id=self._activity_id,
        )

    def _set_stage(self, stage: Stage) -> None:
        self._stage = stage
        record = self._related()
        workflow.set_current_details(
            f"**{stage.value}** · task {self._task_sid}"
            + (f" · record {record.type or ''} {record.id}" if record else "")
            + (f" · Salesforce Task {self._activity_id}" if self._activity_id else "")
            + (f" · run {self._runs} (continued as new to keep its history short)" if self._runs > 1 else "")
        )
        self._index()

    def _index(self) -> None:
        """Upsert the search attributes that changed, so visibility queries find the task by what is known now."""
        record = self._related()
        known = {
            sa.FLEX_TASK_SID: self._task_sid,
            sa.FLEX_STAGE: self._stage.value,
            sa.FLEX_WORKER_SID: self._facts.worker_sid,
            sa.FLEX_CHANNEL: self._channel() if self._facts.event_count else None,
            sa.FLEX_DIRECTION: self._facts.direction() if self._facts.event_count else None,
            sa.SFDC_OBJECT_ID: record.id if record else None,
            sa.SFDC_ACTIVITY_ID: self._activity_id,
        }
        interaction, channel = self._facts.interaction_sids()
        if (interaction or channel) and workflow.patched(INDEX_INTERACTION_PATCH):
            # Agent Copilot's wrap-up webhook names the interaction and its channel, never the task.
            known |= {sa.FLEX_INTERACTION_SID: interaction, sa.FLEX_INTERACTION_CHANNEL_SID: channel}
        changed = [
            key.value_set(value) for key, value in known.items() if value and self._indexed.get(key.name) != value
        ]
        if changed:
            workflow.upsert_search_attributes(changed)
            self._indexed.update({update.key.name: update.value for update in changed})

    def _count_pop(self, outcome: str) -> None:
        self._pops.add(1, {"outcome": outcome})

    def _now_ms(self) -> int:
        return int(workflow.now().timestamp() * 1000)


def _replaces(new: Notes, held: Notes | None) -> bool:
    """Whether notes the wrap-up webhook brought replace the ones the task holds. Newest by arrival wins, except:
    `note_created` (the generated draft, sent when the note is created) never replaces notes the agent finished
    (`note_updated`, sent on Complete, or the browser's notes, submitted on Complete), whatever order they arrive in;
    and the same content again (Twilio or a proxy repeating a delivery) changes nothing."""
    if held is None:
        return True
    if new.model_dump(include=_NOTES_CONTENT) == held.model_dump(include=_NOTES_CONTENT):
        return False
    return not (new.note_event == "note_created" and held.note_event != "note_created")
