"""What the workflow may ask of the outside world: one stub per activity, named once.

The workflow names these (never the implementations), so its imports stop at temporalio and the models; the classes
in `salesforce.py`, `twilio.py`, `policy.py` and `sweep.py` implement them with `@implements(...)`, and `worker.py`
registers whatever `activity_methods` finds on them. A new step is one stub here and one method there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.models import (
    ActivityLogRequest,
    ActivityLogResult,
    ReconcileRequest,
    ReconcileResult,
    SaveRecordRequest,
    SaveRecordResult,
    SearchRequest,
    SearchResult,
    SweepRequest,
    SweepResult,
)
from flexsf.models import TaskPolicy, TaskWorkflowInput


def implements(stub: Callable) -> Callable[[Callable], Callable]:
    """Declare a method as the implementation of `stub`, under the stub's activity name."""
    return activity.defn(name=activity_name(stub))


def activity_name(stub: Callable) -> str:
    return activity._Definition.must_from_callable(stub).name


def activity_methods(*instances: Any) -> list[Callable]:
    """Every activity the instances' classes implement, bound to its instance: what a worker registers."""
    found: list[Callable] = []
    for instance in instances:
        for name in dir(type(instance)):
            member = getattr(type(instance), name)
            if activity._Definition.from_callable(member) is not None and not _is_stub(member):
                found.append(getattr(instance, name))
    return found


def _is_stub(member: Callable) -> bool:
    # Stubs are the methods defined in this module; an implementation lives in another one.
    return getattr(member, "__module__", None) == __name__


class PolicySteps:
    """The task's policy: flags and timers it decides with, snapshotted once at start."""

    @activity.defn(name="load_task_policy")
    def load_task_policy(self, req: TaskWorkflowInput) -> TaskPolicy:
        raise NotImplementedError


class SalesforceSteps:
    """Search for the caller; write (or amend) the one Salesforce Task of a Flex task."""

    @activity.defn(name="search_salesforce")
    def search_salesforce(self, req: SearchRequest) -> SearchResult:
        raise NotImplementedError

    @activity.defn(name="log_activity")
    def log_activity(self, req: ActivityLogRequest) -> ActivityLogResult:
        raise NotImplementedError


class TwilioSteps:
    """Write the record on the task's attributes; ask TaskRouter what happened to a quiet task."""

    @activity.defn(name="save_record_on_task")
    def save_record_on_task(self, req: SaveRecordRequest) -> SaveRecordResult:
        raise NotImplementedError

    @activity.defn(name="reconcile_task")
    def reconcile_task(self, req: ReconcileRequest) -> ReconcileResult:
        raise NotImplementedError


class SweepSteps:
    """Recover tasks TaskRouter finished without us (every callback lost): the sweep's one step."""

    @activity.defn(name="sweep_lost_tasks")
    async def sweep_lost_tasks(self, req: SweepRequest) -> SweepResult:
        raise NotImplementedError
