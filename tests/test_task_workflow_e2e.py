"""End to end: sandbox lifecycles → signed callbacks → signal-with-start → workflow → Salesforce and Twilio.

Nothing here is mocked: a real Temporal dev server, a real worker, the real simple-salesforce and twilio clients
talking HTTP(S) to the sandboxes.
"""

from __future__ import annotations

import json

from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from workflows.models import Stage

AGENT = tw_demo.DEMO_WORKERS[0]


def sf_tasks_for(stack, task_sid: str) -> list[dict]:
    return [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == task_sid]


async def test_single_match_writes_attributes_and_logs_one_task_with_who_id(stack) -> None:
    task = stack.tw.lifecycle({"from": sf_demo.UNIQUE_PHONE_CONTACT.phone, "direction": "inbound", "keep": "me"},
                              worker_sid=AGENT.sid)
    sid = task["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == sf_demo.UNIQUE_PHONE_CONTACT.id

    attributes = json.loads(stack.tw.task(sid)["attributes"])
    assert attributes["sfdcObjectId"] == sf_demo.UNIQUE_PHONE_CONTACT.id
    assert attributes["sfdcObjectType"] == "Contact"
    assert attributes["keep"] == "me" and attributes["from"] == sf_demo.UNIQUE_PHONE_CONTACT.phone

    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED
    logged = sf_tasks_for(stack, sid)
    assert len(logged) == 1
    assert logged[0]["WhoId"] == sf_demo.UNIQUE_PHONE_CONTACT.id and not logged[0].get("WhatId")
    assert logged[0]["Id"] == view.activity_id
    assert logged[0]["CallType"] == "Inbound" and logged[0]["TaskSubtype"] == "Call"
    assert logged[0]["OwnerId"] == sf_demo.AGENT_USERS[0].id  # the worker's email maps to their Salesforce user
