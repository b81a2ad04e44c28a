"""The task's policy, built in one place: Flex's flags (cached per process) plus the worker's configured timers.

A setting a workflow step needs reaches the workflow here: add a field to `flexsf.models.TaskPolicy` and return the
worker's value under the same key from `Settings.task_policy_defaults()`; the workflow reads `self._policy.<field>`
(see docs/adding-a-step.md).
"""

from __future__ import annotations

from typing import Any

from activities.errors import twilio_errors
from activities.interfaces import PolicySteps, implements
from flexsf import metrics
from flexsf.flex_config import FlexConfigCache
from flexsf.models import TaskPolicy, TaskWorkflowInput


class PolicyActivities(PolicySteps):
    def __init__(self, flex_config: FlexConfigCache, defaults: dict[str, Any]) -> None:
        """`defaults`: TaskPolicy fields from the worker's settings (timers, step options)."""
        self._flex_config = flex_config
        self._defaults = defaults

    @implements(PolicySteps.load_task_policy)
    def load_task_policy(self, req: TaskWorkflowInput) -> TaskPolicy:
        metrics.note_attempt("twilio")
        with twilio_errors("load_task_policy"):
            return TaskPolicy(flags=self._flex_config.flags(), **self._defaults)
