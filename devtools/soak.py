"""`flexsf soak`: N tasks through a stack of its own, optionally under chaos, then an audit of Salesforce.

The tasks are `flexsf simulate`'s plan (single/several/no match, click-to-dial, canceled, copilot notes), played the
same way. With `--chaos`:

- Salesforce: 20 % of REST calls answer 503 (the sandbox's fail rate applies to reads and writes alike); for 5 % of
  the time every call answers 403 REQUEST_LIMIT_EXCEEDED (a 0.25 s window every 5 s: the sandbox's limit is a switch,
  not a rate); one write in 20 commits and then loses its answer (drop_after_commit re-armed every 20 writes); every
  session expires after 100 calls (re-armed each time it fires).
- TaskRouter callbacks: every one delivered twice, all shuffled in windows of 3 (a superset of "10 % reordered"),
  2 % of events never delivered (reconciliation through the Events list must find them; FLEXSF_LOST_EVENT_WINDOW_S=5),
  and failed deliveries retried with backoff (callback_attempts) so events survive Temporal's restart.
- The worker process is SIGKILLed every `--kill-every-s` and replaced; the Temporal dev server restarts (same history
  file and port) once mid-run, the gateway answering 503 meanwhile.

Afterwards every task's Salesforce Tasks are read back through simple-salesforce. Exit 1 unless none is lost, logged
twice or related to the wrong record.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from devtools.benchstack import Stack, cancelled_by_sigterm
from devtools.simulate import Driver, TaskResult, plan, salesforce_tasks, summarize
from flexsf.vocabulary import workflow_id

SOAK_ENV = {
    "FLEXSF_LOST_EVENT_WINDOW_S": "5",
    "FLEXSF_NOTES_GRACE_S": "1",
    "FLEXSF_SELECTION_TIMEOUT_S": "300",
    "FLEXSF_FLEX_CONFIG_TTL_S": "60",
    "FLEXSF_LOG_LEVEL": "WARNING",
}
SF_FAIL_RATE = 0.20
LIMIT_WINDOW_S, LIMIT_EVERY_S = 0.25, 5.0
DROP_EVERY_WRITES = 20  # one write in 20 commits and loses its answer
SESSION_CALLS = 100
CALLBACK_CHAOS = dict(
    callback_duplicate_fraction=1.0,
    callback_reorder="shuffle",
    callback_reorder_window=3,
    callback_reorder_flush_s=0.2,
    callback_drop_fraction=0.02,
)
# Enough attempts to outlast a Temporal restart: 0.25 s doubling → about a minute in all.
CALLBACK_RETRY = dict(callback_attempts=9, callback_backoff_s=0.25, callback_timeout_s=10.0)
RETRY_S = 120.0


class SoakDriver(Driver):
    """simulate's driver, with the agent's own steps retried while the worker or Temporal is away."""

    async def _retrying(self, step, what: str):
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                return await step()
            except Exception as exc:  # Temporal restarting, worker killed: try again, bounded
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} kept failing for {RETRY_S:.0f} s: {exc}") from exc
                await asyncio.sleep(0.5)

    async def _wait_view(self, sid, done, what):
        from workflows.task_workflow import FlexTaskWorkflow

        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                view = await asyncio.wait_for(self._handle(sid).query(FlexTaskWorkflow.view), 10)
                if done(view):
                    return view
            except Exception:  # not started, no worker polling, Temporal restarting
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {self.wait_s:.0f} s")
            await asyncio.sleep(0.2)

    async def _select(self, sid, p):
        await self._retrying(lambda: Driver._select(self, sid, p), "the record selection")

    async def _submit_notes(self, sid, p):
        await self._retrying(lambda: Driver._submit_notes(self, sid, p), "the notes")


class Chaos:
    """Runs beside the tasks: re-arms the Salesforce faults, kills and replaces the worker, restarts Temporal."""

    def __init__(self, stack: Stack, kill_every_s: float, progress) -> None:
        self.stack = stack
        self.kill_every_s = kill_every_s
        self.progress = progress
        self.worker_kills = 0
        self.worker_crashes = 0
        self.temporal_restarts = 0
        self.temporal_down_s: list[float] = []
        self.sessions_expired = 0
        self.limit_windows = 0
        self.drops_armed = 0

    def start_faults(self) -> None:
        self.stack.sf.faults.set(fail_rate=SF_FAIL_RATE, expire_sessions_after=SESSION_CALLS, drop_after_commit=1)
        self.drops_armed = 1
        self.stack.tw.faults.update(**CALLBACK_CHAOS, **CALLBACK_RETRY)

    def stop_faults(self) -> None:
        self.stack.sf.faults.reset()
        self.stack.tw.faults.update(
            callback_duplicate_fraction=0.0, callback_reorder="none", callback_drop_fraction=0.0
        )

    async def run(self, stop: asyncio.Event, restart_at: list[asyncio.Event]) -> None:
        faults = self.stack.sf.faults
        last_limit = time.monotonic()
        armed_at_writes = 0
        self.worker_up_since = time.monotonic()
        pending_restarts = list(restart_at)
        while not stop.is_set():
            now = time.monotonic()
            if faults.settings().expire_sessions_after is None:
                self.sessions_expired += 1
                faults.set(expire_sessions_after=SESSION_CALLS)
            if now - last_limit >= LIMIT_EVERY_S:
                last_limit = now
                self.limit_windows += 1
                faults.set(limit_exceeded=True)
                await asyncio.sleep(LIMIT_WINDOW_S)
                faults.set(limit_exceeded=False)
            writes = _writes(self.stack.sf.counters())
            if writes - armed_at_writes >= DROP_EVERY_WRITES and faults.settings().drop_after_commit == 0:
                armed_at_writes = writes
                self.drops_armed += 1
                faults.set(drop_after_commit=1)
            if pending_restarts and pending_restarts[0].is_set():
                pending_restarts.pop(0)
                down = await self.stack.restart_temporal()
                self.temporal_restarts += 1
                self.temporal_down_s.append(round(down, 2))
                self.progress(f"chaos: Temporal restarted ({down:.1f} s down)")
            if time.monotonic() - self.worker_up_since >= self.kill_every_s:
                # Counted from when the current worker began polling, so a slow start never means a kill per loop.
                self.stack.kill_worker()
                self.worker_kills += 1
                self.progress(f"chaos: worker killed ({self.worker_kills})")
            await self._keep_worker()
            try:
                await asyncio.wait_for(stop.wait(), 0.2)
            except TimeoutError:
                pass

    async def _keep_worker(self) -> None:
        if self.stack.worker is not None and self.stack.worker.poll() is None:
            return
        if self.stack.worker is not None:
            self.worker_crashes += 1  # it died on its own (e.g. Temporal went away under it)
            self.stack.worker = None
        for _ in range(10):
            try:
                await self.stack.start_worker()
                self.worker_up_since = time.monotonic()
                return
            except (RuntimeError, TimeoutError) as exc:
                self.progress(f"chaos: worker did not start ({exc}); again")
                await asyncio.sleep(1.0)
        raise RuntimeError("the worker could not be restarted 10 times in a row")


def _writes(counters: dict[str, int]) -> int:
    return sum(
        v for k, v in counters.items() if k.startswith(("sobject_create:", "sobject_update:", "sobject_upsert:"))
    )


async def settle(client, result: TaskResult, deadline: float) -> None:
    """Until the task's workflow has closed (retrying through kills and restarts), or the deadline."""
    from flexsf.models import TaskView

    if result.sid is None:
        return
    handle = client.get_workflow_handle(workflow_id(result.sid), result_type=TaskView)
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            view = await asyncio.wait_for(handle.result(), max(1.0, min(30.0, deadline - time.monotonic())))
            result.finished, result.stage = True, view.stage.value
            return
        except Exception as exc:  # not started yet, Temporal restarting, long poll timed out
            last = exc
            await asyncio.sleep(0.5)
    result.errors.append(f"workflow not finished: {type(last).__name__ if last else 'deadline'}")


async def run_soak(
    tasks: int,
    chaos: bool,
    concurrency: int = 20,
    kill_every_s: float = 30.0,
    temporal_restarts: int = 1,
    seed: int = 1,
    wait_s: float = 600.0,
    progress=None,
) -> dict[str, Any]:
    import httpx

    progress = progress or (lambda text: None)
    started = time.monotonic()
    async with Stack(env=SOAK_ENV, log=progress) as stack:
        workers = [w["sid"] for w in stack.tw.info["workers"] if "agent" in w.get("roles", [])]
        planned = plan(tasks, "mix", seed, workers)
        results = [TaskResult(p) for p in planned]
        info = {"urls": {"twilio_control": stack.tw.control_url, "gateway": stack.gateway_url}}
        chaos_loop = Chaos(stack, kill_every_s, progress)
        stop = asyncio.Event()
        restart_at = [asyncio.Event() for _ in range(temporal_restarts if chaos else 0)]
        if chaos:
            chaos_loop.start_faults()
        chaos_task = asyncio.create_task(chaos_loop.run(stop, restart_at)) if chaos else None

        async def play() -> None:
            async with httpx.AsyncClient(trust_env=False, timeout=30.0) as http:
                driver = SoakDriver(info, http, stack.client, "temporal", wait_s)
                gate = asyncio.Semaphore(concurrency)
                driven = 0

                async def one(result: TaskResult) -> None:
                    nonlocal driven
                    async with gate:
                        await driver.run(result)
                    driven += 1
                    for i, event in enumerate(restart_at):  # evenly spaced through the run, e.g. half-way
                        if driven >= tasks * (i + 1) / (len(restart_at) + 1):
                            event.set()
                    if driven % max(1, tasks // 10) == 0:
                        progress(f"driven {driven}/{tasks}")

                await asyncio.gather(*(one(r) for r in results))
                for event in restart_at:
                    event.set()
                deadline = time.monotonic() + wait_s
                gate = asyncio.Semaphore(200)

                async def settled(result: TaskResult) -> None:
                    async with gate:
                        await settle(stack.client, result, deadline)

                await asyncio.gather(*(settled(r) for r in results))
                progress(
                    "all workflows settled"
                    if all(r.finished for r in results if r.sid)
                    else "some workflows did not finish"
                )

        playing = asyncio.create_task(play())
        try:
            if chaos_task is not None:
                # A chaos loop that breaks ends the run: its figures would be wrong.
                await asyncio.wait({playing, chaos_task}, return_when=asyncio.FIRST_COMPLETED)
                if chaos_task.done() and not playing.done():
                    playing.cancel()
                    chaos_task.result()
            await playing
        finally:
            stop.set()
            if not playing.done():
                playing.cancel()
            if chaos_task is not None:
                await chaos_task
        if chaos:
            chaos_loop.stop_faults()
        faults = _faults(stack) if chaos else {}
        sids = [r.sid for r in results if r.sid]
        logged = await asyncio.to_thread(salesforce_tasks, stack.salesforce_info(), sids) if sids else {}
        for r in results:
            if r.sid:
                r.logged = logged.get(r.sid, [])
    summary = summarize(results, time.monotonic() - started, "temporal")
    faults["sessions_expired"] = chaos_loop.sessions_expired
    faults["limit_windows"] = chaos_loop.limit_windows
    return {
        "tasks": summary["tasks"],
        "logged": summary["logged"],
        "lost": summary["lost"] + summary["not_created"],
        "duplicates": summary["duplicates"],
        "misrelated": summary["related_wrongly"],
        "related_as_expected": summary["related_as_expected"],
        "unfinished": summary["unfinished"],
        "errors": summary["errors"],
        "error_details": summary["error_details"][:20],
        "chaos": chaos,
        "worker_kills": chaos_loop.worker_kills,
        "worker_crashes": chaos_loop.worker_crashes,
        "temporal_restarts": chaos_loop.temporal_restarts,
        "temporal_down_s": chaos_loop.temporal_down_s,
        "faults_injected": sum(faults.values()) if chaos else 0,
        "faults": faults,
        "scenarios": summary["scenarios"],
        "wall_s": round(time.monotonic() - started, 1),
    }


def _faults(stack: Stack) -> dict[str, int]:
    sf = stack.sf.counters()
    tw = stack.tw.counters()
    return {
        "salesforce_503": sf.get("fault_503", 0),
        "salesforce_limit_exceeded": sf.get("limit_exceeded", 0),
        "salesforce_dropped_after_commit": sf.get("dropped_after_commit", 0),
        "salesforce_unauthorized": sf.get("unauthorized", 0),
        "callbacks_duplicated": tw.get("callbacks_duplicated", 0),
        "callbacks_dropped": tw.get("callbacks_dropped", 0),
        "callbacks_failed_then_retried": tw.get("callbacks_failed", 0),
    }


def failed(summary: dict[str, Any]) -> bool:
    return bool(summary["lost"] or summary["duplicates"] or summary["misrelated"])


def soak_command(
    tasks: int,
    chaos: bool,
    as_json: bool,
    concurrency: int,
    kill_every_s: float,
    temporal_restarts: int,
    seed: int,
    wait_s: float,
) -> int:
    from rich.console import Console
    from rich.table import Table

    from flexsf import logs

    logs.setup_logging(level="WARNING")
    console = Console(stderr=as_json)
    summary = asyncio.run(
        cancelled_by_sigterm(
            run_soak(
                tasks,
                chaos,
                concurrency,
                kill_every_s,
                temporal_restarts,
                seed,
                wait_s,
                progress=lambda text: console.print(text),
            )
        )
    )
    table = Table(title=f"flexsf soak · {tasks} tasks{' · chaos' if chaos else ''} · {summary['wall_s']} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in (
        "tasks",
        "logged",
        "lost",
        "duplicates",
        "misrelated",
        "unfinished",
        "errors",
        "worker_kills",
        "worker_crashes",
        "temporal_restarts",
        "faults_injected",
    ):
        bad = key in ("lost", "duplicates", "misrelated") and summary[key]
        table.add_row(key.replace("_", " "), str(summary[key]), style="red" if bad else "")
    for key, value in summary["faults"].items():
        table.add_row(f"  {key.replace('_', ' ')}", str(value))
    console.print(table)
    for line in summary["error_details"][:10]:
        console.print(f"  {line}", markup=False, highlight=False)
    if as_json:
        print(json.dumps(summary), flush=True)
    return 1 if failed(summary) else 0
