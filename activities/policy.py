"""The task's policy, built in one place: Flex's flags (cached per process) plus the worker's configured timers.

A setting a workflow step needs reaches the workflow here: add a field to `flexsf.models.TaskPolicy` and return the
worker's value under the same key from `Settings.task_policy_defaults()`; the workflow reads `self._policy.<field>`
(see docs/adding-a-step.md).
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import twilio_errors
from activities.interfaces import PolicySteps, implements
from flexsf import metrics
from flexsf.flex_config import FlexConfigCache
from flexsf.models import TaskPolicy, TaskWorkflowInput

# A transient Twilio failure gets this many attempts before the task goes on without Flex's answer: the screen pop
# waits on the policy, and is useless once the agent has moved on (a few seconds under workflows.policies.READ).
TRANSIENT_ATTEMPTS = 3


class PolicyActivities(PolicySteps):
    def __init__(self, flex_config: FlexConfigCache, defaults: dict[str, Any]) -> None:
        """`defaults`: TaskPolicy fields from the worker's settings (timers, step options)."""
        self._flex_config = flex_config
        self._defaults = defaults

    @implements(PolicySteps.load_task_policy)
    def load_task_policy(self, req: TaskWorkflowInput) -> TaskPolicy:
        """Flex's flags, or — when Flex refuses (a rotated credential, a restricted key) or stays unavailable — the
        last flags this worker read, else the fallback ones: a task must not fail, and so go unlogged, because its
        flags could not be read. The policy says which it got."""
        metrics.note_attempt("twilio")
        try:
            with twilio_errors("load_task_policy"):
                return TaskPolicy(flags=self._flex_config.flags(), **self._defaults)
        except ApplicationError as err:
            attempt = activity.info().attempt if activity.in_activity() else TRANSIENT_ATTEMPTS
            if not err.non_retryable and attempt < TRANSIENT_ATTEMPTS:
                raise
            flags, seen = self._flex_config.last_known()
            source = "last_seen" if seen else "defaults"
            if activity.in_activity():
                activity.logger.warning(
                    "Flex configuration unreadable, task %s uses %s flags: %s", req.task_sid, source, err
                )
            return TaskPolicy(flags=flags, flags_source=source, flags_error=str(err), **self._defaults)
