"""The task's vocabulary, named once: how its workflow is identified, which TaskRouter events it hears, which Flex
flags steer it, how vendor failures are typed. Every room (gateway, workflow, activities, operator and development
tools) spells these from here, so a rename is one edit.

Plain constants only: the workflow imports this module, so it must stay free of I/O and configuration.
"""

from __future__ import annotations

# ---- the workflow ----------------------------------------------------------------------------------------------

WORKFLOW_TYPE = "FlexTaskWorkflow"
WORKFLOW_ID_PREFIX = "flex-task-"


def workflow_id(task_sid: str) -> str:
    """One workflow per Flex task: `flex-task-<TaskSid>`."""
    return WORKFLOW_ID_PREFIX + task_sid


# Its signals, by name, for senders that must not import the workflow (flexsf.delivery); tests/test_sweep.py checks
# they are the workflow's.
TASK_EVENT_SIGNAL = "task_event"
NOTES_SIGNAL = "submit_notes"


# Copilot notes submissions one task takes (each replaces the last; each is kept in the workflow's history, so an
# agent must not be able to grow it without bound). The gateway submits them as this update.
NOTES_PER_TASK_MAX = 20
NOTES_UPDATE = "add_notes"


# The sweep: a Temporal Schedule starts this workflow every few minutes to recover tasks whose callbacks were lost.
SWEEP_WORKFLOW_TYPE = "FlexTaskSweep"
SWEEP_SCHEDULE_ID = "flexsf-sweep"


def task_sid_of(workflow_id: str) -> str:
    return workflow_id.removeprefix(WORKFLOW_ID_PREFIX)


# ---- TaskRouter events -----------------------------------------------------------------------------------------

TASK_CREATED = "task.created"
TASK_UPDATED = "task.updated"
TASK_WRAPUP = "task.wrapup"
TASK_COMPLETED = "task.completed"
TASK_CANCELED = "task.canceled"
TASK_DELETED = "task.deleted"
TASK_SYSTEM_DELETED = "task.system-deleted"
RESERVATION_ACCEPTED = "reservation.accepted"

# How a finished task ended, as the activity log's outcome says it.
FINISHED_EVENTS = {TASK_COMPLETED: "Completed", TASK_CANCELED: "Canceled"}
# Purged before a completion reached us: the workflow asks TaskRouter how it ended.
GONE_EVENTS = frozenset({TASK_DELETED, TASK_SYSTEM_DELETED})
# Events the workflow acts on; TaskRouter sends many more (worker activity, queue stats …) that the gateway ignores.
HANDLED_EVENTS = frozenset(
    {TASK_CREATED, TASK_UPDATED, TASK_WRAPUP, RESERVATION_ACCEPTED, *FINISHED_EVENTS, *GONE_EVENTS}
)

# ---- Flex's salesforce_integration flags (flexsf.models.FeatureFlags holds them; the agent bridge reads them) ----

FLAG_NAMES = (
    "enabled",
    "activity_logging",
    "click_to_dial",
    "copilot_notes",
    "hide_crm_container",
    "prevent_popout_during_call",
    "screen_pop",
)

# ---- failure types activities raise (ApplicationError.type) ------------------------------------------------------

SALESFORCE_VALIDATION = "SalesforceValidationError"
SALESFORCE_NOT_FOUND = "SalesforceNotFound"
SALESFORCE_AUTH = "SalesforceAuthError"
SALESFORCE_REFUSED = "SalesforceRefused"
SALESFORCE_UNAVAILABLE = "SalesforceUnavailable"
SALESFORCE_UNREACHABLE = "SalesforceUnreachable"
TWILIO_REQUEST = "TwilioRequestError"
TWILIO_UNAVAILABLE = "TwilioUnavailable"
TWILIO_UNREACHABLE = "TwilioUnreachable"
TASK_ATTRIBUTES_CONTENDED = "TaskAttributesContended"
# TaskRouter answered a fetch without an ETag: writing anyway could overwrite a concurrent Flex UI write; retried.
TASK_ATTRIBUTES_UNGUARDED = "TaskAttributesWithoutETag"
# A setting is wrong for this org or account (a refused grant, a restricted key): the message names the setting.
SALESFORCE_CONFIGURATION = "SalesforceConfigurationError"
TWILIO_CONFIGURATION = "TwilioConfigurationError"
# The org's daily API usage is at or above the configured share: the write was not attempted; the workflow waits.
# Its details are (used, limit, share). Non-retryable so the wait is the workflow's, visible on the task.
SALESFORCE_API_BUDGET = "SalesforceApiBudgetLow"
# What retrying cannot fix: the retry policies stop on these.
NON_RETRYABLE_TYPES = [
    SALESFORCE_VALIDATION,
    SALESFORCE_NOT_FOUND,
    SALESFORCE_AUTH,
    SALESFORCE_REFUSED,
    SALESFORCE_CONFIGURATION,
    TWILIO_REQUEST,
    TWILIO_CONFIGURATION,
    SALESFORCE_API_BUDGET,
]
