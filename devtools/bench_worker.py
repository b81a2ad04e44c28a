"""The worker process `flexsf bench` and `flexsf soak` start: the product's worker (`worker.build_worker`) with the
bench's baseline workflow registered beside the task workflow. Settings from the environment, like `flexsf worker`.

Writes `FLEXSF_BENCH_READY_FILE` once it polls; drains and exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import worker as worker_module
from devtools.bench_workflow import BareWorkflow, bench_noop
from flexsf import logs
from flexsf.settings import load_settings
from flexsf.temporal_client import connect


def experiment_options() -> dict:
    """Worker settings under trial, from FLEXSF_BENCH_WORKER_OPTIONS (JSON), to compare in one run of the bench."""
    raw = json.loads(os.environ.get("FLEXSF_BENCH_WORKER_OPTIONS") or "{}")
    options = {k: v for k, v in raw.items() if k != "passthrough_all_modules"}
    if raw.get("passthrough_all_modules"):
        from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

        options["workflow_runner"] = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        )
    return options


async def run() -> None:
    settings = load_settings()
    activities = worker_module.build_activities(settings)
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=worker_module.ACTIVITY_THREADS, thread_name_prefix="activity") as executor:
        worker = worker_module.build_worker(
            client,
            settings.flexsf_task_queue,
            activities,
            executor,
            extra_workflows=[BareWorkflow],
            extra_activities=[bench_noop],
            tuning=settings.flexsf_worker_tuning,
            **experiment_options(),
        )
        async with worker:
            ready = os.environ.get("FLEXSF_BENCH_READY_FILE")
            if ready:
                Path(ready).write_text(str(os.getpid()))
            await stop.wait()


def main() -> None:
    logs.setup_logging(level="WARNING")
    asyncio.run(run())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # sdk-python issue #300: skip interpreter teardown after a clean stop


if __name__ == "__main__":
    main()
