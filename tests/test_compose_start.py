"""docker-compose.yml's start order, played without Docker: a Temporal server as a fresh cluster has it (no search
attributes), the `flexsf-setup` command exactly as compose runs it, then `flexsf worker` as a process of its own,
checked the way compose checks it (its healthcheck) and stopped the way Docker stops it (SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

import worker
from devtools.dev import sandbox_env
from devtools.netutil import free_port
from devtools.temporal_server import TemporalDevServer
from flexsf.search_attributes import DEFINITIONS

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TASK_QUEUE = "compose-start"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture
def fresh_cluster() -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(search_attributes={}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def product_env(fresh_cluster, clean_salesforce_sandbox, fresh_twilio_sandbox, metrics_port) -> dict[str, str]:
    """What the product's containers get: Temporal's address and namespace, the settings (here pointing at the
    sandboxes) and the worker's metrics address; nothing of this process's own product settings."""
    own = ("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    return env | sandbox_env(
        clean_salesforce_sandbox.info,
        fresh_twilio_sandbox.info,
        TASK_QUEUE,
        TEMPORAL_ADDRESS=fresh_cluster.address,
        TEMPORAL_NAMESPACE=fresh_cluster.namespace,
        FLEXSF_WORKER_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
    )


def installed(command: list[str]) -> list[str]:
    """A compose command run with this environment's console scripts (the image has them on PATH)."""
    return [str(BIN / command[0]), *command[1:]]


def worker_healthcheck(compose: dict, port: int) -> list[str]:
    """The worker's compose healthcheck, aimed at `port` instead of the container's fixed metrics port."""
    spec = compose["services"]["worker"]
    fixed = spec["environment"]["FLEXSF_WORKER_METRICS_ADDRESS"].rpartition(":")[2]
    kind, program, *args = spec["healthcheck"]["test"]
    assert kind == "CMD" and program == "python"
    return [sys.executable, *(a.replace(f":{fixed}/", f":{port}/") for a in args)]


async def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def pollers(client: Client, kind: TaskQueueType.ValueType) -> int:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=TASK_QUEUE), task_queue_type=kind
        )
    )
    return len(response.pollers)


async def test_the_worker_refuses_a_namespace_the_setup_has_not_prepared(product_env, tmp_path) -> None:
    done = await run(installed(["flexsf", "worker"]), product_env, tmp_path)
    assert done.returncode != 0
    assert "lacks the search attributes" in done.stderr, done.stderr[-3000:]
    for name in DEFINITIONS:
        assert name in done.stderr
    assert "flexsf search-attributes --create" in done.stderr


async def test_after_the_compose_setup_step_the_worker_polls_passes_its_healthcheck_and_stops_cleanly(
    compose, product_env, fresh_cluster, metrics_port, tmp_path
) -> None:
    healthcheck = worker_healthcheck(compose, metrics_port)
    assert (await run(healthcheck, product_env, tmp_path)).returncode != 0, "healthy before any worker runs"

    setup = compose["services"]["flexsf-setup"]["command"]
    done = await run(installed(setup), product_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"created: {', '.join(DEFINITIONS)}"
    # Every `docker compose up` runs it again.
    again = await run(installed(setup), product_env, tmp_path)
    assert again.returncode == 0 and "all search attributes are registered" in again.stdout, again.stderr[-3000:]

    log = tmp_path / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            installed(compose["services"]["worker"]["command"]),
            env=product_env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client = await Client.connect(fresh_cluster.address, namespace=fresh_cluster.namespace)
        deadline = asyncio.get_running_loop().time() + 60
        while not (
            await pollers(client, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
            and await pollers(client, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        ):
            assert process.poll() is None, f"the worker exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            assert asyncio.get_running_loop().time() < deadline, f"no pollers:\n{log.read_text()[-3000:]}"
            await asyncio.sleep(0.1)

        health = await run(healthcheck, product_env, tmp_path)
        assert health.returncode == 0, health.stderr[-3000:]

        process.send_signal(signal.SIGTERM)
        # Docker's stop_grace_period is checked against GRACEFUL_SHUTDOWN in test_deployment_files; with no activity
        # running the worker must be done well within it.
        code = await asyncio.to_thread(process.wait, worker.GRACEFUL_SHUTDOWN.total_seconds() + 30)
        output = log.read_text()
        assert "shutting down" in output
        assert code == 0, output[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
