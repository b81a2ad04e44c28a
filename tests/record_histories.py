"""Record the histories `tests/test_replay.py` replays: `python -m tests.record_histories [scenario …]`.

Starts its own Temporal dev server (in memory), the Salesforce and Twilio sandboxes, and per scenario the gateway
(which receives the sandbox's signed TaskRouter callbacks) and a worker built by
`worker.build_activities`/`build_worker`, drives each scenario below through real sandbox lifecycles, and
writes the finished workflow's history to `tests/histories/<scenario>.json`.

Re-record only when the workflow change is guarded by `workflow.patched(...)` or no workflow started by the old code
can still be running (README, "Changing the workflow safely"): the stored histories stand for the workflows in flight
in production, and overwriting them with the new code's histories hides exactly the break they are there to catch.
With a patch, first move the current files to
`tests/histories/before-<patch-id>/`: `tests/test_replay.py` replays those too, as the workflows still on the old
branch; remove them with the `workflow.deprecate_patch` step.

The histories use the plain pydantic data converter (never the encryption codec), so the payloads stay readable;
the worker identity is fixed and failure stack traces are dropped so no machine detail is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devtools.temporal_server import TemporalDevServer
from flexsf.delivery import signal_notes
from flexsf.models import Notes, RecordSelection, Stage, TaskView
from sandboxes.salesforce import SalesforceSandbox
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import TwilioSandbox
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import Stack, stack_env, stack_gateway, start_stack_worker
from workflows.task_workflow import FlexTaskWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
IDENTITY = "record-histories"
AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT


@dataclass(frozen=True)
class Scenario:
    """One task lifecycle: `drive(stack)` returns the TaskSid once the task is finished (the workflow may still be in
    its notes grace); `activities` is the sequence of activities the history must show, so a scenario that took
    another path than intended (a fault that did not bite, a signal too late) is refused rather than stored."""

    name: str
    drive: Callable[[Stack], Awaitable[str]]
    activities: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


async def _single_match(stack: Stack) -> str:
    sid = stack.tw.lifecycle({"from": CONTACT.phone, "direction": "inbound"}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    return sid


async def _selection(stack: Stack) -> str:
    sid = stack.tw.lifecycle({"from": sf_demo.SHARED_PHONE}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.AWAITING_SELECTION)
    chosen = sf_demo.SHARED_PHONE_RECORDS[2]
    await stack.handle(sid).execute_update(
        FlexTaskWorkflow.select_record, RecordSelection(worker_sid=AGENT.sid, record_id=chosen.id)
    )
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    return sid


async def _cancel(stack: Stack) -> str:
    sid = stack.tw.create_task({"name": sf_demo.DEMO_LEAD.name}, channel="chat")["sid"]
    stack.tw.reserve(sid, AGENT.sid)
    stack.tw.cancel(sid, reason="caller hung up")
    return sid


async def _lost_completion(stack: Stack) -> str:
    stack.tw.faults.update(callback_drop_event_types=["task.completed", "task.deleted"])
    return await _single_match(stack)


async def _salesforce_retries(stack: Stack) -> str:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    stack.sf.faults.set(fail_next=2)  # the log's upsert answers 503 twice, then succeeds
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    return sid


async def _notes_after_completion(stack: Stack) -> str:
    sid = await _single_match(stack)
    await stack.wait_for(sid, lambda v: v.stage == Stage.LOGGED)
    await signal_notes(
        stack.client,
        sid,
        Notes(disposition="Resolved", summary="Fixed on the call", topics=["billing"], sentiment="positive"),
    )
    return sid


SEARCH, SAVE, LOG = "search_salesforce", "save_record_on_task", "log_activity"
POLICY, RECONCILE = "load_task_policy", "reconcile_task"
NO_GRACE = {"FLEXSF_NOTES_GRACE_S": "0"}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("single_match", _single_match, (POLICY, SEARCH, SAVE, LOG), NO_GRACE),
        Scenario("selection", _selection, (POLICY, SEARCH, SAVE, LOG), NO_GRACE),
        # Nobody accepted it: logged only with FLEXSF_LOG_UNHANDLED_TASKS (the stored history predates that default).
        Scenario("cancel", _cancel, (POLICY, LOG), {**NO_GRACE, "FLEXSF_LOG_UNHANDLED_TASKS": "true"}),
        Scenario(
            "lost_completion",
            _lost_completion,
            (POLICY, SEARCH, SAVE, RECONCILE, LOG),
            NO_GRACE | {"FLEXSF_LOST_EVENT_WINDOW_S": "1"},
        ),
        Scenario("salesforce_retries", _salesforce_retries, (POLICY, SEARCH, SAVE, LOG), NO_GRACE),
        # The grace must outlast the moment between seeing LOGGED and the notes signal; the amend closes nothing early.
        Scenario(
            "notes_after_completion",
            _notes_after_completion,
            (POLICY, SEARCH, SAVE, LOG, LOG),
            {"FLEXSF_NOTES_GRACE_S": "5"},
        ),
    ]
}


def scrub(history: dict) -> dict:
    """Drop failure stack traces (they name source paths); replay never reads them."""
    if isinstance(history, dict):
        return {k: scrub(v) for k, v in history.items() if k != "stackTrace"}
    if isinstance(history, list):
        return [scrub(v) for v in history]
    return history


def to_text(history: dict) -> str:
    """One event a line: compact, and a re-recording diffs event by event."""
    events = ",\n".join(json.dumps(e, separators=(",", ":"), sort_keys=True) for e in history["events"])
    return f'{{"events": [\n{events}\n]}}\n'


def activity_types(history: dict) -> tuple[str, ...]:
    return tuple(
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in history["events"]
        if "activityTaskScheduledEventAttributes" in e
    )


class Recorder:
    def __init__(self, client: Client, sf: SalesforceSandbox, tw: TwilioSandbox, executor: ThreadPoolExecutor) -> None:
        self.client, self.sf, self.tw, self.executor = client, sf, tw, executor

    async def record(self, scenario: Scenario) -> Path:
        self.sf.reset()
        self.tw.reset()
        task_queue = f"record-{scenario.name}-{uuid.uuid4().hex[:8]}"
        env = stack_env(self.sf.info, self.tw.info, task_queue, **scenario.env)
        async with stack_gateway(self.client, env, self.tw) as gateway:
            activities, worker = start_stack_worker(self.client, env, self.executor)
            async with worker:
                stack = Stack(self.client, task_queue, env, activities, self.sf, self.tw, gateway)
                sid = await scenario.drive(stack)
                view: TaskView = await stack.result(sid)
                history = scrub(json.loads((await stack.handle(sid).fetch_history()).to_json()))
        if view.stage not in (Stage.LOGGED, Stage.LOGGED_UNASSOCIATED):
            raise RuntimeError(f"{scenario.name}: the task ended at {view.stage.value}, not logged")
        if activity_types(history) != scenario.activities:
            raise RuntimeError(
                f"{scenario.name}: activities {activity_types(history)}, expected {scenario.activities}; not written"
            )
        HISTORIES.mkdir(exist_ok=True)
        path = HISTORIES / f"{scenario.name}.json"
        path.write_text(to_text(history))
        return path


async def record(names: list[str]) -> None:
    server = TemporalDevServer().start()  # in memory: nothing outlives the recording
    try:
        client = await Client.connect(
            server.address, namespace=server.namespace, data_converter=pydantic_data_converter, identity=IDENTITY
        )
        with (
            SalesforceSandbox(port=0, state=":memory:", seed_demo=True) as sf,
            ThreadPoolExecutor(max_workers=16) as executor,
        ):
            tw = TwilioSandbox(seed=20261125).start()
            try:
                recorder = Recorder(client, sf, tw, executor)
                for name in names:
                    started = time.monotonic()
                    path = await recorder.record(SCENARIOS[name])
                    print(
                        f"{name}: {path.relative_to(HISTORIES.parent.parent)} "
                        f"({path.stat().st_size // 1024} KiB, {time.monotonic() - started:.1f}s)"
                    )
            finally:
                tw.stop()
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.record_histories", description=__doc__.split("\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=f"default: all ({', '.join(SCENARIOS)})")
    names = parser.parse_args(argv).scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    asyncio.run(record(names))
    # sdk-python #300: the Rust core can abort interpreter teardown; the work is done and flushed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
