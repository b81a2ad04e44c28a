"""docs/adding-a-step.md's worked example, run: "after the log is written, post a notice to a configurable webhook".

The stub, the activity class, the notice models and `_post_notice` are the doc's code; a small workflow stands in for
FlexTaskWorkflow (log, then the notice) so the mechanism is proven without the product carrying the example: the
activity is collected by `activity_methods`, the notice carries what `log_activity` wrote, `policies.BEST_EFFORT`
retries a webhook that is down and stops at one that refuses, neither fails the workflow, and a worker without the
step cannot replay a history that took it (the rolling-deploy rule).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Replayer, Worker

with workflow.unsafe.imports_passed_through():
    import requests
    from pydantic import BaseModel, SecretStr

    from activities.activity_fields import ActivityFieldConfig
    from activities.interfaces import SalesforceSteps, activity_methods, implements
    from activities.models import ActivityLogRequest, ActivityLogResult
    from activities.salesforce import SalesforceActivities
    from activities.salesforce_connection import SalesforceConnection
    from sandboxes.salesforce import demo as sf_demo
    from sandboxes.twilio.receiver import CallbackReceiver
    from tests.fixtures_salesforce import log_request
    from workflows import policies

CONTACT = sf_demo.UNIQUE_PHONE_CONTACT


# ---- the doc's code: models, stub, activity ------------------------------------------------------------------------


class NoticeRequest(BaseModel):
    task_sid: str
    activity_id: str
    subject: str | None = None
    related_id: str | None = None

    @classmethod
    def of(cls, task_sid: str, logged: ActivityLogResult) -> NoticeRequest:
        related = logged.fields.get("WhoId") or logged.fields.get("WhatId")
        return cls(task_sid=task_sid, activity_id=logged.activity_id, subject=logged.subject, related_id=related)


class NoticeResult(BaseModel):
    status: int


class NoticeSteps:
    """Tell another system that a task was logged (best effort)."""

    @activity.defn(name="post_notice")
    def post_notice(self, req: NoticeRequest) -> NoticeResult:
        raise NotImplementedError


class NoticeActivities(NoticeSteps):
    def __init__(self, url: SecretStr | None, session: requests.Session | None = None) -> None:
        self._url = url
        self._session = session or requests.Session()

    @implements(NoticeSteps.post_notice)
    def post_notice(self, req: NoticeRequest) -> NoticeResult:
        if self._url is None:
            raise ApplicationError("FLEXSF_NOTICE_WEBHOOK_URL is not set on this worker", non_retryable=True)
        try:
            answer = self._session.post(self._url.get_secret_value(), json=req.model_dump(mode="json"), timeout=5)
        except requests.RequestException as exc:
            # requests quotes the URL in its messages, and a webhook URL often carries its token.
            raise ApplicationError(f"webhook unreachable ({type(exc).__name__})", type="WebhookUnreachable") from None
        if answer.status_code == 429 or answer.status_code >= 500:
            raise ApplicationError(f"webhook answered {answer.status_code}", type="WebhookUnavailable")
        if answer.status_code >= 400:
            raise ApplicationError(f"webhook refused: {answer.status_code}", type="WebhookRefused", non_retryable=True)
        return NoticeResult(status=answer.status_code)


# ---- a stand-in for FlexTaskWorkflow: the log, then the doc's `_post_notice` ---------------------------------------


class Policy(BaseModel):
    notice_webhook: bool = False


class StepInput(BaseModel):
    log: ActivityLogRequest
    policy: Policy


class StepOutput(BaseModel):
    activity_id: str
    error: str | None = None


@workflow.defn(name="LogThenNotice")
class LogThenNotice:
    @workflow.init
    def __init__(self, input: StepInput) -> None:
        self._task_sid = input.log.task_sid
        self._policy = input.policy
        self._logged: ActivityLogResult | None = None
        self._error: str | None = None

    @workflow.run
    async def run(self, input: StepInput) -> StepOutput:
        self._logged = await workflow.execute_activity_method(SalesforceSteps.log_activity, input.log, **policies.WRITE)
        await self._post_notice()
        return StepOutput(activity_id=self._logged.activity_id, error=self._error)

    async def _post_notice(self) -> None:
        """Best effort: a webhook that is down or refuses never holds up the task's log or fails the task."""
        if self._logged is None or not self._policy.notice_webhook or not workflow.patched("notify-webhook"):
            return
        try:
            await workflow.execute_activity_method(
                NoticeSteps.post_notice,
                NoticeRequest.of(self._task_sid, self._logged),
                summary="post the notice to the webhook",
                **policies.BEST_EFFORT,
            )
        except ActivityError as err:
            self._error = f"notice not posted: {err.cause or err}"


@workflow.defn(name="LogThenNotice")
class BeforeTheStep(LogThenNotice):
    """The same workflow as an old worker still runs it: no notice step."""

    @workflow.run
    async def run(self, input: StepInput) -> StepOutput:  # a workflow class declares its own run
        return await super().run(input)

    async def _post_notice(self) -> None:
        return None


# ---- the test ------------------------------------------------------------------------------------------------------


@pytest.fixture
def webhook():
    with CallbackReceiver(path="/notices") as receiver:
        yield receiver


@pytest.fixture
def salesforce(clean_salesforce_sandbox) -> SalesforceActivities:
    connection = SalesforceConnection(clean_salesforce_sandbox.credentials())
    return SalesforceActivities(connection, fields=ActivityFieldConfig(external_id_field="Flex_Task_Sid__c"))


async def run_task(client: Client, task_queue: str, salesforce, webhook, notice_webhook: bool):
    log = log_request()
    notice = NoticeActivities(SecretStr(webhook.url))
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[LogThenNotice],
            activities=activity_methods(salesforce, notice),  # the new class's method is found, not listed
            activity_executor=executor,
        ):
            handle = await client.start_workflow(
                LogThenNotice.run,
                StepInput(log=log, policy=Policy(notice_webhook=notice_webhook)),
                id=f"adding-a-step-{log.task_sid}",
                task_queue=task_queue,
            )
            return await handle.result(), await handle.fetch_history()


def patch_markers(history) -> int:
    return sum(1 for e in history.events if e.HasField("marker_recorded_event_attributes"))


async def replays_with(workflow_class: type, history) -> Exception | None:
    replayer = Replayer(workflows=[workflow_class], data_converter=pydantic_data_converter)
    return (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure


async def test_the_notice_carries_what_the_log_wrote_and_old_workers_cannot_replay_it(
    temporal_client, task_queue, salesforce, clean_salesforce_sandbox, webhook
) -> None:
    output, history = await run_task(temporal_client, task_queue, salesforce, webhook, notice_webhook=True)

    [notice] = webhook.wait_for(1)
    [written] = [t for t in clean_salesforce_sandbox.records("Task") if t["Id"] == output.activity_id]
    assert json.loads(notice.body) == {
        "task_sid": written["Flex_Task_Sid__c"],
        "activity_id": written["Id"],
        "subject": written["Subject"],
        "related_id": CONTACT.id,
    }
    assert output.error is None and patch_markers(history) == 1
    assert await replays_with(LogThenNotice, history) is None
    assert isinstance(await replays_with(BeforeTheStep, history), workflow.NondeterminismError)


async def test_with_the_setting_off_histories_stay_as_old_workers_wrote_them(
    temporal_client, task_queue, salesforce, webhook
) -> None:
    output, history = await run_task(temporal_client, task_queue, salesforce, webhook, notice_webhook=False)

    assert output.error is None and patch_markers(history) == 0 and not webhook.requests
    assert await replays_with(BeforeTheStep, history) is None


async def test_a_webhook_that_is_down_is_retried_and_one_that_refuses_fails_nothing(
    temporal_client, task_queue, salesforce, webhook
) -> None:
    webhook.respond_with(503)
    output, _ = await run_task(temporal_client, task_queue, salesforce, webhook, notice_webhook=True)
    assert [r.status for r in webhook.requests] == [503, 204] and output.error is None

    webhook.clear()
    webhook.status = 400
    output, _ = await run_task(temporal_client, task_queue, salesforce, webhook, notice_webhook=True)
    assert [r.status for r in webhook.requests] == [400]  # non-retryable: one attempt, not three
    assert output.activity_id and output.error == "notice not posted: WebhookRefused: webhook refused: 400"
