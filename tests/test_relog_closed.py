"""`flexsf relog` of a task whose workflow has closed: a new run of the same workflow id, seeded from the closed run's
result, amends the same Salesforce Task; a workflow that failed left no result and is refused.

End to end through the stack; no notes grace, so a workflow closes as soon as its log is written.
"""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus

from flexsf.delivery import signal_notes
from flexsf.models import Notes, Stage
from ops import tasks as ops
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
NO_GRACE = {"FLEXSF_NOTES_GRACE_S": "0"}
# Salesforce stamps these on every write; everything else an amend from the same facts must leave as it was.
MODIFIED = ("LastModifiedDate", "SystemModstamp")

pytestmark = pytest.mark.parametrize("stack_overrides", [NO_GRACE], indirect=True)


def sf_tasks_for(sf, task_sid: str) -> list[dict]:
    return [t for t in sf.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]


def unmodified(task: dict) -> dict:
    return {k: v for k, v in task.items() if k not in MODIFIED}


async def test_relog_of_a_closed_task_amends_the_same_salesforce_task_in_a_new_run(stack) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    await signal_notes(stack.client, sid, Notes(disposition="Resolved", summary="Sorted"))
    await stack.wait_for(sid, lambda v: v.notes is not None)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    closed = await stack.result(sid)
    assert closed.stage == Stage.LOGGED and closed.finished_at is not None
    [task] = sf_tasks_for(stack.sf, sid)
    assert task["WhoId"] == CONTACT.id
    first_run = (await stack.handle(sid).describe()).run_id

    updates = stack.sf.counters().get("sobject_update:Task", 0)
    relogged = await ops.relog(stack.client, sid, "amend after a mapping change")
    assert (relogged.stage, relogged.activity_id, relogged.error) == (Stage.LOGGED, task["Id"], None)
    rerun = await stack.handle(sid).describe()
    assert rerun.run_id != first_run and rerun.status == WorkflowExecutionStatus.COMPLETED
    [same] = sf_tasks_for(stack.sf, sid)
    assert unmodified(same) == unmodified(task)
    assert stack.sf.counters().get("sobject_update:Task", 0) == updates + 1
    view = await stack.result(sid)
    assert (view.stage, view.activity_id, view.record, view.worker_sid) == (
        Stage.LOGGED,
        task["Id"],
        closed.record,
        closed.worker_sid,
    )
    assert view.finished_at == closed.finished_at

    again = await ops.relog(stack.client, sid)
    assert (again.stage, again.activity_id) == (Stage.LOGGED, task["Id"])
    assert (await stack.handle(sid).describe()).run_id not in (first_run, rerun.run_id)
    [still] = sf_tasks_for(stack.sf, sid)
    assert unmodified(still) == unmodified(task)
    assert stack.sf.counters().get("sobject_update:Task", 0) == updates + 2


async def test_relog_of_a_task_whose_workflow_failed_is_refused(stack) -> None:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
    await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    await stack.handle(sid).terminate("operator stopped it")
    with pytest.raises(ops.OpsError) as refused:
        await ops.relog(stack.client, sid)
    message = str(refused.value)
    assert "terminated" in message and "no result" in message and "\n" not in message
    assert sf_tasks_for(stack.sf, sid) == []
    assert (await stack.handle(sid).describe()).status == WorkflowExecutionStatus.TERMINATED
