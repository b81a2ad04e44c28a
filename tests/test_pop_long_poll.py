"""The pop's long-poll, `GET /agent/tasks/{sid}/pop`, end to end: the real gateway (update-with-start on the task's
workflow), Temporal, the worker and both sandboxes. The bridge asks once and hears the pop when the workflow decides
it: one record, candidates, none; before TaskRouter's callback arrives; undecided after its wait; never another
agent's. `POST /agent/pop` is the same long-poll with the sid and the wait in its body, at one URL for every task
(what the bridge calls): the tests marked `via` ask both ways and expect the same answers and errors.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Replayer

from devtools.history_stats import event_counts
from flexsf.models import Stage
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import Stack, eventually
from workflows.task_workflow import FlexTaskWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")

AGENT, OTHER_AGENT, _, SUPERVISOR = tw_demo.DEMO_WORKERS
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
NOBODY_PHONE = "+1 (808) 555-0142"  # in no demo record


@pytest.fixture
def stack_overrides() -> dict[str, str]:
    return {"FLEXSF_NOTES_GRACE_S": "0"}


async def long_poll(stack: Stack, sid: str, worker=AGENT, wait_s: float = 20, via: str = "get") -> httpx.Response:
    """Ask for the pop: `via` "get", the sid in the path; "post", the sid in the body of `POST /agent/pop`."""
    headers = {"Authorization": f"Bearer {stack.tw.mint_token(worker.sid)}"}
    if via == "post":
        return await stack.gateway.http.post(
            f"{stack.gateway.url}/agent/pop",
            json={"task_sid": sid, "wait_s": wait_s},
            headers=headers,
            timeout=wait_s + 30,
        )
    return await stack.gateway.http.get(
        f"{stack.gateway.url}/agent/tasks/{sid}/pop", params={"wait_s": wait_s}, headers=headers, timeout=wait_s + 30
    )


# Both forms of the long-poll, for the tests that show they answer alike.
VIA = pytest.mark.parametrize("via", ["get", "post"])


def decided(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decided"] is True, body
    return body


async def workflow_running(stack: Stack, sid: str) -> bool:
    try:
        return (await stack.handle(sid).describe()).status == WorkflowExecutionStatus.RUNNING
    except Exception:  # not started yet
        return False


@VIA
async def test_the_long_poll_answers_the_one_matching_record(stack: Stack, via: str) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    body = decided(await long_poll(stack, sid, via=via))
    assert body["pop"]["record"]["id"] == CONTACT.id
    assert body["pop"]["candidates"] == [] and body["no_match_pop"] is None
    # The answer came from the search that popped the task: no second one.
    assert stack.sf.counters()["search"] == 1


async def test_the_long_poll_answers_the_candidates(stack: Stack) -> None:
    sid = stack.tw.lifecycle({"from": sf_demo.SHARED_PHONE}, worker_sid=AGENT.sid)["sid"]
    body = decided(await long_poll(stack, sid))
    assert body["stage"] == Stage.AWAITING_SELECTION.value
    assert body["pop"]["record"] is None
    assert {c["id"] for c in body["pop"]["candidates"]} == {r.id for r in sf_demo.SHARED_PHONE_RECORDS}


async def test_the_long_poll_answers_no_match_with_what_to_open_instead(stack: Stack) -> None:
    sid = stack.tw.lifecycle({"from": NOBODY_PHONE}, worker_sid=AGENT.sid)["sid"]
    body = decided(await long_poll(stack, sid))
    assert body["pop"]["record"] is None and body["pop"]["candidates"] == []
    assert body["pop"]["search_term"] == NOBODY_PHONE
    assert body["no_match_pop"]["type"] == "NEW_RECORD_MODAL"


@VIA
async def test_asked_before_the_acceptance_callback_the_long_poll_starts_the_workflow_and_answers_once_it_arrives(
    stack: Stack, via: str
) -> None:
    # No callback reaches the gateway yet: the bridge's question is the first thing Temporal hears of the task.
    stack.tw.set_callback_url(None)
    sid = stack.tw.create_task({"from": CONTACT.phone})["sid"]
    asking = asyncio.create_task(long_poll(stack, sid, via=via))
    await eventually(lambda: workflow_running(stack, sid), what="the long-poll starting the task's workflow")
    assert not asking.done()
    view = await stack.view(sid)
    assert view.worker_sid is None and view.pop.record is None

    stack.tw.set_callback_url(stack.gateway.events_url)
    stack.tw.reserve(sid, AGENT.sid)
    stack.tw.accept(sid)
    body = decided(await asking)
    assert body["pop"]["record"]["id"] == CONTACT.id
    # One workflow for the task: the callback signalled the one the long-poll started.
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.worker_sid == AGENT.sid
    assert json.loads(stack.tw.task(sid)["attributes"])["sfdcObjectId"] == CONTACT.id


@VIA
async def test_a_long_poll_that_outwaits_its_bound_answers_not_decided(stack: Stack, via: str) -> None:
    sid = stack.tw.create_task({"from": CONTACT.phone})["sid"]  # nobody accepts it
    await eventually(lambda: workflow_running(stack, sid), what="the task's workflow")
    await stack.wait_for(sid, lambda v: v.flags.enabled)  # the workflow's first task is done
    before = event_counts(await stack.handle(sid).fetch_history())
    response = await long_poll(stack, sid, wait_s=0.5, via=via)
    assert response.status_code == 200, response.text
    assert response.json()["decided"] is False
    assert response.json()["pop"]["record"] is None
    assert stack.sf.counters().get("search", 0) == 0
    after = event_counts(await stack.handle(sid).fetch_history())
    added = {kind: after[kind] - before.get(kind, 0) for kind in after if after[kind] != before.get(kind, 0)}
    # docs/performance.md: an undecided poll is its update, its timer, and the two workflow tasks they take.
    assert added == {
        "WORKFLOW_TASK_SCHEDULED": 2,
        "WORKFLOW_TASK_STARTED": 2,
        "WORKFLOW_TASK_COMPLETED": 2,
        "WORKFLOW_EXECUTION_UPDATE_ACCEPTED": 1,
        "TIMER_STARTED": 1,
        "TIMER_FIRED": 1,
        "WORKFLOW_EXECUTION_UPDATE_COMPLETED": 1,
    }, added


@VIA
async def test_another_agent_is_refused_after_the_acceptance_and_when_it_arrives_during_the_wait(
    stack: Stack, via: str
) -> None:
    sid = stack.tw.create_task({"from": CONTACT.phone})["sid"]
    await eventually(lambda: workflow_running(stack, sid), what="the task's workflow")
    # Asked before anyone accepted: held until the acceptance says whose task it is, then refused.
    waiting = asyncio.create_task(long_poll(stack, sid, worker=OTHER_AGENT, via=via))
    stack.tw.reserve(sid, AGENT.sid)
    stack.tw.accept(sid)
    refused = await waiting
    assert refused.status_code == 403, refused.text
    assert CONTACT.id not in refused.text and CONTACT.name not in refused.text

    decided(await long_poll(stack, sid, via=via))  # the accepting agent hears it
    for worker in (OTHER_AGENT, SUPERVISOR):
        refused = await long_poll(stack, sid, worker=worker, via=via)
        assert refused.status_code == 403, refused.text
        assert CONTACT.id not in refused.text


@VIA
async def test_a_finished_tasks_pop_is_answered_from_its_closed_workflow(stack: Stack, via: str) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    await stack.result(sid)
    body = decided(await long_poll(stack, sid, via=via))
    assert body["pop"]["record"]["id"] == CONTACT.id
    assert (await long_poll(stack, sid, worker=OTHER_AGENT, via=via)).status_code == 403


@pytest.mark.parametrize("wait_s", [0, -1, 51, "soon"])
async def test_a_wait_out_of_bounds_is_refused(stack: Stack, wait_s) -> None:
    token = stack.tw.mint_token(AGENT.sid)
    response = await stack.gateway.http.get(
        f"{stack.gateway.url}/agent/tasks/WT{'0' * 32}/pop",
        params={"wait_s": wait_s},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 422, response.text


UNKNOWN_SID = "WT" + "0" * 32


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"task_sid": UNKNOWN_SID, "wait_s": 0}, "wait_s", id="no-wait"),
        pytest.param({"task_sid": UNKNOWN_SID, "wait_s": -1}, "wait_s", id="negative-wait"),
        pytest.param({"task_sid": UNKNOWN_SID, "wait_s": 50.5}, "wait_s", id="wait-over-the-bound"),
        pytest.param({"task_sid": UNKNOWN_SID, "wait_s": "20"}, "wait_s", id="wait-as-text"),
        pytest.param({"task_sid": UNKNOWN_SID, "wait_s": True}, "wait_s", id="wait-as-a-boolean"),
        pytest.param({"task_sid": UNKNOWN_SID, "wait_s": None}, "wait_s", id="wait-null"),
        pytest.param({"task_sid": "WT123", "wait_s": 1}, "task_sid", id="short-sid"),
        pytest.param({"task_sid": "WK" + "0" * 32, "wait_s": 1}, "task_sid", id="a-worker-sid"),
        pytest.param({"task_sid": UNKNOWN_SID + "\n", "wait_s": 1}, "task_sid", id="sid-and-a-newline"),
        pytest.param({"task_sid": 7, "wait_s": 1}, "task_sid", id="sid-a-number"),
        pytest.param({"wait_s": 1}, "task_sid", id="no-sid"),
        pytest.param({"task_sid": UNKNOWN_SID, "wait": 1}, "wait", id="a-field-it-does-not-take"),
    ],
)
async def test_a_post_long_poll_with_a_body_it_cannot_use_is_422_naming_the_field(
    stack: Stack, body: dict, field: str
) -> None:
    token = stack.tw.mint_token(AGENT.sid)
    response = await stack.gateway.http.post(
        f"{stack.gateway.url}/agent/pop", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 422, response.text
    assert [problem["loc"] for problem in response.json()["detail"]] == [["body", field]], response.text


async def test_a_post_long_poll_without_a_token_is_401(stack: Stack) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    response = await stack.gateway.http.post(f"{stack.gateway.url}/agent/pop", json={"task_sid": sid, "wait_s": 1})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer", response.text
    assert CONTACT.id not in response.text


@VIA
async def test_a_long_poll_about_a_task_taskrouter_does_not_know_is_404_and_starts_nothing(
    stack: Stack, via: str
) -> None:
    sid = "WT" + uuid.uuid4().hex  # anyone signed in may name any well-formed sid
    response = await long_poll(stack, sid, wait_s=0.5, via=via)
    assert response.status_code == 404 and "TaskRouter has no task" in response.text, response.text
    assert not await workflow_running(stack, sid)
    with pytest.raises(RPCError):
        await stack.handle(sid).describe()


@VIA
async def test_a_long_poll_is_answered_503_while_taskrouter_cannot_confirm_the_task(stack: Stack, via: str) -> None:
    stack.tw.set_callback_url(None)  # no callback: the long-poll is the first Temporal hears of the task
    sid = stack.tw.create_task({"from": CONTACT.phone})["sid"]
    stack.tw.faults.update(refused_endpoints={"task_fetch": 401})  # a credential TaskRouter refuses
    response = await long_poll(stack, sid, wait_s=0.5, via=via)
    assert response.status_code == 503 and response.headers.get("retry-after"), response.text
    with pytest.raises(RPCError):
        await stack.handle(sid).describe()


async def test_what_a_long_poll_costs_in_history(stack: Stack) -> None:
    """docs/performance.md quotes these: a poll after the decision, and one waiting for it."""
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    before = event_counts(await stack.handle(sid).fetch_history())
    decided(await long_poll(stack, sid))
    after = event_counts(await stack.handle(sid).fetch_history())
    added = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in after if after[kind] != before.get(kind, 0)}
    assert added == {
        "WORKFLOW_TASK_SCHEDULED": 1,
        "WORKFLOW_TASK_STARTED": 1,
        "WORKFLOW_TASK_COMPLETED": 1,
        "WORKFLOW_EXECUTION_UPDATE_ACCEPTED": 1,
        "WORKFLOW_EXECUTION_UPDATE_COMPLETED": 1,
    }, added

    stack.tw.set_callback_url(None)
    early = stack.tw.create_task({"from": CONTACT.phone})["sid"]
    asking = asyncio.create_task(long_poll(stack, early))
    await eventually(lambda: workflow_running(stack, early), what="the long-poll starting the workflow")
    stack.tw.set_callback_url(stack.gateway.events_url)
    stack.tw.reserve(early, AGENT.sid)
    stack.tw.accept(early)
    decided(await asking)
    await stack.wait_for(early, lambda v: v.stage == Stage.IN_PROGRESS)
    counts = event_counts(await stack.handle(early).fetch_history())
    assert counts["WORKFLOW_EXECUTION_UPDATE_ACCEPTED"] == counts["WORKFLOW_EXECUTION_UPDATE_COMPLETED"] == 1
    # The wait is a timer canceled when the pop is decided; the lost-event window's timer of `in_progress` is open.
    assert counts["TIMER_STARTED"] == counts["TIMER_CANCELED"] + 1 and "TIMER_FIRED" not in counts
    print("\nlong-poll before the callback, history:", counts, "\nthe same task without:", before)


async def test_during_a_salesforce_outage_the_long_poll_answers_not_decided_and_then_the_pop(stack: Stack) -> None:
    stack.sf.faults.set(fail_rate=1.0)
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    # The search retries with workflow timers after its first quick retry, so the workflow hears the update meanwhile.
    waiting = await long_poll(stack, sid, wait_s=1)
    assert waiting.status_code == 200 and waiting.json()["decided"] is False, waiting.text
    assert stack.sf.counters().get("fault_503", 0) >= 1
    stack.sf.faults.reset()
    body = decided(await long_poll(stack, sid))
    assert body["pop"]["record"]["id"] == CONTACT.id
    assert stack.sf.counters()["search"] == 1
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    assert (await stack.result(sid)).stage == Stage.LOGGED
    replayer = Replayer(workflows=[FlexTaskWorkflow], data_converter=pydantic_data_converter)
    replayed = await replayer.replay_workflow(await stack.handle(sid).fetch_history(), raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


async def test_a_search_refused_for_good_decides_the_pop_without_a_record(stack: Stack) -> None:
    # The token endpoint refuses the worker's grant (a final refusal, never retried): the search cannot run.
    stack.sf.faults.set(login_host=True)
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    body = decided(await long_poll(stack, sid))
    assert body["pop"]["record"] is None and body["pop"]["candidates"] == []
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.error and view.error.startswith("screen pop search failed")
    assert (await stack.handle(sid).describe()).status == WorkflowExecutionStatus.RUNNING
