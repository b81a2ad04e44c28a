"""Operating the integration: search attributes and visibility queries, the `flexsf tasks`/`relog`/`reconcile`
commands, through the real stack (dev server with our search attributes, worker, sandboxes, gateway).

The CLI runs as a subprocess, configured like an operator's shell (TEMPORAL_ADDRESS and the product's settings).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.service import RPCError, RPCStatusCode
from twilio.base.exceptions import TwilioRestException

from flexsf import recovery
from flexsf.delivery import signal_event, signal_notes
from flexsf.models import Notes, Stage, TaskEvent
from flexsf.vocabulary import workflow_id
from ops import tasks as ops
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from sandboxes.twilio.sids import new_sid
from tests.fixtures_stack import Stack, process_env, stack_env, stack_gateway, start_stack_worker
from tests.fixtures_twilio import add_completed_row

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
REPO = Path(__file__).resolve().parent.parent
# The sandbox org has no such field: a log carrying notes topics is refused (INVALID_FIELD, not retryable).
BROKEN = {"FLEXSF_ACTIVITY_TOPICS_FIELD": "Unknown__c"}
TOPICS = Notes(disposition="Resolved", summary="Sorted", topics=["billing"])


def sf_tasks_for(sf, task_sid: str) -> list[dict]:
    return [t for t in sf.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]


async def eventually(fetch, predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll `await fetch()` until `predicate(result)` holds (visibility lags the workflow by about a second)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await fetch()
        if predicate(result):
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s; last: {result!r}")
        await asyncio.sleep(0.2)


async def cli(stack: Stack, temporal_server, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = process_env(temporal_server.address, {**stack.env, **settings})
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ops.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Workers:
    """The stack's worker, replaceable mid-test the way an operator redeploys one with fixed configuration."""

    def __init__(self, client, env: dict[str, str], executor: ThreadPoolExecutor) -> None:
        self.client, self.env, self.executor = client, env, executor
        self.current = None

    async def start(self, **overrides: str) -> None:
        await self.stop()
        _, self.current = start_stack_worker(self.client, {**self.env, **overrides}, self.executor)
        await self.current.__aenter__()

    async def stop(self) -> None:
        worker, self.current = self.current, None
        if worker is not None:
            await worker.__aexit__(None, None, None)


@pytest_asyncio.fixture(loop_scope="session")
async def ops_stack(temporal_client, clean_salesforce_sandbox, fresh_twilio_sandbox):
    """Like `stack`, but its worker starts with a Salesforce field mapping the org refuses (BROKEN) and can be
    replaced by one with the fix; notes grace is long so a logged workflow stays open for a repeated relog."""
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"ops-{uuid.uuid4()}"
    env = stack_env(sf.info, tw.info, task_queue, FLEXSF_NOTES_GRACE_S="60")
    async with stack_gateway(temporal_client, env, tw) as gateway:
        with ThreadPoolExecutor(max_workers=16) as executor:
            workers = Workers(temporal_client, env, executor)
            await workers.start(**BROKEN)
            try:
                yield Stack(temporal_client, task_queue, {**env, **BROKEN}, None, sf, tw, gateway), workers
            finally:
                await workers.stop()


async def failed_log(stack: Stack) -> str:
    """A completed task whose log Salesforce refused (the notes' topics go to a field the org does not have)."""
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    await signal_notes(stack.client, sid, TOPICS)
    await stack.wait_for(sid, lambda v: v.notes is not None)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.FAILED)
    assert "INVALID_FIELD" in view.error and "Unknown__c" in view.error
    return sid


async def test_search_attributes_find_tasks_by_stage_worker_record_and_salesforce_task(
    ops_stack, temporal_server
) -> None:
    stack, _ = ops_stack
    single = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    several = stack.tw.lifecycle({"from": sf_demo.SHARED_PHONE}, worker_sid=AGENT.sid)["sid"]
    failed = await failed_log(stack)
    logged = await stack.wait_for(single, lambda v: v.stage == Stage.LOGGED)
    await stack.wait_for(several, lambda v: v.stage == Stage.AWAITING_SELECTION)

    async def sids(query: str) -> set[str]:
        return {
            row.task_sid for row in await ops.list_tasks(stack.client, f"{query} AND TaskQueue = '{stack.task_queue}'")
        }

    async def expect(query: str, expected: set[str]) -> None:
        await eventually(lambda: sids(query), lambda found: found == expected, what=query)

    await expect(ops.tasks_query(worker_sid=AGENT.sid, stage=Stage.AWAITING_SELECTION), {several})
    await expect(ops.tasks_query(stage=Stage.FAILED), {failed})
    await expect(ops.tasks_query(stage=Stage.LOGGED), {single})
    await expect(ops.tasks_query(task_sid=single), {single})
    await expect(ops.tasks_query(record_id=CONTACT.id), {single, failed})
    await expect(ops.tasks_query(activity_id=logged.activity_id), {single})
    await expect(ops.tasks_query(channel="voice", direction="Inbound", worker_sid=AGENT.sid), {single, several, failed})
    await expect(ops.tasks_query(worker_sid=tw_demo.DEMO_WORKERS[1].sid), set())
    [row] = await ops.list_tasks(stack.client, ops.tasks_query(task_sid=single))
    assert (row.stage, row.worker_sid, row.record_id, row.activity_id) == (
        "logged",
        AGENT.sid,
        CONTACT.id,
        logged.activity_id,
    )

    listed = await cli(
        stack, temporal_server, "tasks", "list", "--stage", "awaiting_selection", "--worker", AGENT.sid, "--since", "1h"
    )
    assert listed.returncode == 0, listed.stderr
    assert several in listed.stdout and single not in listed.stdout and failed not in listed.stdout
    listed = await cli(stack, temporal_server, "tasks", "list", "--stage", "failed", "--since", "2000-01-01T00:00:00Z")
    assert failed in listed.stdout and single not in listed.stdout
    listed = await cli(stack, temporal_server, "tasks", "list", "--stage", "failed", "--since", "1h", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["ok"] is True and "FlexStage = 'failed'" in document["query"]
    by_sid = {row["task_sid"]: row for row in document["tasks"]}
    assert failed in by_sid and single not in by_sid and {row["stage"] for row in by_sid.values()} == {"failed"}
    assert by_sid[failed]["record_id"] == CONTACT.id and by_sid[failed]["started"].startswith("20")

    shown = await cli(stack, temporal_server, "tasks", "show", single)
    assert shown.returncode == 0, shown.stderr
    assert all(text in shown.stdout for text in ("logged", CONTACT.id, logged.activity_id, AGENT.sid))
    assert "/namespaces/" not in shown.stdout  # no FLEXSF_TEMPORAL_UI_URL, no link
    shown = await cli(stack, temporal_server, "tasks", "show", failed)
    assert "failed" in shown.stdout and "INVALID_FIELD" in shown.stdout
    link = f"http://127.0.0.1:8233/namespaces/default/workflows/{workflow_id(single)}"
    shown = await cli(stack, temporal_server, "tasks", "show", single, FLEXSF_TEMPORAL_UI_URL="http://127.0.0.1:8233/")
    assert shown.returncode == 0, shown.stderr
    assert link in shown.stdout
    shown = await cli(
        stack, temporal_server, "tasks", "show", single, "--json", FLEXSF_TEMPORAL_UI_URL="http://127.0.0.1:8233"
    )
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert (document["ok"], document["stage"], document["activity_id"], document["ui_url"]) == (
        True,
        "logged",
        logged.activity_id,
        link,
    )
    assert document["record"]["id"] == CONTACT.id and document["worker_sid"] == AGENT.sid
    assert "notes" not in document
    missing = await cli(stack, temporal_server, "tasks", "show", "WT" + "f" * 32, "--json")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert json.loads(missing.stdout) == {"ok": False, "error": f"no workflow for task {'WT' + 'f' * 32}"}

    registered = await cli(stack, temporal_server, "search-attributes")
    assert registered.returncode == 0 and "all search attributes are registered" in registered.stdout
    registered = await cli(stack, temporal_server, "search-attributes", "--json")
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout) == {"ok": True, "missing": [], "created": []}

    with pytest.raises(ops.OpsError, match="has not finished"):
        await ops.relog(stack.client, several)  # the validator refuses a task still in progress


async def test_relog_retries_a_failed_log_once_fixed_and_repeating_it_changes_nothing(
    ops_stack, temporal_server
) -> None:
    stack, workers = ops_stack
    sid = await failed_log(stack)

    again = await cli(stack, temporal_server, "relog", sid, "--reason", "still broken", "--json")
    assert again.returncode == 1, again.stderr
    document = json.loads(again.stdout)
    assert (document["ok"], document["task_sid"], document["stage"], document["activity_id"]) == (
        False,
        sid,
        "failed",
        None,
    )
    assert "INVALID_FIELD" in document["error"]
    assert sf_tasks_for(stack.sf, sid) == []

    await workers.start(FLEXSF_ACTIVITY_TOPICS_FIELD="")  # the fix: redeploy without the bad mapping
    fixed = await cli(stack, temporal_server, "relog", sid, "--reason", "topics field removed")
    assert fixed.returncode == 0, fixed.stderr + fixed.stdout
    [task] = sf_tasks_for(stack.sf, sid)
    assert f"stage logged, Salesforce Task {task['Id']}" in fixed.stdout
    assert task["WhoId"] == CONTACT.id and task["CallDisposition"] == "Resolved"
    view = await stack.view(sid)
    assert view.stage == Stage.LOGGED and view.activity_id == task["Id"] and view.error is None

    upserts = stack.sf.counters().get("sobject_upsert:Task")
    repeated = await cli(stack, temporal_server, "relog", sid, "--json")
    assert repeated.returncode == 0, repeated.stderr
    assert json.loads(repeated.stdout) == {
        "ok": True,
        "task_sid": sid,
        "stage": "logged",
        "activity_id": task["Id"],
        "error": None,
    }
    [same] = sf_tasks_for(stack.sf, sid)
    unchanged = {k: v for k, v in task.items() if k not in ("LastModifiedDate", "SystemModstamp")}
    assert {k: v for k, v in same.items() if k in unchanged} == unchanged
    assert stack.sf.counters().get("sobject_upsert:Task") == upserts  # amended by id, never created again

    history = [e async for e in stack.handle(sid).fetch_history_events()]
    updates = [e for e in history if e.HasField("workflow_execution_update_accepted_event_attributes")]
    assert len(updates) == 3


async def test_reconcile_starts_a_workflow_for_a_task_whose_callbacks_were_all_lost(stack, temporal_server) -> None:
    delivered = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    await stack.result(delivered)
    stack.tw.faults.update(callback_drop_fraction=1.0)
    lost = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    stack.tw.wait_callbacks_idle()
    assert {d.outcome for d in stack.tw.deliveries(task_sid=lost)} == {"dropped"}
    with pytest.raises(RPCError) as missing:
        await stack.client.get_workflow_handle(workflow_id(lost)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND

    done = await cli(stack, temporal_server, "reconcile", "--since", "10m")
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"{lost}: task.completed, no workflow -> started" in done.stdout
    assert f"{delivered}: task.completed, workflow exists -> left alone" in done.stdout

    view = await stack.result(lost)
    assert view.stage == Stage.LOGGED and view.worker_sid == AGENT.sid
    [task] = sf_tasks_for(stack.sf, lost)
    assert task["WhoId"] == CONTACT.id and task["OwnerId"] == sf_demo.AGENT_USERS[0].id
    assert len(sf_tasks_for(stack.sf, delivered)) == 1

    again = await cli(stack, temporal_server, "reconcile", "--since", "10m", "--json")
    assert again.returncode == 0, again.stderr
    document = json.loads(again.stdout)
    assert (document["ok"], document["started"], document["failed"]) == (True, 0, 0)
    actions = {a["task_sid"]: a for a in document["actions"]}
    assert actions[lost]["action"] == "exists" and actions[lost]["finished"] == "task.completed"
    assert len(sf_tasks_for(stack.sf, lost)) == 1


# ---- reconcile with poisoned rows ----------------------------------------------------------------------------------


def nested(levels: int, leaf: object) -> dict:
    value: object = leaf
    for _ in range(levels - 1):
        value = {"a": value}
    return {"a": value}


async def test_reconcile_recovers_poisoned_tasks_and_reports_the_one_it_cannot(stack, temporal_server) -> None:
    stack.tw.faults.update(callback_drop_fraction=1.0)
    # Nested deeper than Temporal's encoder goes, and a lone surrogate no UTF-8 encoder takes: once, the run stopped.
    attributes = {"from": CONTACT.phone, "note": "Zelda \ud800", "custom": nested(300, "Zelda")}
    poisoned = stack.tw.lifecycle(attributes, worker_sid=AGENT.sid, complete=True)["sid"]
    lost = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    # A row naming a task no workflow can be named after (Temporal's ids stop at 1000 characters); sorts first.
    unusable = "WT" + "0" * 1200
    add_completed_row(stack.tw, unusable)
    stack.tw.wait_callbacks_idle()

    done = await cli(stack, temporal_server, "reconcile", "--since", "10m")
    assert done.returncode == 1, done.stderr + done.stdout
    assert f"{unusable}: task.completed -> failed: none of its 1 Events-list row(s) could be read" in done.stdout
    assert f"{poisoned}: task.completed, no workflow -> started" in done.stdout
    assert f"{lost}: task.completed, no workflow -> started" in done.stdout
    assert "3 finished task(s)" in done.stdout and "2 started, 1 failed" in done.stdout
    assert CONTACT.phone not in done.stdout + done.stderr and "Zelda" not in done.stdout + done.stderr

    for sid in (poisoned, lost):
        view = await stack.result(sid)
        assert view.stage == Stage.LOGGED and view.worker_sid == AGENT.sid
        [task] = sf_tasks_for(stack.sf, sid)
        assert task["WhoId"] == CONTACT.id  # the caller's number survived the trimming


@pytest.fixture
def reconcile_faults(monkeypatch):
    """Per-task faults for `ops.reconcile` (flexsf.recovery): Twilio fails listing one task's events, Temporal refuses
    another's."""
    faults: dict[str, str] = {}
    list_events, deliver = recovery._events, recovery.signal_event

    def events(twilio, workspace_sid, **filters):
        if faults.get(filters.get("task_sid")) == "twilio":
            raise TwilioRestException(503, "/Events", "Service Unavailable", code=20503)
        return list_events(twilio, workspace_sid, **filters)

    async def signal(client, task_queue, event):
        if faults.get(event.task_sid) == "temporal":
            raise RPCError("Namespace is not allowed to start workflows", RPCStatusCode.PERMISSION_DENIED, b"")
        return await deliver(client, task_queue, event)

    monkeypatch.setattr(recovery, "_events", events)
    monkeypatch.setattr(recovery, "signal_event", signal)
    return faults


async def test_reconcile_reports_each_task_it_cannot_deliver_and_goes_on(
    temporal_client, fresh_twilio_sandbox, twilio_client, reconcile_faults
) -> None:
    sandbox, queue = fresh_twilio_sandbox, f"reconcile-{uuid.uuid4()}"
    since = ops.parse_since("10m")
    sids = [sandbox.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"] for _ in range(4)]
    unlisted, refused, fine, exists = sids
    reconcile_faults.update({unlisted: "twilio", refused: "temporal"})
    await signal_event(temporal_client, queue, TaskEvent(sid=new_sid("EV"), event_type="task.created", task_sid=exists))

    actions = await ops.reconcile(temporal_client, twilio_client, sandbox.workspace_sid, queue, since)

    got = {a.task_sid: a for a in actions}
    assert {sid: a.action for sid, a in got.items()} == {
        unlisted: "failed",
        refused: "failed",
        fine: "started",
        exists: "exists",
    }
    assert got[unlisted].reason == "Twilio refused to list its events (HTTP 503, code 20503)"
    assert re.fullmatch(
        r"event 1 of \d+ \(task\.created\) not delivered: Temporal refused it "
        r"\(PERMISSION_DENIED: Namespace is not allowed to start workflows\)",
        got[refused].reason,
    )
    assert all(a.finished == "task.completed" for a in actions)
    assert await ops.workflow_exists(temporal_client, fine)
    assert not await ops.workflow_exists(temporal_client, refused)
    assert not await ops.workflow_exists(temporal_client, unlisted)
