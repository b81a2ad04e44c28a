"""The Temporal worker: registers the task workflow and the Salesforce/Twilio activities, and the sweep.

Run with `python worker.py` or `flexsf worker`. Connects through Temporal's environment configuration
(`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS*`, `TEMPORAL_PROFILE`), builds the
Salesforce and Twilio clients once per process, creates or updates the sweep's Schedule for its task queue
(workflows/sweep_schedule.py), and drains in-flight work on SIGTERM/SIGINT. With an OTLP endpoint in the standard
`OTEL_*` variables it exports traces of its workflows, activities and Salesforce/Twilio calls (flexsf/tracing.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import (
    PollerBehaviorAutoscaling,
    PollerBehaviorSimpleMaximum,
    ResourceBasedSlotConfig,
    Worker,
    WorkerTuner,
)

from activities.activity_fields import ActivityFieldConfig
from activities.interfaces import activity_methods
from activities.policy import PolicyActivities
from activities.salesforce import SalesforceActivities, SearchConfig
from activities.salesforce_connection import SalesforceConnection
from activities.sweep import SweepActivities
from activities.twilio import TwilioActivities
from flexsf import logs, metrics, tracing
from flexsf.flex_config import FlexConfigCache
from flexsf.salesforce_client import SalesforceCredentials
from flexsf.settings import ConfigurationError, Settings, load_settings
from flexsf.temporal_client import connect
from flexsf.twilio_client import twilio_client_from
from workflows.sweep_schedule import start_sweep_schedule
from workflows.sweep_workflow import FlexTaskSweep
from workflows.task_workflow import FlexTaskWorkflow

log = logging.getLogger("flexsf.worker")
ACTIVITY_THREADS = 64
# Pollers per task queue (the SDK's default is 5). With 50 screen pops at once, 16 of each cut the wait between a
# search finishing and the attribute write starting by about half and the pop's p50 by ~14 % (`flexsf bench`,
# paired runs); throughput unchanged.
WORKFLOW_TASK_POLLS = ACTIVITY_TASK_POLLS = 16
# FLEXSF_WORKER_TUNING's alternatives. Against the fixed polls in the same bench rounds, autoscaling was a wash and
# the resource-based tuner slower (docs/performance.md#worker-tuning), so `fixed` stays the default.
# Autoscaling: the SDK's bounds (1 to 100 polls, 5 to begin with), scaled on the server's poll responses.
AUTOSCALING = PollerBehaviorAutoscaling(minimum=1, maximum=100, initial=5)
# Resource-based slots: the targets are the whole machine's (the SDK reads system CPU and memory), so other processes
# on the same host hold it back; memory at the SDK's recommended ceiling, CPU with a little headroom.
RESOURCE_TARGET_MEMORY = 0.8
RESOURCE_TARGET_CPU = 0.9
# How long a stopping worker lets running activities finish; docker-compose.yml's stop_grace_period must exceed it.
GRACEFUL_SHUTDOWN = timedelta(seconds=20)


@dataclass
class Activities:
    salesforce: SalesforceActivities
    twilio: TwilioActivities
    policy: PolicyActivities
    connection: SalesforceConnection

    def all(self) -> list:
        """Every activity method of the three classes, collected from them (a new method is registered by itself)."""
        return activity_methods(self.salesforce, self.twilio, self.policy)


def salesforce_credentials(settings: Settings) -> SalesforceCredentials:
    if not settings.salesforce_client_id:
        raise ConfigurationError("SALESFORCE_CLIENT_ID is not set")
    secret = settings.salesforce_client_secret
    password = settings.salesforce_password
    return SalesforceCredentials(
        token_url=settings.salesforce_token_url,
        client_id=settings.salesforce_client_id,
        client_secret=secret.get_secret_value() if secret else None,
        username=settings.salesforce_username,
        password=password.get_secret_value() if password else None,
        private_key_file=str(settings.salesforce_private_key_file) if settings.salesforce_private_key_file else None,
        api_version=settings.salesforce_api_version,
        ca_bundle=str(settings.salesforce_ca_bundle) if settings.salesforce_ca_bundle else None,
        jwt_audience=settings.salesforce_jwt_audience,
        timeout_s=settings.salesforce_timeout_s,
    )


def build_activities(settings: Settings) -> Activities:
    twilio = twilio_client_from(settings)
    if not settings.twilio_workspace_sid:
        raise ConfigurationError("TWILIO_WORKSPACE_SID is required")
    connection = SalesforceConnection(salesforce_credentials(settings))
    salesforce = SalesforceActivities(
        connection,
        SearchConfig(
            objects=settings.flexsf_search_objects,
            limit=settings.flexsf_search_limit,
            person_accounts=settings.flexsf_person_accounts,
            region=settings.flexsf_default_region,
        ),
        ActivityFieldConfig(
            priority=settings.flexsf_activity_priority,
            external_id_field=settings.flexsf_activity_external_id_field,
            topics_field=settings.flexsf_activity_topics_field,
            sentiment_field=settings.flexsf_activity_sentiment_field,
            activity_type=settings.flexsf_activity_type,
            notes_precedence=settings.flexsf_notes_precedence,
        ),
        owner_mapping=settings.flexsf_owner_mapping,
        api_budget_share=settings.flexsf_salesforce_api_budget_share,
    )
    flex_config = FlexConfigCache(twilio, settings.flexsf_features, settings.flexsf_flex_config_ttl_s)
    return Activities(
        salesforce=salesforce,
        twilio=TwilioActivities(twilio, settings.twilio_workspace_sid),
        policy=PolicyActivities(flex_config, settings.task_policy_defaults()),
        connection=connection,
    )


def tuning_options(tuning: str, activity_threads: int) -> dict[str, Any]:
    """The `Worker` arguments for FLEXSF_WORKER_TUNING: how many polls each task queue keeps open, and how many
    tasks run at once. Activities never outnumber the executor's threads (the SDK warns when they could)."""
    fixed = {
        "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(WORKFLOW_TASK_POLLS),
        "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(ACTIVITY_TASK_POLLS),
    }
    if tuning == "fixed":
        return fixed | {"max_concurrent_activities": activity_threads}
    if tuning == "autoscale":
        return {
            "workflow_task_poller_behavior": AUTOSCALING,
            "activity_task_poller_behavior": AUTOSCALING,
            "max_concurrent_activities": activity_threads,
        }
    if tuning == "resource":
        # Local activities run on the same executor as activities, so they share its bound.
        bounded = ResourceBasedSlotConfig(maximum_slots=activity_threads)
        tuner = WorkerTuner.create_resource_based(
            target_memory_usage=RESOURCE_TARGET_MEMORY,
            target_cpu_usage=RESOURCE_TARGET_CPU,
            activity_config=bounded,
            local_activity_config=bounded,
        )
        return fixed | {"tuner": tuner}
    raise ConfigurationError(f"unknown worker tuning {tuning!r} (fixed, autoscale or resource)")


def build_worker(
    client: Client,
    task_queue: str,
    activities: Activities,
    executor: ThreadPoolExecutor,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable] = (),
    tuning: str = "fixed",
    **options,
) -> Worker:
    """`extra_*`: registered beside the product's (`flexsf bench` adds its baseline workflow this way); `tuning`:
    FLEXSF_WORKER_TUNING; `options`: further `Worker` arguments (benchmark experiments), over the tuning's. The sweep's
    activity is built here, on the connected client."""
    # Gauges and calls outside an activity are recorded through the client's runtime (its Prometheus endpoint).
    metrics.bind_runtime(client.service_client.config.runtime)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[FlexTaskWorkflow, FlexTaskSweep, *extra_workflows],
        activities=[
            *activities.all(),
            *activity_methods(SweepActivities.beside(client, activities.twilio)),
            *extra_activities,
        ],
        activity_executor=executor,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        **(tuning_options(tuning, executor._max_workers) | options),
    )


async def require_search_attributes(client: Client) -> None:
    """Refuse to start where task workflows could not index themselves (their upserts would fail and stall them)."""
    from temporalio.service import RPCError

    from flexsf.search_attributes import missing_search_attributes

    try:
        missing = await missing_search_attributes(client)
    except RPCError as exc:
        # Some deployments do not let workers list search attributes; the operator checked them another way.
        log.warning("could not list search attributes (%s); assuming they are registered", exc.status.name)
        return
    if missing:
        raise ConfigurationError(
            f"namespace {client.namespace!r} lacks the search attributes {', '.join(missing)}; register them with "
            "`flexsf search-attributes --create` (self-hosted) or on Temporal Cloud (see docs/operating.md)"
        )


async def run(settings: Settings | None = None) -> None:
    settings = settings or load_settings()
    activities = build_activities(settings)
    runtime = None
    if settings.flexsf_worker_metrics_address:
        runtime = metrics.prometheus_runtime(settings.flexsf_worker_metrics_address)
        log.info("worker metrics on http://%s/metrics", settings.flexsf_worker_metrics_address)
    client = await connect(settings, runtime)
    await require_search_attributes(client)
    # Created or brought up to date by every worker at start (idempotent); a refusal is one warning line.
    await start_sweep_schedule(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS, thread_name_prefix="activity") as executor:
        worker = build_worker(
            client, settings.flexsf_task_queue, activities, executor, tuning=settings.flexsf_worker_tuning
        )
        async with worker:
            log.info("worker polling task queue %s", settings.flexsf_task_queue)
            await stop.wait()
            log.info("shutting down: draining in-flight activities")


def main() -> None:
    try:
        settings = load_settings()
        logs.setup_logging(settings)
        # Before connecting: the client (and so the worker) carries the tracing interceptor only once this is set up.
        tracing.start("flexsf-worker")
        asyncio.run(run(settings))
    except ConfigurationError as exc:
        raise SystemExit(f"flexsf worker: {exc}") from None
    # Drained and stopped: leave without interpreter teardown, where temporalio's core threads can abort the process
    # (sdk-python issue #300) and a clean stop would be reported as exit 134. That skips the exit hooks, so the spans
    # still batched are sent here.
    tracing.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
