"""The sweep: every few minutes a Temporal Schedule (workflows/sweep_schedule.py) starts this workflow, which
recovers the tasks TaskRouter finished with no workflow of ours (every callback lost).

Its cursor is durable through the Schedule: Temporal hands each scheduled run the result of the last one that
completed (`workflow.get_last_completion_result`), and the run reads TaskRouter's Events list from that result's
cursor minus an overlap. No store of our own, nothing to lose on a restart. A run whose activity fails still
completes, keeping its window for the next run, and says why.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.interfaces import SweepSteps
    from activities.models import SweepInput, SweepRequest, SweepResult
    from flexsf import metrics
    from flexsf.vocabulary import SWEEP_WORKFLOW_TYPE
    from workflows import policies

# READ's retries and overall budget; a window may hold hours of tasks after an outage, so an attempt may take longer
# than a plain read, and heartbeats (one per task looked at) tell a live one from a lost worker within a minute.
SWEEP_STEP = {
    **policies.READ,
    "start_to_close_timeout": timedelta(minutes=10),
    "heartbeat_timeout": timedelta(minutes=1),
}


def window_start(last: SweepResult | None, now: datetime, input: SweepInput) -> datetime:
    """Where a run reads from: the last completed run's cursor minus the overlap, or the first lookback."""
    if last is not None and last.cursor is not None:
        return last.cursor - timedelta(seconds=input.overlap_s)
    return now - timedelta(seconds=input.first_lookback_s)


def next_cursor(result: SweepResult, input: SweepInput) -> datetime | None:
    """Where the next run reads from (before its overlap): when this one listed, or held back to the earliest task it
    could not start so the next runs try it again, but never more than the first lookback behind (a task that can
    never be started must not grow every window forever; `flexsf reconcile` reports it)."""
    cursor = result.cursor
    if cursor is None or result.failed_since is None:
        return cursor
    return max(min(cursor, result.failed_since), cursor - timedelta(seconds=input.first_lookback_s))


@workflow.defn(name=SWEEP_WORKFLOW_TYPE)
class FlexTaskSweep:
    @workflow.run
    async def run(self, input: SweepInput) -> SweepResult:
        last = workflow.get_last_completion_result(SweepResult) if workflow.has_last_completion_result() else None
        since = window_start(last, workflow.now(), input)
        meter = workflow.metric_meter()
        try:
            result = await workflow.execute_activity_method(
                SweepSteps.sweep_lost_tasks,
                SweepRequest(since=since, task_queue=workflow.info().task_queue),
                summary=f"recover tasks TaskRouter finished since {since:%Y-%m-%d %H:%M:%S} UTC with no workflow",
                **SWEEP_STEP,
            )
        except ActivityError as err:
            metrics.sweep_run(meter, "failed")
            error = str(err.cause or err)
            workflow.set_current_details(f"**failed** · since {since:%Y-%m-%d %H:%M:%S} UTC · {error}")
            # The same window again next time: its cursor is where this one would have read from before the overlap.
            return SweepResult(cursor=since + timedelta(seconds=input.overlap_s), since=since, error=error)
        result = result.model_copy(update={"cursor": next_cursor(result, input)})
        metrics.sweep_run(meter, "ok", result.repairable, int(workflow.now().timestamp()))
        workflow.set_current_details(
            f"since {since:%Y-%m-%d %H:%M:%S} UTC · **{result.recovered_count} recovered** · {result.failed} failed · "
            f"{result.api_calls} Events-list call(s) · {result.repairable} repairable"
        )
        return result
