"""The sweep's activity: recover the tasks TaskRouter finished in a window without any callback reaching us.

It needs the worker's Temporal client (to see which tasks have a workflow and to signal-with-start the others) as
well as the Twilio client, so the worker builds it once it has connected (`worker.build_worker`). The work itself is
`flexsf.recovery`, the same core `flexsf reconcile` runs.
"""

from __future__ import annotations

from datetime import UTC, datetime

import requests
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from twilio.base.exceptions import TwilioException

from activities.errors import twilio_status
from activities.interfaces import SweepSteps, implements
from activities.models import SweepRequest, SweepResult
from flexsf import metrics, vocabulary
from flexsf.recovery import count_repairable, recover

# The recovered sids a result lists (a sweep after a long outage may start thousands; the count has them all).
MAX_LISTED = 1000


class SweepActivities(SweepSteps):
    def __init__(self, client: Client, twilio, workspace_sid: str) -> None:
        self._client = client
        self._twilio = twilio
        self._workspace_sid = workspace_sid

    @classmethod
    def beside(cls, client: Client, twilio_steps) -> SweepActivities:
        """With the Twilio client and workspace the worker's Twilio activities were built with."""
        return cls(client, twilio_steps._client, twilio_steps._workspace_sid)

    @implements(SweepSteps.sweep_lost_tasks)
    async def sweep_lost_tasks(self, req: SweepRequest) -> SweepResult:
        """List the tasks TaskRouter finished since `req.since`; start a workflow for each one without one in hand;
        count the tasks parked in a repairable stage. The cursor is when the listing began."""
        metrics.note_attempt("twilio")
        started = datetime.now(UTC)
        try:
            recovery = await recover(
                self._client,
                self._twilio,
                self._workspace_sid,
                req.task_queue,
                req.since,
                until=started,
                progress=activity.heartbeat,
            )
        except TwilioException as exc:
            raise _twilio_failure(exc, self._workspace_sid) from None
        except requests.RequestException as exc:
            raise ApplicationError(
                f"sweep_lost_tasks: Twilio unreachable: {type(exc).__name__}", type=vocabulary.TWILIO_UNREACHABLE
            ) from None
        recovered = recovery.started
        metrics.sweep_recovered(len(recovered))
        metrics.sweep_events_calls(recovery.api_calls)
        if recovered:
            activity.logger.warning(
                "sweep: %d task(s) finished in TaskRouter with no workflow (their callbacks were lost); started: %s",
                len(recovered),
                ", ".join(recovered[:20]) + (" …" if len(recovered) > 20 else ""),
            )
        for action in recovery.actions:
            if action.action == "failed":
                activity.logger.warning("sweep: task %s not started: %s", action.task_sid, action.reason)
        return SweepResult(
            cursor=started,
            since=req.since,
            failed_since=recovery.earliest_failed,
            recovered=recovered[:MAX_LISTED],
            recovered_count=len(recovered),
            failed=recovery.failed,
            api_calls=recovery.api_calls,
            repairable=await self._repairable(req.task_queue),
        )

    async def _repairable(self, task_queue: str) -> int:
        """-1 when the namespace's visibility cannot count (a store without advanced visibility): the recovery above
        must not fail over a gauge."""
        try:
            return await count_repairable(self._client, task_queue)
        except RPCError as exc:
            if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
                raise
            activity.logger.warning("sweep: cannot count repairable tasks (%s: %s)", exc.status.name, exc.message)
            return -1


def _twilio_failure(exc: TwilioException, workspace_sid: str) -> ApplicationError:
    """A failed Events-list call as a typed failure."""
    status, code = twilio_status(exc)
    summary = f"sweep_lost_tasks: Twilio answered the Events list of workspace {workspace_sid} {status} (code {code})"
    if status in (401, 403):
        # A key without this permission stays without it: retrying only hides the cause.
        return ApplicationError(
            f"{summary}: the worker's credentials may not read TaskRouter Events (a restricted TWILIO_API_KEY needs "
            "read access to the workspace's Events)",
            type=vocabulary.TWILIO_CONFIGURATION,
            non_retryable=True,
        )
    if status is None or status == 429 or status >= 500:
        return ApplicationError(summary, type=vocabulary.TWILIO_UNAVAILABLE)
    return ApplicationError(summary, type=vocabulary.TWILIO_REQUEST, non_retryable=True)
