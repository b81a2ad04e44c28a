"""The sweep's Temporal Schedule, created (or brought up to date) by every worker at start.

One schedule per task queue, `flexsf-sweep-<task queue>` (several queues may share a namespace), starting
`FlexTaskSweep` on that queue every `FLEXSF_SWEEP_INTERVAL_S`, never two at once (overlap SKIP). A worker that finds
it with another interval, overlap or lookback updates it, keeping its state: an operator's pause
(`temporal schedule toggle --pause`) and note survive worker restarts. A namespace that refuses schedules (permissions)
costs the worker one warning, not its start: `flexsf reconcile` still recovers lost tasks by hand.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError

from activities.models import SweepInput
from flexsf.settings import Settings
from flexsf.vocabulary import SWEEP_SCHEDULE_ID, SWEEP_WORKFLOW_TYPE

log = logging.getLogger("flexsf.worker")

NOTE = (
    "flexsf sweep: reads TaskRouter's Events list for tasks that finished with no workflow (every callback lost) "
    "and starts theirs, so they are logged. Safe to pause (temporal schedule toggle --pause); "
    '`flexsf reconcile --since` covers a paused stretch. See docs/operating.md, "The sweep".'
)


def schedule_id(task_queue: str) -> str:
    return f"{SWEEP_SCHEDULE_ID}-{task_queue}"


def sweep_schedule(task_queue: str, interval_s: float, overlap_s: float, first_lookback_s: float) -> Schedule:
    """The schedule as the settings want it. Scheduled runs are `flexsf-sweep-<queue>-<time>` (Temporal appends the
    time)."""
    interval = timedelta(seconds=interval_s)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SWEEP_WORKFLOW_TYPE,
            SweepInput(overlap_s=overlap_s, first_lookback_s=first_lookback_s),
            id=schedule_id(task_queue),
            task_queue=task_queue,
            memo={"what": NOTE},
            static_summary=f"flexsf sweep of task queue {task_queue}",
            static_details=NOTE,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        # One run at a time; a missed run (Temporal or every worker down) is made up by one run, which reads the
        # whole gap from the last cursor anyway.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=max(interval, timedelta(minutes=1))),
        state=ScheduleState(note=NOTE),
    )


async def ensure_sweep_schedule(
    client: Client, task_queue: str, interval_s: float, overlap_s: float, first_lookback_s: float
) -> str:
    """Create the task queue's sweep schedule, or update it to these values; "created", "updated" or "unchanged".
    Raises the RPCError of a namespace that refuses."""
    wanted = sweep_schedule(task_queue, interval_s, overlap_s, first_lookback_s)
    try:
        await client.create_schedule(schedule_id(task_queue), wanted, memo={"what": NOTE})
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id(task_queue))
    if await _matches(client, (await handle.describe()).schedule, wanted):
        return "unchanged"

    def keep_state(current: ScheduleUpdateInput) -> ScheduleUpdate:
        # An operator's pause and note stay as they are.
        return ScheduleUpdate(schedule=dataclasses.replace(wanted, state=current.description.schedule.state))

    await handle.update(keep_state)
    return "updated"


async def _matches(client: Client, current: Schedule, wanted: Schedule) -> bool:
    action, goal = current.action, wanted.action
    if not isinstance(action, ScheduleActionStartWorkflow) or not isinstance(goal, ScheduleActionStartWorkflow):
        return False
    if (action.workflow, action.id, action.task_queue) != (goal.workflow, goal.id, goal.task_queue):
        return False
    if [i.every for i in current.spec.intervals] != [i.every for i in wanted.spec.intervals]:
        return False
    if current.policy.overlap != wanted.policy.overlap:
        return False
    try:
        [held] = await client.data_converter.decode(list(action.args), [SweepInput])
    except Exception:  # arguments written by another version, or keys rotated: write ours
        return False
    return held == goal.args[0]


async def start_sweep_schedule(client: Client, settings: Settings) -> str | None:
    """At worker start: the sweep schedule of the worker's task queue, as configured. A refusal is one warning."""
    queue = settings.flexsf_task_queue
    try:
        outcome = await ensure_sweep_schedule(
            client,
            queue,
            settings.flexsf_sweep_interval_s,
            settings.flexsf_sweep_overlap_s,
            settings.flexsf_sweep_first_lookback_s,
        )
    except RPCError as exc:
        log.warning(
            "sweep schedule %s not created or updated (%s: %s); tasks whose callbacks are all lost are recovered only "
            "by `flexsf reconcile` until it exists",
            schedule_id(queue),
            exc.status.name if exc.status else "unknown",
            " ".join(exc.message.split()),
        )
        return None
    log.info(
        "sweep schedule %s %s: every %g s, overlap %g s",
        schedule_id(queue),
        outcome,
        settings.flexsf_sweep_interval_s,
        settings.flexsf_sweep_overlap_s,
    )
    return outcome
