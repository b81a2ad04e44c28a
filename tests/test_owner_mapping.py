"""End to end, who owns the call activity (FLEXSF_OWNER_MAPPING): the agent through their `sfdcUserId` worker attribute
or their email, nobody in particular with `none`, and a worker who maps to no Salesforce user, said on the task's view
and counted in a metric.

Through Temporal, the gateway and the two sandboxes; the worker's metrics are read by this test's task queue (a label
Temporal adds to activity metrics), as tests/test_metrics_logs.py does.
"""

from __future__ import annotations

import pytest

from flexsf.metrics import ACTIVITY_LOG_OWNER_UNMAPPED
from flexsf.models import Stage
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.test_metrics_logs import scrape, total

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
# Deliberately not the user the agent's email names: the Task's owner shows which mapping chose it.
OTHER_USER = sf_demo.AGENT_USERS[1]


async def logged_call(stack) -> tuple[object, dict]:
    sid = stack.tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid, complete=True)["sid"]
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED
    [logged] = [t for t in stack.sf.records("Task") if t.get("Flex_Task_Sid__c") == sid]
    return view, logged


def unmapped_count(stack, worker_metrics_url: str, mapping: str) -> float:
    found = scrape(worker_metrics_url)
    return total(found, ACTIVITY_LOG_OWNER_UNMAPPED, mapping=mapping, task_queue=stack.task_queue)


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_OWNER_MAPPING": "sfdcUserId"}], indirect=True)
async def test_sfdc_user_id_mapping_makes_the_worker_attributes_user_the_owner(stack, worker_metrics_url) -> None:
    stack.tw.write_worker_attributes(AGENT.sid, {"sfdcUserId": OTHER_USER.id[:15]})  # 15 characters, as admins copy
    view, logged = await logged_call(stack)
    assert logged["OwnerId"] == OTHER_USER.id and view.owner_unmapped is None
    assert stack.sf.counters().get("query", 0) == 0  # no User look-up: the attribute is the id
    assert unmapped_count(stack, worker_metrics_url, "sfdcUserId") == 0


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_OWNER_MAPPING": "sfdcUserId"}], indirect=True)
@pytest.mark.parametrize("attribute", [None, "not-a-user-id", sf_demo.UNIQUE_PHONE_CONTACT.id])
async def test_a_worker_without_a_user_id_leaves_the_integration_user_as_owner_visibly(
    stack, worker_metrics_url, attribute
) -> None:
    if attribute is not None:
        stack.tw.write_worker_attributes(AGENT.sid, {"sfdcUserId": attribute})
    view, logged = await logged_call(stack)
    assert logged["OwnerId"] == sf_demo.INTEGRATION_USER_ID
    why = "is missing" if attribute is None else "is not a Salesforce user id"  # a Contact id is no user's
    assert view.owner_unmapped == f"FLEXSF_OWNER_MAPPING=sfdcUserId: the worker's sfdcUserId attribute {why}"
    assert unmapped_count(stack, worker_metrics_url, "sfdcUserId") == 1


@pytest.mark.parametrize("stack_overrides", [{"FLEXSF_OWNER_MAPPING": "none"}], indirect=True)
async def test_none_mapping_leaves_every_log_to_the_integration_user_without_calling_it_unmapped(
    stack, worker_metrics_url
) -> None:
    stack.tw.write_worker_attributes(AGENT.sid, {"sfdcUserId": OTHER_USER.id})  # ignored under `none`
    view, logged = await logged_call(stack)
    assert logged["OwnerId"] == sf_demo.INTEGRATION_USER_ID and view.owner_unmapped is None
    assert stack.sf.counters().get("query", 0) == 0  # no User look-up
    for mapping in ("none", "email", "sfdcUserId"):
        assert unmapped_count(stack, worker_metrics_url, mapping) == 0


async def test_email_mapping_with_an_email_no_user_has_is_recorded_and_counted(stack, worker_metrics_url) -> None:
    stack.tw.write_worker_attributes(AGENT.sid, {"email": "nobody.here@example.com"})
    view, logged = await logged_call(stack)
    assert logged["OwnerId"] == sf_demo.INTEGRATION_USER_ID
    assert view.owner_unmapped == "FLEXSF_OWNER_MAPPING=email: no active Salesforce user has the worker's email"
    assert unmapped_count(stack, worker_metrics_url, "email") == 1


async def test_email_mapping_of_a_known_worker_owns_the_log_and_counts_nothing(stack, worker_metrics_url) -> None:
    view, logged = await logged_call(stack)
    assert logged["OwnerId"] == sf_demo.AGENT_USERS[0].id and view.owner_unmapped is None
    assert unmapped_count(stack, worker_metrics_url, "email") == 0
