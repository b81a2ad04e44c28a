"""`flexsf bench`: throughput, screen-pop overhead, API economy and worker memory, on a stack of its own.

Phases (one stack, one worker process, one run):

1. API calls per task, per scenario (single match, several + selection, no match, by id, outbound), from the sandboxes'
   counters. The first single-match task of the run also pays the login and the owner lookup ("first").
2. Throughput: full lifecycles (created → accepted → single-match pop → completed → logged) driven through signed
   callbacks into the gateway at a fixed concurrency, then the bare baseline workflow (same signals, no-op activities)
   on the same server and worker. `throughput_ratio` = lifecycle ÷ bare.
3. Screen-pop overhead at 50 concurrent tasks: from the gateway receiving `reservation.accepted` to the Twilio sandbox
   applying the attribute write that carries `sfdcObjectId`, minus the time spent inside the sandboxes' handlers for
   that task's calls in that window (its SOSL search, matched by the caller's unique number, and its Twilio task fetch
   and update, matched by task sid). Per-stage times come from the workflow histories.
   `pop_workflow_tasks`: the workflow tasks a single-match pop takes, from the histories of the unloaded pops.
   Agent-felt pop (devtools/agent_bench.py): the real bridge in headless Chromium, from the agent's accept to Open
   CTI's `screenPop` called, sandbox time subtracted, one at a time and with 20 accepts within one second.
4. Worker memory with open (accepted, not completed) task workflows, read from /proc/<worker>/status.
5. The sweep's API cost: `sweep_tasks` tasks (833: five minutes at 10k tasks/hour) finish in the Twilio sandbox with
   callbacks off: the memory phase's open tasks (their workflows stay open, in hand) and 1 % new ones that never had
   a workflow. Two sweeps read that window: the first recovers the lost ones (each costs one Events-list call of its
   own), the second finds every task in hand, the steady state: its Events-list pages per minute of traffic are the
   figure (target ≤ 1). Every recovered task must be logged.

Every figure is from this run on this machine; speeds are only compared within the run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import statistics
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.bench_workflow import SIGNALS, BareInput, BareSignal, BareWorkflow
from devtools.benchstack import Stack, cancelled_by_sigterm
from devtools.history_stats import pop_workflow_tasks
from devtools.progress import NO_BARS, Bars, shows_bars
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo

BENCH_ENV = {
    # Production defaults where the dev stack shortens them: the Flex configuration is cached for a minute, and no
    # reconciliation timer fires while tasks are open. Workflows close as soon as the log is written.
    "FLEXSF_FLEX_CONFIG_TTL_S": "60",
    "FLEXSF_LOST_EVENT_WINDOW_S": "3600",
    "FLEXSF_NOTES_GRACE_S": "0",
    "FLEXSF_LOG_LEVEL": "WARNING",
}
AGENT = tw_demo.DEMO_WORKERS[0]
CONTACT = sf_demo.UNIQUE_PHONE_CONTACT
SCENARIOS = ("single", "several", "none", "by_id", "outbound")
_TASK_PATH = re.compile(r"/Tasks/(WT[0-9a-f]{32})$")
WAIT_S = 120.0
STICKY_CACHE = 1000  # temporalio's default max_cached_workflows, which worker.build_worker keeps


# The traffic the sweep's cost is stated at: 10,000 tasks an hour.
TASKS_PER_MINUTE = 10000 / 60
# The sweep phase's tasks carry their record (an IVR data dip): no search, so recovering them is mostly the log.
BY_ID = {"from": CONTACT.phone, "sfdcObjectId": CONTACT.id, "sfdcObjectType": "Contact"}


@dataclass(frozen=True)
class Sizes:
    per_scenario: int
    lifecycles: int
    concurrency: int
    pop_tasks: int
    pop_rounds: int
    open_checkpoints: tuple[int, ...]
    # Finished tasks in the sweep's window: 833 are five minutes at 10k tasks/hour.
    sweep_tasks: int = 833
    # The agent-felt pop: tasks accepted one at a time, then tasks accepted within one second.
    agent_single: int = 5
    agent_tasks: int = 20


# Quick: memory up to just past the sticky cache, so the 10k figure is extrapolated from measured slopes.
QUICK = Sizes(
    per_scenario=3,
    lifecycles=120,
    concurrency=20,
    pop_tasks=50,
    pop_rounds=1,
    open_checkpoints=(250, 1000, 1400),
)
FULL = Sizes(
    per_scenario=10,
    lifecycles=600,
    concurrency=20,
    pop_tasks=50,
    pop_rounds=4,
    open_checkpoints=(1000, 5000, 10000),
    agent_single=10,
)


def e164(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return "+" + (digits if len(digits) > 10 else "1" + digits)


class Observer:
    """Sandbox hooks: what each request cost inside the sandboxes, and who is waiting for a task's screen pop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.twilio: dict[str, list[tuple[str, float, float]]] = defaultdict(list)  # sid -> (endpoint, start, s)
        self.pop_written: dict[str, float] = {}  # sid -> wall time the sfdcObjectId write was applied
        self.searches: list[tuple[str, float, float]] = []  # (digits in the query, start, s)
        self.salesforce_s = 0.0
        self._waiters: dict[str, asyncio.Future] = {}

    def on_twilio(self, req, response, started: float, seconds: float) -> None:
        match = _TASK_PATH.search(req.path)
        if match is None:
            return
        sid = match.group(1)
        kind = "update" if req.method == "POST" else "fetch"
        with self.lock:
            self.twilio[sid].append((kind, started, seconds))
        if kind == "update" and response.status == 200 and "sfdcObjectId" in "".join(req.form.get("Attributes", [])):
            with self.lock:
                self.pop_written.setdefault(sid, started + seconds)
            self.loop.call_soon_threadsafe(self._wake, sid)

    def on_salesforce(self, req, response, started: float, seconds: float) -> None:
        with self.lock:
            self.salesforce_s += seconds
            if req.path.rstrip("/").endswith("/search"):
                digits = re.sub(r"\D", "", " ".join(req.query.get("q", [])))
                self.searches.append((digits, started, seconds))

    def _wake(self, sid: str) -> None:
        future = self._waiters.pop(sid, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def popped(self, sid: str, timeout: float = WAIT_S) -> None:
        """Until the task's record is written on its attributes (the screen pop is visible to Flex)."""
        with self.lock:
            if sid in self.pop_written:
                return
            future = self._waiters.setdefault(sid, self.loop.create_future())
        await asyncio.wait_for(future, timeout)

    def sandbox_seconds(self, sid: str, digits: str, start: float, end: float) -> float:
        with self.lock:
            twilio = sum(s for _, t, s in self.twilio.get(sid, []) if start <= t <= end)
            search = sum(s for q, t, s in self.searches if digits in q and start <= t <= end)
        return twilio + search


class Bench:
    def __init__(self, stack: Stack, sizes: Sizes, progress=None, bars: Bars = NO_BARS) -> None:
        self.stack = stack
        self.sizes = sizes
        self.tw = stack.tw
        self.client = stack.client
        self.progress = progress or (lambda text: None)
        self.bars = bars
        self.observer = Observer(asyncio.get_running_loop())
        self.tw.time_requests(self.observer.on_twilio)
        stack.sf.time_requests(self.observer.on_salesforce)
        self.run_id = uuid.uuid4().hex[:8]
        self.own_logins = 0
        self.open_sids: list[str] = []  # accepted, never completed: the memory phase's

    # ---- driving tasks ---------------------------------------------------------------------------------------------

    async def _tw(self, fn, *args, **kwargs):
        # The sandbox's Python API takes its lock and queues callbacks: off the loop the gateway serves on.
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def accepted(self, attributes: dict[str, Any], worker_sid: str = AGENT.sid) -> str:
        sid = (await self._tw(self.tw.create_task, attributes))["sid"]
        await self._tw(self.tw.reserve, sid, worker_sid)
        await self._tw(self.tw.accept, sid)
        return sid

    async def finish(self, sid: str):
        await self._tw(self.tw.wrapup, sid)
        await self._tw(self.tw.complete, sid, "resolved")
        return await self.result(sid)

    async def result(self, sid: str, timeout: float = WAIT_S):
        from temporalio.service import RPCError, RPCStatusCode

        from flexsf.models import TaskView

        handle = self.client.get_workflow_handle(workflow_id(sid), result_type=TaskView)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await asyncio.wait_for(handle.result(), max(1.0, deadline - time.monotonic()))
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)  # its first callback is still on the way

    async def _history_length(self, wid: str) -> int:
        return (
            await self.client.get_workflow_handle(wid).describe()
        ).raw_description.workflow_execution_info.history_length

    async def lifecycle(self, attributes: dict[str, Any]):
        sid = await self.accepted(attributes)
        self._last_lifecycle = sid
        await self.observer.popped(sid)
        return await self.finish(sid)

    async def scenario(self, kind: str) -> None:
        from flexsf.models import RecordSelection, Stage
        from workflows.task_workflow import FlexTaskWorkflow

        if kind == "single":
            view = await self.lifecycle({"from": CONTACT.phone, "direction": "inbound"})
        elif kind == "none":
            view = await self.finish(await self.accepted({"from": f"+1425555{uuid.uuid4().int % 10000:04d}"}))
        elif kind == "by_id":
            view = await self.finish(
                await self.accepted({"from": CONTACT.phone, "sfdcObjectId": CONTACT.id, "sfdcObjectType": "Contact"})
            )
        elif kind == "outbound":
            task = await self._tw(
                self.tw.start_outbound_call,
                AGENT.sid,
                e164(CONTACT.phone),
                task_attributes={"sfdcObjectId": CONTACT.id, "sfdcObjectType": "Contact"},
            )
            view = await self.finish(task["sid"])
        elif kind == "several":
            sid = await self.accepted({"from": sf_demo.SHARED_PHONE})
            handle = self.client.get_workflow_handle(workflow_id(sid))
            await self._until(handle, lambda v: v.stage == Stage.AWAITING_SELECTION)
            chosen = sf_demo.SHARED_PHONE_RECORDS[0]
            await handle.execute_update(
                FlexTaskWorkflow.select_record, RecordSelection(worker_sid=AGENT.sid, record_id=chosen.id)
            )
            view = await self.finish(sid)
        else:
            raise ValueError(kind)
        if view.stage.value not in ("logged", "logged_unassociated"):
            raise RuntimeError(f"{kind}: the task ended at stage {view.stage.value} ({view.error})")

    async def _until(self, handle, done, timeout: float = WAIT_S):
        from temporalio.service import RPCError

        from flexsf.models import TaskView
        from workflows.task_workflow import FlexTaskWorkflow

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                view = await handle.query(FlexTaskWorkflow.view, result_type=TaskView)
                if done(view):
                    return view
            except RPCError:
                pass  # not started yet
            await asyncio.sleep(0.05)
        raise TimeoutError("the workflow did not reach the expected stage")

    async def many(self, n: int, concurrency: int, one, advance=None) -> float:
        gate = asyncio.Semaphore(concurrency)

        async def run(i: int) -> None:
            async with gate:
                await one(i)
            if advance is not None:
                advance()

        started = time.perf_counter()
        await asyncio.gather(*(run(i) for i in range(n)))
        return time.perf_counter() - started

    # ---- 1. API economy ---------------------------------------------------------------------------------------------

    def _counts(self) -> tuple[int, int, int]:
        sf = self.stack.sf.counters()
        tw = self.tw.counters()
        twilio_rest = sum(v for k, v in tw.items() if not k.startswith("callbacks_"))
        return sf.get("api_usage", 0), twilio_rest, sf.get("logins", 0)

    async def api_calls(self) -> dict[str, Any]:
        per: dict[str, Any] = {}
        advance = self.bars.add("API calls per task", 1 + len(SCENARIOS))
        before = self._counts()
        await self.scenario("single")  # a fresh worker: login + owner lookup on top of the steady cost
        after = self._counts()
        per["single_first"] = {
            "sf_calls_per_task": after[0] - before[0],
            "twilio_calls_per_task": after[1] - before[1],
            "sf_logins": after[2] - before[2],
        }
        advance()
        for kind in SCENARIOS:
            before = self._counts()
            k = self.sizes.per_scenario
            await self.many(k, k, lambda i, kind=kind: self.scenario(kind))
            after = self._counts()
            per[kind] = {
                "sf_calls_per_task": round((after[0] - before[0]) / k, 2),
                "twilio_calls_per_task": round((after[1] - before[1]) / k, 2),
                "sf_logins": after[2] - before[2],
            }
            self.progress(f"api calls: {kind} {per[kind]}")
            advance()
        return per

    # ---- 2. throughput ---------------------------------------------------------------------------------------------

    async def bare(self, i: int) -> None:
        from temporalio.common import WorkflowIDConflictPolicy

        wid = f"bench-bare-{self.run_id}-{i}"
        for name in SIGNALS:
            await self.client.start_workflow(
                BareWorkflow.run,
                BareInput(key=wid),
                id=wid,
                task_queue=self.stack.settings.flexsf_task_queue,
                start_signal="event",
                start_signal_args=[BareSignal(name=name)],
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        await asyncio.wait_for(self.client.get_workflow_handle(wid).result(), WAIT_S)

    async def throughput(self) -> dict[str, Any]:
        n, c = self.sizes.lifecycles, self.sizes.concurrency
        attributes = {"from": CONTACT.phone, "direction": "inbound"}
        await self.many(c, c, lambda i: self.lifecycle(attributes))  # warm-up: connections, caches, JIT-free paths
        await self.many(c, c, self.bare)
        advance = self.bars.add("throughput: lifecycles, then bare", 2 * n)
        cpu = self.cpu_seconds()
        lifecycle_s = await self.many(n, c, lambda i: self.lifecycle(attributes), advance)
        cpu_lifecycle = _per_task(cpu, self.cpu_seconds(), n)
        self.progress(f"throughput: {n} lifecycles in {lifecycle_s:.1f} s")
        cpu = self.cpu_seconds()
        bare_s = await self.many(n, c, lambda i: self.bare(n + c + i), advance)
        cpu_bare = _per_task(cpu, self.cpu_seconds(), n)
        self.progress(f"throughput: {n} bare workflows in {bare_s:.1f} s")
        lifecycle, bare = n / lifecycle_s, n / bare_s
        events = (
            await self._history_length(workflow_id(self._last_lifecycle)),
            await self._history_length(f"bench-bare-{self.run_id}-{n + c}"),
        )
        return {
            "history_events_per_lifecycle": events[0],
            "history_events_per_bare_workflow": events[1],
            "lifecycle_tasks_per_s": round(lifecycle, 1),
            "bare_workflows_per_s": round(bare, 1),
            "throughput_ratio": round(lifecycle / bare, 3),
            "concurrency": c,
            "tasks": n,
            "cpu_ms_per_lifecycle": cpu_lifecycle,
            "cpu_ms_per_bare_workflow": cpu_bare,
        }

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by the Temporal server, the worker process and this process (gateway, sandboxes
        and the driver), from /proc: independent of what else the machine is running."""
        tick = os.sysconf("SC_CLK_TCK")

        def of(pid: int) -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        def of_thread(pid: int, tid: int) -> float:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        here = of(os.getpid())
        loop_thread = of_thread(os.getpid(), threading.get_native_id())  # the gateway's event loop (and driver)
        return {
            "temporal_server": of(self.stack.temporal.process.pid),
            "worker": of(self.stack.worker.pid),
            "gateway_sandboxes_driver": here,
            "gateway_event_loop": loop_thread,
            "sandbox_threads": here - loop_thread,
        }

    # ---- 3. screen-pop overhead --------------------------------------------------------------------------------------

    def _pop_contacts(self, n: int) -> list[str]:
        """Contacts with numbers of their own, so each task's search is told apart in the sandbox's log."""
        from flexsf.salesforce_client import connect

        sf = connect(self.stack.sf.credentials())
        phones = []
        for i in range(n):
            phone = f"+1425555{i:04d}"
            sf.Contact.create({"LastName": f"Bench {self.run_id} {i}", "Phone": phone})
            phones.append(phone)
        return phones

    async def pop_overhead(self) -> dict[str, Any]:
        n = self.sizes.pop_tasks
        logins = self.stack.sf.counters().get("logins", 0)
        phones = await asyncio.to_thread(self._pop_contacts, n)
        self.own_logins += self.stack.sf.counters().get("logins", 0) - logins  # the bench's, not the worker's
        # Unloaded: one task at a time, what the path itself costs.
        alone: list[float] = []
        alone_stages: dict[str, list[float]] = defaultdict(list)
        workflow_tasks: list[int] = []
        advance = self.bars.add("screen pop, server side", 10 + self.sizes.pop_rounds)
        for phone in phones[:10]:
            sid = await self._created(phone)
            await self._idle(sid)
            await self._tw(self.tw.accept, sid)
            await self.observer.popped(sid)
            alone.append(self._pop_ms(sid, phone))
            received = self.stack.clock.first[("reservation.accepted", sid)]
            for name, ms in (await self._pop_stages(sid, received, self.observer.pop_written[sid])).items():
                alone_stages[name].append(ms)
            if (counted := await self._pop_workflow_tasks(sid)) is not None:
                workflow_tasks.append(counted)
            await self.finish(sid)
            advance()
        # Loaded: n tasks waiting for an agent (their workflows started and idle), then all n accepted at once.
        samples: list[float] = []
        stages: dict[str, list[float]] = defaultdict(list)
        for _ in range(self.sizes.pop_rounds):
            sids = list(await asyncio.gather(*(self._created(phone) for phone in phones)))
            await asyncio.gather(*(self._idle(sid) for sid in sids))
            await asyncio.gather(*(self._tw(self.tw.accept, sid) for sid in sids))
            await asyncio.gather(*(self.observer.popped(sid) for sid in sids))
            for sid, phone in zip(sids, phones, strict=True):
                samples.append(self._pop_ms(sid, phone))
                received = self.stack.clock.first[("reservation.accepted", sid)]
                for name, ms in (await self._pop_stages(sid, received, self.observer.pop_written[sid])).items():
                    stages[name].append(ms)
            await asyncio.gather(*(self.finish(sid) for sid in sids))
            advance()
        samples.sort()
        alone.sort()
        return {
            "pop_overhead_p50_ms": round(_pct(samples, 50), 1),
            "pop_overhead_p99_ms": round(_pct(samples, 99), 1),
            "pop_samples": len(samples),
            "pop_concurrent_tasks": n,
            "pop_overhead_unloaded_p50_ms": round(_pct(alone, 50), 1),
            "pop_overhead_unloaded_max_ms": round(alone[-1], 1),
            "pop_stages_p50_ms": {k: round(_pct(sorted(v), 50), 1) for k, v in stages.items()},
            "pop_stages_unloaded_p50_ms": {k: round(_pct(sorted(v), 50), 1) for k, v in alone_stages.items()},
            # The median over the unloaded pops: every single-match pop takes the same path.
            "pop_workflow_tasks": statistics.median_low(workflow_tasks) if workflow_tasks else None,
            "samples_ms": {
                "pop_overhead": [round(v, 1) for v in samples],
                "pop_overhead_unloaded": [round(v, 1) for v in alone],
            },
        }

    async def _pop_workflow_tasks(self, sid: str) -> int | None:
        """Workflow tasks on the pop path of the task's history (devtools/history_stats.py), None where unknown."""
        history = await self.client.get_workflow_handle(workflow_id(sid)).fetch_history()
        return pop_workflow_tasks(history)

    def _pop_ms(self, sid: str, phone: str) -> float:
        """Gateway receipt of reservation.accepted → sfdcObjectId applied on the task, minus the sandboxes' handler
        time for this task's calls in between (its search, matched by its unique number; its Twilio calls, by sid)."""
        received = self.stack.clock.first[("reservation.accepted", sid)]
        written = self.observer.pop_written[sid]
        inside = self.observer.sandbox_seconds(sid, re.sub(r"\D", "", phone)[-10:], received, written)
        return (written - received - inside) * 1000

    async def _created(self, phone: str) -> str:
        sid = (await self._tw(self.tw.create_task, {"from": phone}))["sid"]
        await self._tw(self.tw.reserve, sid, AGENT.sid)
        return sid

    async def _idle(self, sid: str, timeout: float = WAIT_S) -> None:
        """Until the task's workflow exists and has no activity pending (its policy is loaded): waiting for an agent."""
        from temporalio.service import RPCError

        handle = self.client.get_workflow_handle(workflow_id(sid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                raw = (await handle.describe()).raw_description
                if (
                    raw.workflow_execution_info.history_length > 5
                    and not raw.pending_activities
                    and not raw.HasField("pending_workflow_task")
                ):
                    return
            except RPCError:
                pass  # its task.created callback is still on the way
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the workflow of {sid} did not settle")

    async def _pop_stages(self, sid: str, received: float, written: float) -> dict[str, float]:
        """Where the pop's time goes, from the workflow history's event times (the server's clock, this machine): the
        acceptance's signal and workflow task, then the search's and the attribute write's scheduled/started/completed
        events."""
        from temporalio.api.enums.v1 import EventType

        history = await self.client.get_workflow_handle(workflow_id(sid)).fetch_history()
        at: dict[str, float] = {}
        names: dict[int, str] = {}
        for e in history.events:
            t = e.event_time.ToNanoseconds() / 1e9
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED and t >= received:
                at.setdefault("signaled", t)
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and "signaled" in at:
                at.setdefault("wft_started", t)
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = e.activity_task_scheduled_event_attributes.activity_type.name
                names[e.event_id] = name
                at.setdefault(f"{name}:scheduled", t)
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                at.setdefault(f"{names.get(e.activity_task_started_event_attributes.scheduled_event_id)}:started", t)
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                at.setdefault(f"{names.get(e.activity_task_completed_event_attributes.scheduled_event_id)}:done", t)
        s, w = "search_salesforce", "save_record_on_task"
        try:
            return {
                "gateway_until_signal_recorded": (at["signaled"] - received) * 1000,
                "signal_until_workflow_task_started": (at["wft_started"] - at["signaled"]) * 1000,
                "workflow_task_until_search_scheduled": (at[f"{s}:scheduled"] - at["wft_started"]) * 1000,
                "search_dispatch": (at[f"{s}:started"] - at[f"{s}:scheduled"]) * 1000,
                "search_activity": (at[f"{s}:done"] - at[f"{s}:started"]) * 1000,
                "workflow_task_between": (at[f"{w}:scheduled"] - at[f"{s}:done"]) * 1000,
                "write_dispatch": (at[f"{w}:started"] - at[f"{w}:scheduled"]) * 1000,
                "write_activity_until_applied": (written - at[f"{w}:started"]) * 1000,
            }
        except KeyError:
            return {}

    # ---- 5. the sweep's API cost ---------------------------------------------------------------------------------

    async def sweep(self) -> dict[str, Any]:
        from activities.models import SweepInput, SweepResult
        from workflows.sweep_workflow import FlexTaskSweep

        n = self.sizes.sweep_tasks
        # The steady state: nearly every task finished in the window has its workflow (here the memory phase's open
        # tasks, their completions not delivered, so they stay open and cost nothing); 1 % lost every callback.
        in_hand = self.open_sids[: n - max(1, n // 100)]
        lost = n - len(in_hand)
        window_start = time.time()
        callback_url = f"{self.stack.gateway_url}/taskrouter/events"

        def finished_tasks() -> None:
            for sid in in_hand:
                self.tw.wrapup(sid)
                self.tw.complete(sid, "resolved")
            for _ in range(lost):
                self.tw.lifecycle(BY_ID, worker_sid=AGENT.sid, complete=True)

        self.tw.set_callback_url(None)
        try:
            await asyncio.to_thread(finished_tasks)
        finally:
            self.tw.set_callback_url(callback_url)
        del self.open_sids[: len(in_hand)]
        # The sandbox dates events a millisecond apart at least: made faster than that, the last ones lie ahead.
        events = self.tw.state.list_events()
        while events and events[-1].date_ms > time.time() * 1000:
            await asyncio.sleep(0.05)
        self.progress(f"sweep: {n} tasks finished ({lost} with no workflow), {time.time() - window_start:.1f} s")

        async def sweep(tag: str) -> tuple[SweepResult, float, int]:
            before = self.tw.counters().get("events_list", 0)
            started = time.perf_counter()
            result = await self.client.execute_workflow(
                FlexTaskSweep.run,
                # No schedule, so no earlier cursor: the first lookback is the window, back to the first task.
                SweepInput(overlap_s=0, first_lookback_s=time.time() - window_start + 1),
                id=f"bench-sweep-{self.run_id}-{tag}",
                task_queue=self.stack.settings.flexsf_task_queue,
                result_type=SweepResult,
            )
            if result.error:
                raise RuntimeError(f"the {tag} sweep failed: {result.error}")
            return result, time.perf_counter() - started, self.tw.counters().get("events_list", 0) - before

        advance = self.bars.add("sweep: recovery, then steady", 2)
        recovery, recovery_s, _ = await sweep("recovery")
        advance()
        steady, steady_s, seen = await sweep("steady")
        advance()
        self.progress(f"sweep: recovered {recovery.recovered_count}, then {steady.api_calls} Events-list call(s)")
        started = time.perf_counter()
        views = await asyncio.gather(*(self.result(sid) for sid in recovery.recovered))
        logged_s = time.perf_counter() - started
        logged = sum(v.stage.value in ("logged", "logged_unassociated") for v in views)
        minutes = n / TASKS_PER_MINUTE
        recovered = recovery.recovered_count
        per_lost = (recovery.api_calls - steady.api_calls) / recovered if recovered else 0.0
        return {
            "sweep_tasks": n,
            "sweep_traffic_minutes": round(minutes, 2),
            "sweep_events_pages": steady.api_calls,
            "sweep_events_pages_seen_by_twilio": seen,
            "sweep_events_pages_per_traffic_minute": round(steady.api_calls / minutes, 2),
            "sweep_recovered": recovered,
            "sweep_recovered_logged": logged,
            "sweep_calls_per_lost_task": round(per_lost, 2),
            "sweep_recovery_s": round(recovery_s, 2),
            "sweep_steady_s": round(steady_s, 2),
            "sweep_recovered_logged_s": round(logged_s, 1),
        }

    # ---- 4. memory ---------------------------------------------------------------------------------------------------

    async def memory(self) -> dict[str, Any]:
        c = self.sizes.concurrency * 2
        points = [(0, self.stack.worker_rss_kib())]
        opened = 0
        advance = self.bars.add("memory: open tasks", self.sizes.open_checkpoints[-1])
        for checkpoint in self.sizes.open_checkpoints:

            async def open_one(i: int) -> None:
                sid = await self.accepted({"from": CONTACT.phone})
                await self.observer.popped(sid)
                self.open_sids.append(sid)

            await self.many(checkpoint - opened, c, open_one, advance)
            opened = checkpoint
            points.append((opened, self.stack.worker_rss_kib()))
            self.progress(f"memory: {opened} open tasks, worker RSS {points[-1][1] / 1024:.0f} MiB")
        cache = STICKY_CACHE
        inside = [p for p in points if p[0] <= cache]
        beyond = [p for p in points if p[0] >= cache] or points[-1:]
        slope = _slope(inside[1:] if len(inside) > 2 else inside)
        # Past the sticky cache (max_cached_workflows) an open workflow is only its history on the server: the
        # worker evicts it and replays it at its next event. Extrapolate from the measured slope out there.
        slope_beyond = _slope(beyond) if len(beyond) > 1 else slope
        last_n, last_kib = points[-1]
        # A slope below zero is the collector or evictions returning memory between two samples, not a worker that
        # shrinks as tasks open: such a run extrapolates flat from the last measurement.
        at_10k = last_kib + max(0.0, slope_beyond if last_n >= cache else slope) * (10000 - last_n)
        return {
            "rss_kib_per_open_task": round(slope, 2),
            "rss_kib_per_open_task_beyond_cache": round(slope_beyond, 2),
            "worker_rss_mib_at_10k_open": round(at_10k / 1024, 1),
            "worker_rss_10k_extrapolated": last_n < 10000,
            "worker_rss_mib_by_open_tasks": {str(n): round(kib / 1024, 1) for n, kib in points},
            "sticky_cache_workflows": cache,
        }


def _per_task(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) * 1000 / n, 1) for k in before}


def _pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))  # nearest rank
    return sorted_values[k]


def _slope(points: list[tuple[int, int]]) -> float:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def run_bench(
    sizes: Sizes,
    progress=None,
    phases: tuple[str, ...] = ("calls", "throughput", "pop", "agent", "memory", "sweep"),
    env: dict[str, str] | None = None,
    bars: Bars = NO_BARS,
) -> dict[str, Any]:
    from devtools import agent_desk
    from devtools.agent_bench import Origins

    started = time.monotonic()
    result: dict[str, Any] = {"mode": "quick" if sizes == QUICK else "full" if sizes == FULL else "custom"}
    samples: dict[str, list[float]] = {}
    env = BENCH_ENV | (env or {})
    origins = None
    if "agent" in phases:
        if (lacking := agent_desk.missing()) is None:
            origins = Origins()
            # The bridge calls the gateway from the Flex page's origin.
            env = env | {"FLEXSF_CORS_ORIGINS": origins.flex.origin}
        else:
            result["agent_pop_skipped"] = lacking
            (progress or print)(f"agent pop: not measured: {lacking}")
    try:
        async with Stack(env=env, log=progress) as stack:
            result |= await _phases(stack, sizes, progress, phases, bars, samples, origins)
    finally:
        if origins is not None:
            origins.close()
    result["samples_ms"] = samples
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


async def _phases(
    stack: Stack,
    sizes: Sizes,
    progress,
    phases: tuple[str, ...],
    bars: Bars,
    samples: dict[str, list[float]],
    origins,
) -> dict[str, Any]:
    """The phases on one stack; the latency samples go to `samples` (for --plot), the figures are returned."""
    from devtools.agent_bench import AgentPop

    result: dict[str, Any] = {}
    bench = Bench(stack, sizes, progress, bars)
    if "calls" in phases:
        per = await bench.api_calls()
        single = per["single"]
        result |= {
            "sf_calls_per_task": single["sf_calls_per_task"],
            "twilio_calls_per_task": single["twilio_calls_per_task"],
            "sf_logins": stack.sf.counters().get("logins", 0),
            "api_calls_by_scenario": per,
        }
    if "throughput" in phases:
        result |= await bench.throughput()
    if "pop" in phases:
        figures = await bench.pop_overhead()
        samples |= figures.pop("samples_ms")
        result |= figures
    if origins is not None:
        # Before the memory phase: its open tasks would share the worker with the pops.
        figures = await AgentPop(bench, origins).run(sizes.agent_single, sizes.agent_tasks)
        samples |= figures.pop("samples_ms")
        result |= figures
    if "memory" in phases:
        result |= await bench.memory()
    if "sweep" in phases:
        # After the memory phase, whose open tasks it finishes.
        result |= await bench.sweep()
    # Over the whole run, the worker's only (the bench logs in once itself to create the pop phases' contacts).
    result["sf_logins"] = stack.sf.counters().get("logins", 0) - bench.own_logins
    return result


def _table(result: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"flexsf bench ({result['mode']}) · {result['wall_s']} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    targets = {
        "throughput_ratio": "≥ 0.8",
        "agent_pop_p50_ms": "≤ 50",
        "agent_pop_p99_ms": "≤ 150",
        "pop_overhead_p50_ms": "≤ 30",
        "pop_overhead_p99_ms": "≤ 100",
        "sf_calls_per_task": "≤ 2",
        "twilio_calls_per_task": "≤ 2",
        "sf_logins": "1",
        "worker_rss_mib_at_10k_open": "≤ 1024",
        "sweep_events_pages_per_traffic_minute": "≤ 1",
    }
    for key in (
        "lifecycle_tasks_per_s",
        "bare_workflows_per_s",
        "throughput_ratio",
        "agent_pop_p50_ms",
        "agent_pop_p99_ms",
        "agent_pop_single_p50_ms",
        "pop_overhead_p50_ms",
        "pop_overhead_p99_ms",
        "pop_workflow_tasks",
        "sf_calls_per_task",
        "twilio_calls_per_task",
        "sf_logins",
        "rss_kib_per_open_task",
        "worker_rss_mib_at_10k_open",
        "sweep_events_pages_per_traffic_minute",
        "sweep_events_pages",
        "sweep_calls_per_lost_task",
        "sweep_steady_s",
    ):
        if key in result:
            label = key + (
                " (extrapolated)" if key.endswith("10k_open") and result.get("worker_rss_10k_extrapolated") else ""
            )
            table.add_row(label, str(result[key]), targets.get(key, ""))
    if "sweep_tasks" in result:
        table.add_row(
            "sweep window",
            f"{result['sweep_tasks']} tasks = {result['sweep_traffic_minutes']} min at 10k/h, "
            f"{result['sweep_recovered']} recovered",
            "",
        )
    for kind, calls in result.get("api_calls_by_scenario", {}).items():
        table.add_row(
            f"calls: {kind}",
            f"SF {calls['sf_calls_per_task']} · Twilio {calls['twilio_calls_per_task']} · logins {calls['sf_logins']}",
            "",
        )
    for stage, ms in result.get("pop_stages_p50_ms", {}).items():
        table.add_row(f"pop stage p50: {stage}", f"{ms} ms", "")
    for stage, ms in result.get("agent_pop_stages_p50_ms", {}).items():
        table.add_row(f"agent pop stage p50: {stage}", f"{ms} ms", "")
    for n, mib in result.get("worker_rss_mib_by_open_tasks", {}).items():
        table.add_row(f"worker RSS at {n} open", f"{mib} MiB", "")
    return table


def bench_command(quick: bool, as_json: bool, plot: Path | None = None) -> int:
    from rich.console import Console

    from flexsf import logs

    logs.setup_logging(level="WARNING")
    console = Console(stderr=as_json)
    with Bars(console, shows_bars(console, as_json)) as bars:
        result = asyncio.run(cancelled_by_sigterm(run_bench(QUICK if quick else FULL, progress=bars.print, bars=bars)))
    console.print(_table(result))
    if plot is not None:
        from devtools.bench_plot import plot_bench

        plot_bench(result, plot)
        console.print(f"plot: {plot}")
    if as_json:
        print(json.dumps(result), flush=True)
    return 0
