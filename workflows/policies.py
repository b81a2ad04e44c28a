"""Timeouts and retry policies of every activity call, in one place."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from flexsf.vocabulary import NON_RETRYABLE_TYPES as NON_RETRYABLE

VENDOR_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=NON_RETRYABLE,
)

# A screen pop is useless once the agent has moved on: give the search a short budget.
SEARCH = dict(
    start_to_close_timeout=timedelta(seconds=20),
    schedule_to_close_timeout=timedelta(minutes=2),
    retry_policy=VENDOR_RETRY,
)
# Writes that matter after the call ends get hours; a Salesforce outage must not lose the log.
WRITE = dict(
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(hours=6),
    retry_policy=VENDOR_RETRY,
)
READ = dict(
    start_to_close_timeout=timedelta(seconds=20),
    schedule_to_close_timeout=timedelta(minutes=30),
    retry_policy=VENDOR_RETRY,
)

# Steps whose failure must not hold up or fail the task (a notice to another system, a courtesy update): a few quick
# attempts within a minute, then the workflow catches the ActivityError, records it and carries on. Never for the log
# or anything an operator would have to repair: those take WRITE and its hours.
BEST_EFFORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
    non_retryable_error_types=NON_RETRYABLE,
)
BEST_EFFORT = dict(
    start_to_close_timeout=timedelta(seconds=10),
    schedule_to_close_timeout=timedelta(minutes=1),
    retry_policy=BEST_EFFORT_RETRY,
)
