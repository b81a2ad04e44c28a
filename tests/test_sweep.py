"""The sweep: a Temporal Schedule runs `FlexTaskSweep`, which starts a workflow for every task TaskRouter finished with
none of its callbacks reaching us, from a cursor the Schedule carries from run to run.

Pure parts first (the window arithmetic, the queries, the schedule as configured, a refusing namespace, the Events
list's paging); then the real stack: a task whose every callback is dropped is logged once the schedule fires, a
second run reads from the first one's cursor minus the overlap and changes nothing it already did, the schedule is
created once and updated in place, and a task parked in `failed` is counted as repairable.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from activities.models import SweepInput, SweepResult
from flexsf import recovery, vocabulary
from flexsf.delivery import signal_notes
from flexsf.models import Notes, Stage
from flexsf.recovery import FINISHED_EVENT_TYPES, count_repairable, repairable_query
from flexsf.settings import Settings
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from sandboxes.twilio.sids import new_sid
from sandboxes.twilio.timefmt import parse_iso
from tests.fixtures_stack import Stack
from tests.fixtures_twilio import add_completed_row
from tests.test_metrics_logs import scrape, total
from tests.test_operability import cli, sf_tasks_for
from workflows.sweep_schedule import ensure_sweep_schedule, schedule_id, start_sweep_schedule, sweep_schedule
from workflows.sweep_workflow import FlexTaskSweep, next_cursor, window_start
from workflows.task_workflow import FlexTaskWorkflow

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# ---- pure parts ------------------------------------------------------------------------------------------------------


def test_the_vocabulary_names_the_workflows_and_the_signals_delivery_sends() -> None:
    task = workflow._Definition.must_from_class(FlexTaskWorkflow)
    assert task.name == vocabulary.WORKFLOW_TYPE
    assert vocabulary.TASK_EVENT_SIGNAL in task.signals and vocabulary.NOTES_SIGNAL in task.signals
    assert task.signals[vocabulary.TASK_EVENT_SIGNAL].fn is FlexTaskWorkflow.task_event
    assert task.signals[vocabulary.NOTES_SIGNAL].fn is FlexTaskWorkflow.submit_notes
    assert workflow._Definition.must_from_class(FlexTaskSweep).name == vocabulary.SWEEP_WORKFLOW_TYPE


ROOT = Path(__file__).resolve().parent.parent
# What each room may not import: the production core stands alone, and activities never reach for workflow or
# operator code (the sweep's activity uses the reconcile core from flexsf.recovery, not from ops).
ROOMS = {
    "flexsf": {"activities", "workflows", "ops", "gateway", "devtools", "sandboxes", "tests"},
    "activities": {"workflows", "ops", "gateway", "devtools", "sandboxes", "tests"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_recovery_core_and_the_activities_stay_in_their_rooms() -> None:
    crossings = [
        f"{path.relative_to(ROOT)} imports {sorted(imported_roots(path) & banned)}"
        for room, banned in ROOMS.items()
        for path in sorted((ROOT / room).rglob("*.py"))
        if imported_roots(path) & banned
    ]
    assert not crossings, "\n".join(crossings)
    assert "flexsf" in imported_roots(ROOT / "activities" / "sweep.py")  # the check reads imports at all


def test_each_run_reads_from_the_last_cursor_minus_the_overlap_or_else_the_first_lookback() -> None:
    config = SweepInput(overlap_s=120, first_lookback_s=3600)
    assert window_start(None, T0, config) == T0 - timedelta(hours=1)
    assert window_start(SweepResult(), T0, config) == T0 - timedelta(hours=1)  # a result without a cursor
    last = SweepResult(cursor=T0 - timedelta(minutes=5))
    assert window_start(last, T0, config) == T0 - timedelta(minutes=7)


def test_a_task_it_could_not_start_holds_the_cursor_back_but_at_most_the_first_lookback() -> None:
    config = SweepInput(overlap_s=120, first_lookback_s=3600)
    assert next_cursor(SweepResult(cursor=T0), config) == T0
    held = SweepResult(cursor=T0, failed_since=T0 - timedelta(minutes=3))
    assert next_cursor(held, config) == T0 - timedelta(minutes=3)
    stuck = SweepResult(cursor=T0, failed_since=T0 - timedelta(days=2))
    assert next_cursor(stuck, config) == T0 - timedelta(hours=1)


def test_the_repairable_query_names_running_tasks_in_either_stage_on_one_queue() -> None:
    query = repairable_query("q-1")
    assert query == (
        "WorkflowType = 'FlexTaskWorkflow' AND ExecutionStatus = 'Running' AND "
        "(FlexStage = 'failed' OR FlexStage = 'waiting_for_api_budget') AND TaskQueue = 'q-1'"
    )
    assert "FlexWorkerSid = 'WK1'" in repairable_query(worker_sid="WK1") and "TaskQueue" not in repairable_query()


def test_the_schedule_as_configured() -> None:
    schedule = sweep_schedule("q-1", interval_s=300, overlap_s=120, first_lookback_s=3600)
    assert schedule_id("q-1") == "flexsf-sweep-q-1"
    assert [spec.every for spec in schedule.spec.intervals] == [timedelta(minutes=5)]
    assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    action = schedule.action
    assert (action.workflow, action.id, action.task_queue) == ("FlexTaskSweep", "flexsf-sweep-q-1", "q-1")
    assert action.args == [SweepInput(overlap_s=120, first_lookback_s=3600)]
    assert "flexsf sweep" in schedule.state.note and "docs/operating.md" in schedule.state.note


class RefusingClient:
    """A namespace whose permissions do not cover schedules."""

    async def create_schedule(self, *args, **kwargs):
        raise RPCError("Request unauthorized.", RPCStatusCode.PERMISSION_DENIED, b"")


async def test_a_namespace_that_refuses_schedules_costs_the_worker_one_warning(caplog) -> None:
    settings = Settings(_env_file=None, flexsf_task_queue="q-1")
    with caplog.at_level(logging.INFO, logger="flexsf.worker"):
        assert await start_sweep_schedule(RefusingClient(), settings) is None  # type: ignore[arg-type]
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "\n" not in record.getMessage()
    assert "flexsf-sweep-q-1" in record.getMessage() and "PERMISSION_DENIED" in record.getMessage()


def completed_rows(sandbox, n: int) -> None:
    """`n` task.completed rows in the sandbox's Events list, a millisecond apart, the last one a second ago."""
    first = int(time.time() * 1000) - 1000 - n
    for i in range(n):
        add_completed_row(sandbox, new_sid("WT"), first + i)


def test_the_events_list_is_read_a_thousand_rows_a_page(fresh_twilio_sandbox, twilio_client) -> None:
    """TaskRouter serves at most 1000 Events a page, and twilio-python asks for its default 50 unless told: the sandbox
    honours PageSize and pages the rest, so 1,200 finished tasks cost 2 calls where they would cost 24."""
    sandbox = fresh_twilio_sandbox
    since = datetime.now(UTC) - timedelta(minutes=1)
    completed_rows(sandbox, 1200)
    before = sandbox.counters().get("events_list", 0)
    rows, pages = recovery._events(twilio_client, sandbox.workspace_sid, event_type="task.completed", start_date=since)
    assert (len(rows), pages) == (1200, 2)
    assert len({row.sid for row in rows}) == 1200
    assert sandbox.counters()["events_list"] - before == 2
    events = twilio_client.taskrouter.v1.workspaces(sandbox.workspace_sid).events
    before = sandbox.counters()["events_list"]
    assert len(events.list(event_type="task.completed", start_date=since)) == 1200
    assert sandbox.counters()["events_list"] - before == 24  # what a plain list() would spend


# ---- on the real stack ---------------------------------------------------------------------------------------------


async def sweep_once(client: Client, task_queue: str, timeout: float = 60.0) -> SweepResult:
    """Trigger the queue's schedule now and return the run's result."""
    handle = client.get_schedule_handle(schedule_id(task_queue))
    done = (await handle.describe()).info.num_actions
    await handle.trigger()
    deadline = asyncio.get_running_loop().time() + timeout
    while (info := (await handle.describe()).info).num_actions <= done:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the schedule took no action within {timeout}s")
        await asyncio.sleep(0.1)
    action = info.recent_actions[-1].action
    run = client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id, result_type=SweepResult)
    return await asyncio.wait_for(run.result(), timeout)


class EventsListStarts:
    """The StartDate (epoch seconds) of every finished-task Events-list call the sandbox served."""

    def __init__(self, sandbox) -> None:
        self.sandbox, self.seen = sandbox, []
        sandbox.time_requests(self.on_request)

    def on_request(self, req, response, started: float, seconds: float) -> None:
        if req.path.endswith("/Events") and req.param("EventType") in FINISHED_EVENT_TYPES and req.param("StartDate"):
            self.seen.append(parse_iso(req.param("StartDate")))

    def close(self) -> None:
        self.sandbox.time_requests(None)


@pytest.fixture
def events_starts(stack):
    watch = EventsListStarts(stack.tw)
    try:
        yield watch
    finally:
        watch.close()


@pytest.fixture
async def schedules(temporal_client):
    """Schedules a test creates, deleted after it (they would fire into later tests otherwise)."""
    made: list[str] = []
    yield made
    for queue in made:
        try:
            await temporal_client.get_schedule_handle(schedule_id(queue)).delete()
        except RPCError:
            pass


def lost_task(stack: Stack) -> str:
    """A finished, related-to-a-contact task none of whose callbacks reached the gateway."""
    stack.tw.faults.update(callback_drop_fraction=1.0)
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    stack.tw.wait_callbacks_idle()
    deliveries = stack.tw.deliveries(task_sid=sid)
    assert deliveries and {d.outcome for d in deliveries} == {"dropped"}
    return sid


async def no_workflow(client: Client, task_sid: str) -> bool:
    return not await recovery.workflow_exists(client, task_sid)


async def test_the_sweep_logs_a_task_whose_callbacks_were_all_lost_and_keeps_its_cursor(
    stack, schedules, events_starts
) -> None:
    delivered = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    await stack.result(delivered)
    lost = lost_task(stack)
    assert await no_workflow(stack.client, lost)

    # Overlap longer than the first lookback: the second run sweeps the whole first window again.
    overlap_s, lookback_s = 600.0, 300.0
    schedules.append(stack.task_queue)
    assert await ensure_sweep_schedule(stack.client, stack.task_queue, 3600, overlap_s, lookback_s) == "created"
    first = await sweep_once(stack.client, stack.task_queue)
    assert (first.recovered, first.recovered_count, first.failed, first.error) == ([lost], 1, 0, None)
    # A page per finished-event type, and the lost task's own events.
    assert first.api_calls == len(FINISHED_EVENT_TYPES) + 1
    assert first.since is not None and first.cursor is not None and first.since < first.cursor

    view = await stack.result(lost)
    assert view.stage == Stage.LOGGED and view.worker_sid == AGENT.sid and view.record.id == CONTACT.id
    [task] = sf_tasks_for(stack.sf, lost)
    assert task["WhoId"] == CONTACT.id and task["OwnerId"] == sf_demo.AGENT_USERS[0].id
    assert len(sf_tasks_for(stack.sf, delivered)) == 1

    # Another task lost after the first run: the second run reads from the first one's cursor minus the overlap.
    later = lost_task(stack)
    second = await sweep_once(stack.client, stack.task_queue)
    assert second.since == first.cursor - timedelta(seconds=overlap_s)
    assert second.since <= first.since  # the first window is inside the second: swept again
    assert (second.recovered, second.failed) == ([later], 0)
    # What the sandbox was asked for: each run's finished-task lists start at its `since` (to the second).
    n = len(FINISHED_EVENT_TYPES)
    assert len(events_starts.seen) == 2 * n
    assert set(events_starts.seen[:n]) == {first.since.replace(microsecond=0).timestamp()}
    assert set(events_starts.seen[n:]) == {second.since.replace(microsecond=0).timestamp()}
    assert (await stack.result(later)).stage == Stage.LOGGED

    # The same window once more: nothing to do, and nothing written twice.
    upserts = stack.sf.counters().get("sobject_upsert:Task")
    third = await sweep_once(stack.client, stack.task_queue)
    assert third.since == second.cursor - timedelta(seconds=overlap_s) and third.since <= first.since
    assert (third.recovered, third.recovered_count, third.failed) == ([], 0, 0)
    assert third.api_calls == len(FINISHED_EVENT_TYPES)  # nothing to look up
    for sid in (delivered, lost, later):
        assert len(sf_tasks_for(stack.sf, sid)) == 1
    assert stack.sf.counters().get("sobject_upsert:Task") == upserts

    # The three runs' histories replay on the current code (the workflow is deterministic, cursor handover included).
    runs = (await stack.client.get_schedule_handle(schedule_id(stack.task_queue)).describe()).info.recent_actions
    assert len(runs) == 3
    replayer = Replayer(workflows=[FlexTaskSweep], data_converter=pydantic_data_converter)
    for run in runs:
        handle = stack.client.get_workflow_handle(run.action.workflow_id, run_id=run.action.first_execution_run_id)
        replayed = await replayer.replay_workflow(await handle.fetch_history(), raise_on_replay_failure=False)
        assert replayed.replay_failure is None, replayed.replay_failure


async def test_the_schedule_is_created_once_and_updated_in_place(temporal_client, task_queue, schedules) -> None:
    schedules.append(task_queue)
    settings = Settings(
        _env_file=None,
        flexsf_task_queue=task_queue,
        flexsf_sweep_interval_s=300,
        flexsf_sweep_overlap_s=120,
        flexsf_sweep_first_lookback_s=3600,
    )
    assert await start_sweep_schedule(temporal_client, settings) == "created"  # what `flexsf worker` does at start
    assert await start_sweep_schedule(temporal_client, settings) == "unchanged"  # a second worker, or a restart

    async def ours() -> list[str]:
        return [s.id async for s in await temporal_client.list_schedules() if s.id == schedule_id(task_queue)]

    await eventually_async(ours, lambda found: found == [schedule_id(task_queue)])
    handle = temporal_client.get_schedule_handle(schedule_id(task_queue))
    described = await handle.describe()
    assert [spec.every for spec in described.schedule.spec.intervals] == [timedelta(minutes=5)]
    assert described.schedule.action.task_queue == task_queue

    # An operator paused it; a worker restarted with another interval and overlap keeps the pause and the note.
    await handle.pause(note="paused by ops during the TaskRouter migration")
    changed = settings.model_copy(update={"flexsf_sweep_interval_s": 120, "flexsf_sweep_overlap_s": 60})
    assert await start_sweep_schedule(temporal_client, changed) == "updated"
    described = await handle.describe()
    assert [spec.every for spec in described.schedule.spec.intervals] == [timedelta(minutes=2)]
    [held] = await temporal_client.data_converter.decode(list(described.schedule.action.args), [SweepInput])
    assert held == SweepInput(overlap_s=60, first_lookback_s=3600)
    assert described.schedule.state.paused and "TaskRouter migration" in described.schedule.state.note
    assert await start_sweep_schedule(temporal_client, changed) == "unchanged"
    await eventually_async(ours, lambda found: len(found) == 1)


async def eventually_async(fetch, predicate, timeout: float = 30.0):
    """Poll `await fetch()` until `predicate(result)` holds (the schedule list is visibility: a second behind)."""
    deadline = time.monotonic() + timeout
    while not predicate(result := await fetch()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s; last: {result!r}")
        await asyncio.sleep(0.2)
    return result


# The sandbox org has no such field: a log carrying notes topics is refused (INVALID_FIELD), and the task waits in
# `failed` for an operator.
@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_ACTIVITY_TOPICS_FIELD": "Unknown__c"}], indirect=True)
async def test_the_sweep_counts_tasks_parked_in_a_repairable_stage(
    stack, schedules, worker_metrics_url, temporal_server
) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    await signal_notes(stack.client, sid, Notes(disposition="Resolved", summary="Sorted", topics=["billing"]))
    await stack.wait_for(sid, lambda v: v.notes is not None)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    await stack.wait_for(sid, lambda v: v.stage == Stage.FAILED)

    await eventually_async(lambda: count_repairable(stack.client, stack.task_queue), lambda n: n == 1)
    schedules.append(stack.task_queue)
    await ensure_sweep_schedule(stack.client, stack.task_queue, 3600, 120, 600)
    result = await sweep_once(stack.client, stack.task_queue)
    assert (result.repairable, result.recovered, result.failed) == (1, [], 0)

    queue = {"task_queue": stack.task_queue}
    found = scrape(worker_metrics_url)
    assert total(found, "flexsf_tasks_repairable", **queue) == 1
    assert total(found, "flexsf_sweep_runs_total", result="ok", **queue) == 1
    assert total(found, "flexsf_sweep_events_list_calls_total", **queue) == len(FINISHED_EVENT_TYPES)
    assert 0 < time.time() - total(found, "flexsf_sweep_last_success_timestamp_seconds", **queue) < 60

    listed = await cli(stack, temporal_server, "tasks", "list", "--repairable", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sid in {row["task_sid"] for row in json.loads(listed.stdout)["tasks"]}

    # Repaired: the count goes back to 0 and so does the gauge at the next sweep.
    await stack.handle(sid).terminate("test: repaired by hand")
    await eventually_async(lambda: count_repairable(stack.client, stack.task_queue), lambda n: n == 0)
    assert (await sweep_once(stack.client, stack.task_queue)).repairable == 0
    assert total(scrape(worker_metrics_url), "flexsf_tasks_repairable", **queue) == 0


async def test_a_sweep_that_cannot_read_the_events_list_completes_and_keeps_its_window(stack, schedules) -> None:
    stack.tw.faults.update(refused_endpoints={"events_list": 403})
    schedules.append(stack.task_queue)
    await ensure_sweep_schedule(stack.client, stack.task_queue, 3600, 120, 600)
    failed = await sweep_once(stack.client, stack.task_queue)
    assert failed.error and "403" in failed.error and "Events" in failed.error
    assert failed.cursor == failed.since + timedelta(seconds=120)

    stack.tw.faults.update(refused_endpoints={})
    lost = lost_task(stack)
    again = await sweep_once(stack.client, stack.task_queue)
    assert again.since == failed.since and again.recovered == [lost] and again.error is None
