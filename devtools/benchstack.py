"""The stack `flexsf bench` and `flexsf soak` start for themselves.

The Temporal dev server with the settings `flexsf dev` uses (a history file, WAL + synchronous=off) on free ports, both
sandboxes in this process with no added latency, the gateway in this process (its TaskRouter callbacks timed on
arrival), and the worker as a separate process (`python -m devtools.bench_worker`), so its memory is measurable from
/proc and it can be killed with SIGKILL and replaced. Everything started here is stopped by `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from devtools.dev import DEV_TASK_QUEUE, HOST, sandbox_env, settings_with
from devtools.netutil import free_port
from devtools.temporal_server import TemporalDevServer

WORKER_READY_TIMEOUT_S = 60.0
_ENV_PREFIXES = ("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_")


async def cancelled_by_sigterm(coro):
    """Run `coro`; SIGTERM/SIGINT cancel it, so the stack's cleanup (server, worker process) still runs."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class ReceiveClock:
    """ASGI wrapper in front of the gateway: the wall-clock time each TaskRouter callback reached it.

    `first[(event_type, task_sid)]` is the arrival of the first copy (duplicates and retries keep the first)."""

    def __init__(self, app) -> None:
        self.app = app
        self.first: dict[tuple[str, str], float] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/taskrouter/events":
            await self.app(scope, receive, send)
            return
        arrived = time.time()
        body = bytearray()

        async def recording_receive():
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        await self.app(scope, recording_receive, send)
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        key = (form.get("EventType", ""), form.get("TaskSid", ""))
        self.first.setdefault(key, arrived)


class Stack:
    def __init__(
        self, workdir: Path | None = None, env: dict[str, str] | None = None, callback_workers: int = 32, log=None
    ) -> None:
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="flexsf-bench-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.extra_env = env or {}
        self.callback_workers = callback_workers
        self.log = log or (lambda text: None)
        self.temporal: TemporalDevServer | None = None
        self.sf = None
        self.tw = None
        self.client = None
        self.settings = None
        self.env: dict[str, str] = {}
        self.clock: ReceiveClock | None = None
        self.worker: subprocess.Popen | None = None
        self.worker_starts = 0
        self._gateway = None
        self._temporal_log = None
        self._worker_log = None

    # ---- life cycle ----------------------------------------------------------------------------------------------

    async def start(self) -> Stack:
        from temporalio.client import Client

        from flexsf.temporal_client import data_converter
        from gateway.app import create_app
        from gateway.server import start_gateway
        from sandboxes.salesforce import SalesforceSandbox
        from sandboxes.twilio import TwilioSandbox

        self._temporal_log = open(self.workdir / "temporal.log", "ab")
        self.temporal = TemporalDevServer(host=HOST, port=free_port(HOST), db_file=self.workdir / "temporal.sqlite")
        await asyncio.to_thread(self.temporal.start, 60.0, self._temporal_log)
        self.sf = SalesforceSandbox(host=HOST, port=0, state=":memory:", workdir=str(self.workdir / "salesforce"))
        self.sf.start()
        self.tw = TwilioSandbox(host=HOST, port=0, retention_s=3600, callback_workers=self.callback_workers)
        self.tw.start()
        port = free_port(HOST)
        self.gateway_url = f"http://{HOST}:{port}"
        self.env = sandbox_env(
            self.sf.info,
            self.tw.info,
            DEV_TASK_QUEUE,
            TEMPORAL_ADDRESS=self.temporal.address,
            TEMPORAL_NAMESPACE=self.temporal.namespace,
            # The URL the sandbox's callbacks are sent to, which their signatures cover.
            **({"FLEXSF_PUBLIC_BASE_URL": self.gateway_url} | self.extra_env),
        )
        self.settings = settings_with(self.env)
        self.client = await Client.connect(
            self.temporal.address, namespace=self.temporal.namespace, data_converter=data_converter(self.settings)
        )
        self.clock = ReceiveClock(create_app(self.settings, self.client))
        self._gateway = await start_gateway(self.clock, HOST, port, log_config=None)
        self.tw.set_callback_url(f"{self.gateway_url}/taskrouter/events")
        await self.start_worker()
        return self

    async def close(self) -> None:
        from gateway.server import stop_gateway

        with contextlib.suppress(Exception):
            self.stop_worker()
        if self.tw is not None:
            self.tw.set_callback_url(None)
        if self._gateway is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stop_gateway(*self._gateway), 30)
            self._gateway = None
        for stop in (
            self.tw.stop if self.tw else None,
            self.sf.stop if self.sf else None,
            self.temporal.stop if self.temporal else None,
        ):
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()
        for f in (self._temporal_log, self._worker_log):
            if f is not None:
                f.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def __aenter__(self) -> Stack:
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---- the worker process ----------------------------------------------------------------------------------------

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
        return env | self.env

    async def start_worker(self, env: dict[str, str] | None = None) -> None:
        """Start a worker process and return once it polls (it says so in a ready file). `env`: settings of this
        worker process only (a worker configuration compared with another in the same run)."""
        ready = self.workdir / f"worker-{self.worker_starts}.ready"
        if self._worker_log is None:
            self._worker_log = open(self.workdir / "worker.log", "ab")
        env = self.worker_env() | (env or {}) | {"FLEXSF_BENCH_READY_FILE": str(ready)}
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "devtools.bench_worker"],
            env=env,
            stdout=self._worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        self.worker_starts += 1
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while not ready.exists():
            if self.worker.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with {self.worker.returncode} before polling "
                    f"(see {self.workdir / 'worker.log'})"
                )
            if time.monotonic() > deadline:
                self.kill_worker()
                raise TimeoutError(f"the worker did not poll within {WORKER_READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)

    def kill_worker(self) -> None:
        """SIGKILL: no drain, no goodbye; in-flight activities time out and are retried by the next worker."""
        proc, self.worker = self.worker, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(30)

    def stop_worker(self) -> None:
        proc, self.worker = self.worker, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def worker_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.worker.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS for the worker")

    # ---- Temporal --------------------------------------------------------------------------------------------------

    async def start_sweep_schedule(
        self, interval_s: float, overlap_s: float | None = None, first_lookback_s: float | None = None
    ) -> str:
        """The sweep's Schedule on the stack's task queue, as `flexsf worker` creates it at start (the bench worker is
        built with `worker.build_worker`, which registers the sweep but leaves the schedule to the caller: a sweep
        firing during the bench's API-economy phase would add its Events-list calls to the per-task counts)."""
        from workflows.sweep_schedule import ensure_sweep_schedule

        settings = self.settings
        return await ensure_sweep_schedule(
            self.client,
            settings.flexsf_task_queue,
            interval_s,
            settings.flexsf_sweep_overlap_s if overlap_s is None else overlap_s,
            settings.flexsf_sweep_first_lookback_s if first_lookback_s is None else first_lookback_s,
        )

    async def restart_temporal(self) -> float:
        """Stop the dev server and start it again on the same port and history file; seconds it was down."""
        started = time.monotonic()
        await asyncio.to_thread(self.temporal.stop)
        await asyncio.to_thread(self.temporal.start, 60.0, self._temporal_log)
        return time.monotonic() - started

    def salesforce_info(self) -> dict[str, Any]:
        return {"salesforce": self.sf.info}
