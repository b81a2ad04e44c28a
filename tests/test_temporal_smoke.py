"""The test fixtures really start a Temporal dev server that runs workflows and activities."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker


@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn
class SmokeWorkflow:
    def __init__(self) -> None:
        self._names: list[str] = []

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: len(self._names) >= 2)
        return [
            await workflow.execute_activity(greet, n, start_to_close_timeout=timedelta(seconds=10)) for n in self._names
        ]

    @workflow.signal
    def add(self, name: str) -> None:
        self._names.append(name)


async def test_signal_with_start_runs_on_real_dev_server(temporal_client: Client, task_queue: str) -> None:
    wf_id = f"smoke-{uuid.uuid4()}"
    async with Worker(temporal_client, task_queue=task_queue, workflows=[SmokeWorkflow], activities=[greet]):
        for name in ("ada", "bob"):
            handle = await temporal_client.start_workflow(
                SmokeWorkflow.run, id=wf_id, task_queue=task_queue, start_signal="add", start_signal_args=[name]
            )
        assert await handle.result() == ["hello ada", "hello bob"]
    desc = await handle.describe()
    assert desc.status is not None and desc.status.name == "COMPLETED"
