"""FLEXSF_WORKER_TUNING: the worker an operator starts polls and sizes its slots as the setting says, and still does
the screen pop and the log. Each tuning is checked on `python worker.py` itself, through what its Prometheus
endpoint reports (the SDK's own gauges), with one task through the gateway, Temporal and both sandboxes."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.worker import PollerBehaviorAutoscaling, PollerBehaviorSimpleMaximum, WorkerTuner

import worker
from devtools.netutil import free_port
from flexsf.models import Stage
from flexsf.settings import ConfigurationError
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import (
    Stack,
    WorkerProcess,
    eventually,
    process_env,
    settings_from,
    stack_env,
    stack_gateway,
)

AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
REPO = Path(__file__).resolve().parent.parent
THREADS = 8


def test_fixed_polls_sixteen_of_each_and_bounds_activities_by_the_threads() -> None:
    options = worker.tuning_options("fixed", THREADS)

    assert options == {
        "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(16),
        "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(16),
        "max_concurrent_activities": THREADS,
    }


def test_autoscale_scales_both_pollers_and_bounds_activities_by_the_threads() -> None:
    options = worker.tuning_options("autoscale", THREADS)

    assert isinstance(options["workflow_task_poller_behavior"], PollerBehaviorAutoscaling)
    assert isinstance(options["activity_task_poller_behavior"], PollerBehaviorAutoscaling)
    assert options["max_concurrent_activities"] == THREADS
    assert "tuner" not in options


def test_resource_sizes_slots_by_resources_but_never_past_the_threads() -> None:
    options = worker.tuning_options("resource", THREADS)

    tuner = options["tuner"]
    assert isinstance(tuner, WorkerTuner)
    # The SDK refuses a tuner beside max_concurrent_*; the executor's bound is the tuner's activity maximum instead.
    assert "max_concurrent_activities" not in options
    assert tuner._get_activities_max() == THREADS
    assert tuner._get_local_activity_task_slot_supplier().slot_config.maximum_slots == THREADS
    assert options["workflow_task_poller_behavior"] == PollerBehaviorSimpleMaximum(16)


def test_an_unknown_tuning_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="FLEXSF_WORKER_TUNING"):
        settings_from({"FLEXSF_WORKER_TUNING": "turbo"})
    with pytest.raises(ConfigurationError, match="turbo"):
        worker.tuning_options("turbo", THREADS)


def test_the_default_is_the_fixed_pollers() -> None:
    assert settings_from({}).flexsf_worker_tuning == "fixed"


# ---- the worker process ---------------------------------------------------------------------------------------------


def gauges(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the worker's /metrics serves, by name and labels."""
    text = httpx.get(url, timeout=10, trust_env=False).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def named(samples: dict, name: str, **labels: str) -> list[float]:
    return [v for (n, ls), v in samples.items() if n == name and all((k, v2) in ls for k, v2 in labels.items())]


def polls(samples: dict) -> tuple[list[float], float]:
    """Open activity-task polls, and workflow-task polls on the sticky and the normal queue together."""
    workflow = named(samples, "temporal_num_pollers", poller_type="workflow_task") + named(
        samples, "temporal_num_pollers", poller_type="sticky_workflow_task"
    )
    return named(samples, "temporal_num_pollers", poller_type="activity_task"), sum(workflow)


@pytest.mark.parametrize("tuning", ["fixed", "autoscale", "resource"])
async def test_the_worker_runs_with_the_chosen_tuning_and_pops_and_logs(
    tuning, temporal_server, temporal_client, clean_salesforce_sandbox, fresh_twilio_sandbox, tmp_path
) -> None:
    sf, tw = clean_salesforce_sandbox, fresh_twilio_sandbox
    task_queue = f"tuning-{tuning}-{uuid.uuid4()}"
    metrics = f"127.0.0.1:{free_port()}"
    env = process_env(
        temporal_server.address,
        stack_env(
            sf.info,
            tw.info,
            task_queue,
            FLEXSF_NOTES_GRACE_S="0",
            FLEXSF_WORKER_TUNING=tuning,
            FLEXSF_WORKER_METRICS_ADDRESS=metrics,
        ),
    )
    async with stack_gateway(temporal_client, env, tw) as gateway:
        stack = Stack(temporal_client, task_queue, env, None, sf, tw, gateway)
        process = WorkerProcess(env, tmp_path / "worker.log")
        try:
            await eventually(process.polling, what="the worker polling")
            sid = tw.lifecycle({"from": CONTACT.phone}, worker_sid=AGENT.sid)["sid"]
            view = await stack.wait_for(sid, lambda v: v.stage == Stage.IN_PROGRESS)
            assert view.pop.record.id == CONTACT.id
            tw.wrapup(sid)
            tw.complete(sid)
            assert (await stack.result(sid)).stage == Stage.LOGGED

            url = f"http://{metrics}/metrics"
            if tuning == "fixed":
                # A poll that has just handed over a task is opened again at once: all 16 of each, once settled.
                await eventually(lambda: polls(gauges(url)) == ([16.0], 16.0), what="16 and 16 polls open")
            samples = gauges(url)
        finally:
            process.stop()

    # What the SDK reports of the worker's polls (a fixed maximum splits the workflow-task polls between the sticky and
    # the normal queue) and of its slots (a resource-based supplier has no fixed number available).
    activity_polls, workflow_polls = polls(samples)
    activity_slots = named(samples, "temporal_worker_task_slots_available", worker_type="ActivityWorker")
    resource_gauges = named(samples, "temporal_resource_slots_cpu_usage")
    if tuning == "autoscale":
        # Scaled from the SDK's initial 5 on the server's answers: never the fixed 16 and 16 after one idle task.
        assert (activity_polls, workflow_polls) != ([16.0], 16.0), (activity_polls, workflow_polls)
    if tuning == "resource":
        assert resource_gauges and not activity_slots
    else:
        assert not resource_gauges
        assert activity_slots == [float(worker.ACTIVITY_THREADS)], activity_slots
