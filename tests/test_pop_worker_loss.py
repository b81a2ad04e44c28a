"""The pop's steps against a worker that dies: one search and one attribute write per task, a worker killed between
the two included; and a pop watched by queries while its worker is killed replays (the history the next worker
rebuilds the task from is the one a later replay must accept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from flexsf.models import Stage
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import Stack, WorkerProcess, eventually, process_env, stack_env, stack_gateway
from tests.test_task_workflow_resilience import assert_logged_once_to
from workflows.task_workflow import FlexTaskWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT


@pytest.fixture
def stack_overrides() -> dict[str, str]:
    return {"FLEXSF_NOTES_GRACE_S": "0"}


async def test_the_search_attributes_hold_the_pop(stack: Stack) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    attributes = (await stack.handle(sid).describe()).typed_search_attributes
    indexed = {pair.key.name: pair.value for pair in attributes}
    assert indexed["FlexStage"] == Stage.IN_PROGRESS.value
    assert indexed["FlexWorkerSid"] == AGENT.sid
    assert indexed["SfdcObjectId"] == CONTACT.id


async def test_a_worker_killed_between_the_search_and_the_write_searches_once_and_writes_once(
    temporal_server,
    temporal_client,
    clean_salesforce_sandbox,
    fresh_twilio_sandbox,
    worker_processes,
    tmp_path,
) -> None:
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"kill-mid-pop-{uuid.uuid4()}"
    env = process_env(temporal_server.address, stack_env(sf.info, tw.info, task_queue, FLEXSF_NOTES_GRACE_S="0"))
    async with stack_gateway(temporal_client, env, tw) as gateway:
        stack = Stack(temporal_client, task_queue, env, None, sf, tw, gateway)
        first = WorkerProcess(env, tmp_path / "worker-1.log")
        worker_processes.append(first)
        await eventually(first.polling, what="the first worker polling")

        # The write's fetches answer 503: the search is done and the write keeps retrying when the worker dies.
        tw.faults.update(fail_next=[503] * 20, endpoints=["task_fetch"])
        sid = tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
        await eventually(lambda: tw.counters().get("task_fetch", 0) >= 2, what="the write retrying")
        first.kill()
        assert first.proc.returncode == -signal.SIGKILL
        assert sf.counters()["search"] == 1
        tw.faults.update(fail_next=[])

        second = WorkerProcess(env, tmp_path / "worker-2.log")
        worker_processes.append(second)
        await eventually(second.polling, what="the second worker polling")
        await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS, timeout=90)
        assert json.loads(tw.task(sid)["attributes"])["sfdcObjectId"] == CONTACT.id
        tw.wrapup(sid)
        tw.complete(sid)
        view = await stack.result(sid, timeout=90)

        assert_logged_once_to(stack, sid, view, CONTACT.id)
        assert sf.counters()["search"] == 1  # the replacement replayed the search's marker
        assert tw.counters()["task_update"] == 1


async def test_a_pop_cut_short_by_queries_and_a_killed_worker_replays(
    temporal_server,
    temporal_client,
    clean_salesforce_sandbox,
    fresh_twilio_sandbox,
    worker_processes,
    tmp_path,
) -> None:
    """What a live run does differently from its replay: queries reach the worker while the search runs, and the
    worker dies with the pop half done. The pop's search as a local activity, and search attributes batched until
    the workflow next waited, each made such histories fail replay under a bad-day soak (docs/performance.md); the
    history must replay, and the task is still logged once."""
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"queries-mid-pop-{uuid.uuid4()}"
    env = process_env(temporal_server.address, stack_env(sf.info, tw.info, task_queue, FLEXSF_NOTES_GRACE_S="0"))
    async with stack_gateway(temporal_client, env, tw) as gateway:
        stack = Stack(temporal_client, task_queue, env, None, sf, tw, gateway)
        first = WorkerProcess(env, tmp_path / "worker-1.log")
        worker_processes.append(first)
        await eventually(first.polling, what="the first worker polling")
        sf.faults.set(latency_ms=1500)  # every Salesforce answer slow: the search runs while the queries arrive
        sid = tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
        queries = 0

        async def keep_asking() -> None:
            nonlocal queries
            while True:
                with contextlib.suppress(Exception):  # no worker for a moment after the kill
                    await stack.view(sid)
                    queries += 1

        asking = asyncio.create_task(keep_asking())
        try:
            await eventually(lambda: sf.counters().get("delayed_requests", 0) >= 2, what="the search under way")
            first.kill()
            second = WorkerProcess(env, tmp_path / "worker-2.log")
            worker_processes.append(second)
            await eventually(second.polling, what="the second worker polling")
            await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS, timeout=90)
        finally:
            asking.cancel()
        sf.faults.reset()
        tw.wrapup(sid)
        tw.complete(sid)
        view = await stack.result(sid, timeout=90)

        assert queries > 0
        assert_logged_once_to(stack, sid, view, CONTACT.id)
        assert tw.counters()["task_update"] == 1
        history = await stack.handle(sid).fetch_history()
        replayer = Replayer(workflows=[FlexTaskWorkflow], data_converter=pydantic_data_converter)
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None, replayed.replay_failure
