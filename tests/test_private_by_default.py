"""What is never encrypted carries no customer data: a task's search attributes (Temporal indexes them in plaintext,
no codec touches them) and the label values of the worker's and the gateway's Prometheus metrics.

One task runs through the real stack with a recognisable caller name, number and notes; none of them may appear in
the workflow's search attributes (typed and raw) nor anywhere in either metrics text.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flexsf.delivery import signal_notes
from flexsf.models import Notes, Stage
from flexsf.search_attributes import ALL as SEARCH_ATTRIBUTES
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo

CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
CALLER_NAME = "Philomena Quarterstaff-Oyelaran"
SUMMARY = "Wants the blue kettle refunded before Thursday"


def customer_data() -> list[str]:
    """The caller's name (as Flex and as Salesforce know it), number in every spelling, email and notes."""
    return [
        CALLER_NAME,
        "Quarterstaff",
        CONTACT.name,
        CONTACT.phone,
        "+16285550147",
        "6285550147",
        "5550147",
        "555-0147",
        CONTACT.email,
        SUMMARY,
        "kettle",
    ]


def label_values(text: str) -> set[str]:
    return {
        value for family in text_string_to_metric_families(text) for s in family.samples for value in s.labels.values()
    }


async def test_search_attributes_and_metric_labels_carry_no_customer_data(stack, worker_metrics_url) -> None:
    sid = stack.tw.lifecycle(
        {"from": CONTACT.phone, "customerName": CALLER_NAME},
        worker_sid=tw_demo.DEMO_WORKERS[0].sid,
    )["sid"]
    view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
    assert view.pop.record.id == CONTACT.id  # the caller was found: their data did flow through the task
    await signal_notes(stack.client, sid, Notes(disposition="Refund", summary=SUMMARY))
    await stack.wait_for(sid, lambda v: v.notes is not None)
    stack.tw.wrapup(sid)
    stack.tw.complete(sid)
    view = await stack.result(sid)
    assert view.stage == Stage.LOGGED

    description = await stack.handle(sid).describe()
    indexed = {key.name: description.typed_search_attributes.get(key) for key in SEARCH_ATTRIBUTES}
    # What is indexed: sids, the stage, the channel, the direction and Salesforce ids, all set for this task.
    assert indexed["FlexTaskSid"] == sid and indexed["FlexStage"] == Stage.LOGGED.value
    assert indexed["SfdcObjectId"] == CONTACT.id and indexed["SfdcActivityId"] == view.activity_id
    raw = description.raw_description.workflow_execution_info.search_attributes.SerializeToString()
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        worker_text = (await http.get(worker_metrics_url)).text
        gateway_text = (await http.get(stack.gateway.metrics_url)).text
    assert "flexsf_activity_logs_total" in worker_text and "flexsf_taskrouter_events_total" in gateway_text

    for value in customer_data():
        assert not [name for name, got in indexed.items() if got and value.lower() in str(got).lower()], value
        assert value.encode() not in raw, value
        assert value not in worker_text and value not in gateway_text, value
    labels = label_values(worker_text) | label_values(gateway_text)
    assert not [label for label in labels if any(value.lower() in label.lower() for value in customer_data())]
