"""The product's metrics: names, labels and where they are recorded, in one place.

Worker side, everything goes through Temporal's metric meters, so the product's counters are exported next to the
SDK's own metrics by the worker's Prometheus endpoint (`FLEXSF_WORKER_METRICS_ADDRESS`):

- inside an activity, `activity.metric_meter()` (labels `namespace`, `task_queue`, `activity_type` are added);
- elsewhere (a gauge, a call made outside an activity), the runtime meter of the worker's client, bound once by
  `bind_runtime()` when the worker is built; with none bound, a no-op meter.

Names already end in `_total` for counters: the Temporal exporter adds no suffix of its own.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import temporalio.runtime
from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

ACTIVITY_LOGS = "flexsf_salesforce_task_writes_total"
ACTIVITY_LOG_FIELDS_DROPPED = "flexsf_activity_log_fields_dropped_total"
ACTIVITY_LOGS_HELD = "flexsf_activity_logs_held_total"
ACTIVITY_LOG_OWNER_UNMAPPED = "flexsf_activity_log_owner_unmapped_total"
SALESFORCE_CALLS = "flexsf_salesforce_calls_total"
SALESFORCE_RETRIES = "flexsf_salesforce_retries_total"
SALESFORCE_API_USAGE = "flexsf_salesforce_api_usage"
SALESFORCE_API_LIMIT = "flexsf_salesforce_api_limit"
TWILIO_CALLS = "flexsf_twilio_calls_total"
TWILIO_RETRIES = "flexsf_twilio_retries_total"
# The sweep (workflows/sweep_workflow.py, activities/sweep.py).
SWEEP_RUNS = "flexsf_sweep_runs_total"
SWEEP_RECOVERIES = "flexsf_sweep_recoveries_total"
SWEEP_EVENTS_CALLS = "flexsf_sweep_events_list_calls_total"
SWEEP_LAST_SUCCESS = "flexsf_sweep_last_success_timestamp_seconds"
TASKS_REPAIRABLE = "flexsf_tasks_repairable"

_DESCRIPTIONS = {
    ACTIVITY_LOGS: "Writes of the call activity (a Salesforce Task) by result: created, amended, failed (an attempt)",
    ACTIVITY_LOG_FIELDS_DROPPED: "Task fields left out of the call activity because Salesforce refused them as gone, "
    "by field (WhoId, WhatId, OwnerId) and Salesforce errorCode",
    ACTIVITY_LOGS_HELD: "Attempts of the call activity's write held back, before any call, because the org's API usage "
    "was at or above FLEXSF_SALESFORCE_API_BUDGET_SHARE of its daily limit (the log waits and tries again)",
    ACTIVITY_LOG_OWNER_UNMAPPED: "Call activities created with the integration user as owner because "
    "FLEXSF_OWNER_MAPPING found no Salesforce user for the worker who handled the task, by mapping (email, "
    "sfdcUserId); the task's view says why",
    SALESFORCE_CALLS: "HTTP calls to Salesforce by kind, method and status ('unreachable': no answer)",
    SALESFORCE_RETRIES: "Retried attempts of Salesforce activities",
    SALESFORCE_API_USAGE: "Salesforce API requests used in the org's 24-hour window (Sforce-Limit-Info)",
    SALESFORCE_API_LIMIT: "Salesforce API requests allowed in the org's 24-hour window (Sforce-Limit-Info)",
    TWILIO_CALLS: "HTTP calls to Twilio by product, method and status ('unreachable': no answer)",
    TWILIO_RETRIES: "Retried attempts of Twilio activities",
    SWEEP_RUNS: "Sweep workflow runs by result: ok, failed (its window is read again by the next run)",
    SWEEP_RECOVERIES: "Tasks the sweep started a workflow for: TaskRouter finished them and none of their callbacks "
    "reached a workflow",
    SWEEP_EVENTS_CALLS: "TaskRouter Events-list calls (pages) made by the sweep",
    SWEEP_LAST_SUCCESS: "When the last successful sweep finished (Unix seconds), on the worker that ran it",
    TASKS_REPAIRABLE: "Running task workflows in a repairable stage (failed, waiting_for_api_budget), as counted by "
    "the last successful sweep, on the worker that ran it",
}

_runtime_meter: MetricMeter = MetricMeter.noop
_lock = threading.Lock()


def prometheus_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime serving Prometheus text on `http://<bind_address>/metrics` (pass it to `Client.connect`).

    Temporal's exporter defaults are kept (durations in milliseconds), as Temporal's published dashboards expect.
    """
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


def bind_runtime(runtime: temporalio.runtime.Runtime | None) -> None:
    """Record outside activities through this runtime's meter (the worker's client's runtime)."""
    global _runtime_meter
    with _lock:
        _runtime_meter = (runtime or temporalio.runtime.Runtime.default()).metric_meter


def _meter() -> MetricMeter:
    if activity.in_activity():
        try:
            return activity.metric_meter()
        except RuntimeError:  # a non-threaded sync activity (multiprocess): no meter
            pass
    return _runtime_meter


def _count(name: str, labels: dict[str, str] | None = None) -> None:
    _meter().create_counter(name, _DESCRIPTIONS[name]).add(1, labels)


def activity_logged(result: str) -> None:
    """result: created | amended | failed."""
    _count(ACTIVITY_LOGS, {"result": result})


def activity_log_field_dropped(field: str, reason: str) -> None:
    """reason: the Salesforce errorCode (ENTITY_IS_DELETED, INVALID_CROSS_REFERENCE_KEY, INACTIVE_OWNER_OR_USER)."""
    _count(ACTIVITY_LOG_FIELDS_DROPPED, {"field": field, "reason": reason})


def activity_log_held() -> None:
    """A log held back by the org's API budget (activities.salesforce.ApiBudget)."""
    _count(ACTIVITY_LOGS_HELD)


def activity_log_owner_unmapped(mapping: str) -> None:
    """A call activity created without its agent as owner (activities.salesforce: the worker mapped to no user)."""
    _count(ACTIVITY_LOG_OWNER_UNMAPPED, {"mapping": mapping})


def note_attempt(system: str) -> None:
    """Call at the start of an activity of `system` (salesforce | twilio); counts attempts after the first."""
    if activity.in_activity() and activity.info().attempt > 1:
        _count(SALESFORCE_RETRIES if system == "salesforce" else TWILIO_RETRIES)


def salesforce_kind(url: str) -> str:
    """What a Salesforce REST URL does, coarse enough to be a label: token, search, query, sobject, limits, other."""
    path = urlsplit(url).path
    if path.endswith("/oauth2/token"):
        return "token"
    for kind in ("search", "parameterizedSearch", "query", "sobjects", "limits", "composite"):
        if f"/{kind}" in path:
            return {"parameterizedSearch": "search", "sobjects": "sobject"}.get(kind, kind)
    return "other"


def salesforce_call(url: str, method: str, status: int | str) -> None:
    _count(SALESFORCE_CALLS, {"kind": salesforce_kind(url), "method": method.upper(), "status": str(status)})


def twilio_product(url: str) -> str:
    """`https://taskrouter.twilio.com/...` -> taskrouter, `flex-api` -> flex_api; not a Twilio host -> other.
    Callers pass the SDK's URL, before any rebasing onto a sandbox."""
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(".twilio.com"):
        return host.removesuffix(".twilio.com").replace("-", "_").split(".")[0]
    return "other"


def twilio_call(url: str, method: str, status: int | str) -> None:
    _count(TWILIO_CALLS, {"product": twilio_product(url), "method": method.upper(), "status": str(status)})


def salesforce_api_usage(used: int, limit: int) -> None:
    # The org-wide window is one number per process: through the runtime meter, without per-activity labels.
    _runtime_meter.create_gauge(SALESFORCE_API_USAGE, _DESCRIPTIONS[SALESFORCE_API_USAGE]).set(used)
    _runtime_meter.create_gauge(SALESFORCE_API_LIMIT, _DESCRIPTIONS[SALESFORCE_API_LIMIT]).set(limit)


def sweep_recovered(tasks: int) -> None:
    """Tasks the sweep's activity started a workflow for (each counted once: a retry finds them in hand)."""
    if tasks:
        _meter().create_counter(SWEEP_RECOVERIES, _DESCRIPTIONS[SWEEP_RECOVERIES]).add(tasks)


def sweep_events_calls(calls: int) -> None:
    if calls:
        _meter().create_counter(SWEEP_EVENTS_CALLS, _DESCRIPTIONS[SWEEP_EVENTS_CALLS]).add(calls)


def sweep_run(meter: MetricMeter, result: str, repairable: int = 0, finished_s: int = 0) -> None:
    """One sweep run, through the sweep workflow's meter (`workflow.metric_meter()`, silent on replay). result: ok |
    failed. The gauges are set together by the worker that ran the run, so an alert can read the repairable count of
    the worker with the latest success (deploy/prometheus/flexsf-alerts.yml)."""
    meter.create_counter(SWEEP_RUNS, _DESCRIPTIONS[SWEEP_RUNS]).add(1, {"result": result})
    if result == "ok":
        if repairable >= 0:  # -1: the namespace could not count them
            meter.create_gauge(TASKS_REPAIRABLE, _DESCRIPTIONS[TASKS_REPAIRABLE]).set(repairable)
        meter.create_gauge(SWEEP_LAST_SUCCESS, _DESCRIPTIONS[SWEEP_LAST_SUCCESS]).set(finished_s)
