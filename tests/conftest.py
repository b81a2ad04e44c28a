"""Session-wide fixtures: one real Temporal dev server per test session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from devtools.netutil import free_port
from devtools.temporal_server import TemporalDevServer
from flexsf.metrics import prometheus_runtime

pytest_plugins = ["tests.fixtures_salesforce", "tests.fixtures_twilio", "tests.fixtures_stack"]


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    db = tmp_path_factory.mktemp("temporal") / "temporal.sqlite"
    server = TemporalDevServer(db_file=Path(db)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def worker_metrics_url() -> str:
    """Where the session client's runtime (so every in-process worker) serves its Prometheus metrics."""
    return f"http://127.0.0.1:{free_port()}/metrics"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_client(temporal_server: TemporalDevServer, worker_metrics_url: str) -> AsyncIterator[Client]:
    address = worker_metrics_url.removeprefix("http://").removesuffix("/metrics")
    yield await Client.connect(
        temporal_server.address,
        namespace=temporal_server.namespace,
        data_converter=pydantic_data_converter,
        runtime=prometheus_runtime(address),
    )


@pytest.fixture
def task_queue() -> str:
    """A queue of its own per test, so workers of different tests never steal each other's tasks."""
    return f"test-{uuid.uuid4()}"


# temporalio's Rust core threads can abort the interpreter while it tears down (sdk-python issue #300:
# "Fatal Python error: PyGILState_Release"), turning a green run red after the summary is printed. Once pytest has
# reported, leave with its own exit status instead of running interpreter teardown.
_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and not hasattr(config, "workerinput"):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
