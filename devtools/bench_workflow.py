"""The baseline `flexsf bench` compares the task workflow with: the same signals and as many activities, doing nothing.

A workflow module (importable by the worker, no I/O): the worker started by `flexsf bench` registers it beside the task
workflow, so both run on the same server and worker in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

# Signals the task workflow receives in one lifecycle through the gateway: task.created, reservation.accepted,
# task.updated (its own attribute write), task.wrapup, task.completed. Activities: load_task_policy,
# search_salesforce, save_record_on_task, log_activity.
SIGNALS = ("created", "accepted", "updated", "wrapup", "completed")
_NOOP = dict(start_to_close_timeout=timedelta(seconds=30))


@dataclass
class BareInput:
    key: str


@dataclass
class BareSignal:
    name: str


@activity.defn(name="bench_noop")
def bench_noop(key: str) -> str:
    return key


@workflow.defn(name="BenchBareWorkflow")
class BareWorkflow:
    def __init__(self) -> None:
        self._seen: set[str] = set()

    @workflow.run
    async def run(self, input: BareInput) -> int:
        await workflow.execute_activity(bench_noop, input.key, **_NOOP)  # the policy load
        await workflow.wait_condition(lambda: "accepted" in self._seen)
        await workflow.execute_activity(bench_noop, input.key, **_NOOP)  # the search
        await workflow.execute_activity(bench_noop, input.key, **_NOOP)  # the attribute write
        await workflow.wait_condition(lambda: "completed" in self._seen)
        await workflow.execute_activity(bench_noop, input.key, **_NOOP)  # the log
        return len(self._seen)

    @workflow.signal
    def event(self, signal: BareSignal) -> None:
        self._seen.add(signal.name)
