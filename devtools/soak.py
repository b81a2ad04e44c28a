"""`flexsf soak`: N tasks through a stack of its own, optionally under chaos, then an audit of Salesforce.

The tasks are `flexsf simulate`'s plan (single/several/no match, click-to-dial, canceled, copilot notes), played the
same way; once an inbound task is accepted the agent asks the gateway's pop long-poll (`POST /agent/pop`) as the
agent bridge does, which starts the task's workflow when no callback has. With `--chaos` the run has a bad day:

- Salesforce: 20 % of REST calls answer 503 (the sandbox's fail rate applies to reads and writes alike); for 5 % of
  the time every call answers 403 REQUEST_LIMIT_EXCEEDED (a 0.25 s window every 5 s: the sandbox's limit is a switch,
  not a rate); one write in 20 commits and then loses its answer (drop_after_commit re-armed every 20 writes); one
  write in 15 is refused 400 UNABLE_TO_LOCK_ROW (lock_row_next, re-armed likewise: transient, the product retries);
  every session expires after 100 calls (re-armed each time it fires).
- Outage windows of a few seconds, at seeded random gaps (never periodic: a retry's fixed backoff could fall into
  every one): the Salesforce token endpoint answers 503 with its maintenance page (token_unavailable_next), every
  session revoked as a window opens so logins meet it; the Flex Configuration API and TaskRouter's Events list answer
  401 (`refused_endpoints`; FLEXSF_FLEX_CONFIG_TTL_S=5 so the windows are met). A task proceeds on the flags its
  worker last read, or on the default flags on a worker that never read any (one just started after a kill; a notes
  task on default flags logs no notes: copilot notes stay off without Flex's word, and the audit expects none), and a
  refused reconciliation, or sweep, waits for its next turn.
- Related records deleted: for 3 % of the tasks (at least one) a single-match caller is a Contact, Lead or Account of
  its own, deleted (as someone in the org would) after the screen pop and before the task completes. Its log is
  written without WhoId/WhatId (stage `logged_unassociated`, with a log note) and audited as such: a record deleted
  on purpose is not misrelated.
- TaskRouter callbacks: every one delivered twice, all shuffled in windows of 3 (a superset of "10 % reordered"),
  2 % of events never delivered (reconciliation through the Events list must find them; FLEXSF_LOST_EVENT_WINDOW_S=5),
  and failed deliveries retried with backoff (callback_attempts) so events survive Temporal's restart. For 5 % of the
  tasks (at least one; `callback_drop_task_fraction`) every callback is lost: no workflow exists until the sweep (the
  worker's Temporal Schedule, every FLEXSF_SWEEP_INTERVAL_S=10 here) finds the finished task in the Events list. The
  agent plays such a task without the product: no screen pop, the copilot's notes have nowhere to go, and a record
  among several is chosen once the recovered workflow offers the candidates.
- Poison: for 10 % of the tasks (at least four) the gateway also gets a validly signed callback with a poison body, in
  turn TaskAttributes nested 255 deep, larger than the gateway's bound, holding a lone surrogate as a JSON escape, and
  a lone surrogate sent as percent-encoded bytes that are not UTF-8. The first two must be refused 4xx and counted in
  the gateway's metric; the surrogates are kept as U+FFFD (each is a copy of the task's real `task.created`, so its
  workflow drops it as seen). None may be answered 5xx.
- The worker process is SIGKILLed every `--kill-every-s` and replaced; the Temporal dev server restarts (same history
  file and port) once mid-run, the gateway answering 503 meanwhile.

Afterwards every task's Salesforce Tasks are read back through simple-salesforce, and its workflow's last stage and
history length through Temporal. Exit 1 unless none is lost, logged twice or related to the wrong record, the sweep
recovered every task whose callbacks were all lost, every task whose record was deleted was logged unassociated, no
poison callback was answered 5xx and the gateway counted every one it refused.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import json
import math
import random
import time
from hashlib import sha1
from typing import Any
from urllib.parse import urlencode

from devtools.benchstack import Stack, cancelled_by_sigterm
from devtools.progress import NO_BARS, Bars, shows_bars
from devtools.simulate import Driver, Expected, TaskResult, e164, plan, salesforce_tasks, summarize
from flexsf.vocabulary import WORKFLOW_TYPE, workflow_id

SOAK_ENV = {
    "FLEXSF_LOST_EVENT_WINDOW_S": "5",
    "FLEXSF_NOTES_GRACE_S": "1",
    "FLEXSF_SELECTION_TIMEOUT_S": "300",
    "FLEXSF_FLEX_CONFIG_TTL_S": "5",  # read often enough to meet the Flex configuration's 401 windows
    "FLEXSF_SWEEP_INTERVAL_S": "10",  # the least allowed, so a task whose callbacks were all lost is back in seconds
    "FLEXSF_SWEEP_OVERLAP_S": "5",
    "FLEXSF_LOG_LEVEL": "WARNING",
}
SF_FAIL_RATE = 0.20
LIMIT_WINDOW_S, LIMIT_EVERY_S = 0.25, 5.0
# The bridge's wait for the pop (agent-bridge/src/bridge.ts asks for 25 s).
POP_WAIT_S = 25.0
DROP_EVERY_WRITES = 20  # one write in 20 commits and loses its answer
LOCK_ROW_EVERY_WRITES = 15  # one write in 15 is refused UNABLE_TO_LOCK_ROW
SESSION_CALLS = 100
# Faults switched on for a few seconds at a time: (length, gap range, first opening after the start), in s. The gaps
# are drawn (seeded), never periodic: a retry's fixed backoff could otherwise fall into every one of them.
WINDOWS = {
    # The Flex Configuration API and TaskRouter's Events list answer 401 (`refused_endpoints`).
    "flex_config_401": (2.0, (8.0, 18.0), 5.0),  # first as the flags the first tasks read expire
    "events_list_401": (2.0, (6.0, 16.0), 8.0),
    # The token endpoint answers 503 with its maintenance page, every session revoked as it opens so logins happen.
    "token_503": (2.0, (15.0, 35.0), 10.0),
}
_REFUSED_ENDPOINT = {"flex_config_401": "configuration_fetch", "events_list_401": "events_list"}
_EVERY_LOGIN = 1_000_000  # token_unavailable_next while a token window is open
CALLBACK_CHAOS = dict(
    callback_duplicate_fraction=1.0,
    callback_reorder="shuffle",
    callback_reorder_window=3,
    callback_reorder_flush_s=0.2,
    callback_drop_fraction=0.02,
    callback_drop_task_fraction=0.05,  # an even spread: one task in 20, the first within the first 20
)
# Enough attempts to outlast a Temporal restart: 0.25 s doubling → about a minute in all.
CALLBACK_RETRY = dict(callback_attempts=9, callback_backoff_s=0.25, callback_timeout_s=10.0)
RETRY_S = 120.0
STEP_TIMEOUT_S = 30.0
DELETED_RELATION_SHARE = 0.03
POISON_SHARE = 0.10
POISON_KINDS = ("nested_255_deep", "oversized", "lone_surrogate_json", "lone_surrogate_bytes")
POISON_DEPTH = 255
POISON_SIZE = 40_000  # over the gateway's 32 KiB bound on attributes, within its 64 KiB bound on the body
# A caller of their own per deleted record: area code 479 is no demo record's.
_GONE_RECORDS = (
    ("Contact", lambda i, phone: {"LastName": f"Soak Gone {i}", "Phone": phone}, "who"),
    ("Lead", lambda i, phone: {"LastName": f"Soak Gone {i}", "Company": "Soak Gone Ltd", "Phone": phone}, "who"),
    ("Account", lambda i, phone: {"Name": f"Soak Gone {i}", "Phone": phone}, "what"),
)
REPAIRABLE = ("failed", "waiting_for_api_budget")


class BadDay:
    """The chaos aimed at particular tasks: records deleted under them, poison posted for them, and the tasks whose
    every callback the Twilio sandbox dropped. Planned from the seed before the run; recorded as it happens."""

    def __init__(self, stack: Stack, results: list[TaskResult], seed: int, sweep: bool) -> None:
        self.stack = stack
        self.sweep = sweep  # whether the sweep's Schedule runs: without it a task without callbacks stays lost
        rng = random.Random(f"{seed}:bad-day")
        self.gone: dict[int, str] = {}  # task index → the record deleted after its screen pop
        self.deleted: set[int] = set()
        self.without_callbacks: set[int] = set()
        singles = [r for r in results if r.planned.scenario == "single"]
        self.deletions = max(1, round(len(results) * DELETED_RELATION_SHARE))
        # Two spare callers: one whose task also loses every callback has no pop to delete under (a small run has two
        # such tasks at most), and a spare that is not needed keeps its record and is logged related to it.
        for i, result in enumerate(rng.sample(singles, min(self.deletions + 2, len(singles)))):
            sobject, fields, field = _GONE_RECORDS[i % len(_GONE_RECORDS)]
            phone = f"479-555-{i:04d}"
            record_id = stack.sf.create_record(sobject, fields(i, phone))
            result.planned = dataclasses.replace(
                result.planned, phone=e164(phone), expected=Expected(**{field: record_id})
            )
            self.gone[result.planned.index] = record_id
        self.poison_at = set(
            rng.sample(range(len(results)), min(len(results), max(4, round(len(results) * POISON_SHARE))))
        )
        self.poison: list[list[Any]] = []  # [kind, the gateway's answer] per poison callback

    def drops_every_callback(self, result: TaskResult) -> bool:
        if self.stack.tw.faults.drops_every_callback_of(result.sid):
            self.without_callbacks.add(result.planned.index)
        return result.planned.index in self.without_callbacks

    def delete_relation(self, result: TaskResult) -> None:
        """Someone in the org deletes the caller's record: the log must do without it."""
        if len(self.deleted) >= self.deletions:
            return  # a spare: enough records deleted already
        self.stack.sf.delete_record(self.gone[result.planned.index])
        self.deleted.add(result.planned.index)
        result.planned = dataclasses.replace(result.planned, expected=Expected())

    async def post_poison(self, http, task_sid: str) -> None:
        """One validly signed callback with a poison body for this task; its answer is kept (503s retried: Temporal
        may be restarting, and only an answer about the body counts)."""
        kind = POISON_KINDS[len(self.poison) % len(POISON_KINDS)]
        entry: list[Any] = [kind, None]
        self.poison.append(entry)
        url = self.stack.tw.state.event_callback_url
        fields = poison_fields(kind, self.stack.tw.callback_params(task_sid)[0])
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature(self.stack.tw.auth_token, url, fields),
        }
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                entry[1] = (await http.post(url, content=urlencode(fields), headers=headers)).status_code
            except Exception:  # the gateway did not answer: try again, bounded
                entry[1] = None
            if entry[1] not in (None, 503) or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.5)

    def poison_counted_by_gateway(self) -> int:
        """The gateway's own count of the callbacks it refused as poison (its in-process metrics registry: where
        `/metrics` is served depends on the gateway's settings)."""
        registry = self.stack.clock.app.state.metrics.registry
        return round(
            sum(
                sample.value
                for family in registry.collect()
                for sample in family.samples
                if sample.name == "flexsf_taskrouter_events_total" and sample.labels.get("outcome") == "poison"
            )
        )


def poison_fields(kind: str, params: dict[str, str]) -> dict[str, bytes]:
    """The task's `task.created` callback with a poison body of this kind (values as the bytes that are sent)."""
    fields = {name: value.encode() for name, value in params.items()}
    attributes = json.loads(params.get("TaskAttributes") or "{}")
    if kind == "nested_255_deep":
        nested: dict = {}
        for _ in range(POISON_DEPTH - 1):
            nested = {"a": nested}
        fields["TaskAttributes"] = json.dumps(nested).encode()
    elif kind == "oversized":
        fields["TaskAttributes"] = json.dumps(attributes | {"soak_poison": "x" * POISON_SIZE}).encode()
    elif kind == "lone_surrogate_json":
        text = json.dumps(attributes | {"soak_poison": "SURROGATE"}).replace('"SURROGATE"', '"\\ud800"')
        fields["TaskAttributes"] = text.encode()
    elif kind == "lone_surrogate_bytes":
        fields["EventDescription"] += b" \xed\xa0\x80"  # U+D800 as UTF-8 would spell it, were it allowed
    else:
        raise ValueError(f"unknown poison {kind!r}")
    return fields


def signature(auth_token: str, url: str, fields: dict[str, bytes]) -> str:
    """Twilio's X-Twilio-Signature (the URL, then every name and value in name order; HMAC-SHA1 with the auth token)
    over the bytes that are sent, so a value that is not UTF-8 is signed as TaskRouter would send it."""
    data = url.encode() + b"".join(name.encode() + fields[name] for name in sorted(fields))
    return base64.b64encode(hmac.new(auth_token.encode(), data, sha1).digest()).decode()


class SoakDriver(Driver):
    """simulate's driver, with the agent's own steps retried while the worker or Temporal is away, and the bad day's
    per-task chaos (`bad`) played into the task's life."""

    def __init__(self, info, http, temporal, wait_s: float, bad: BadDay | None = None) -> None:
        super().__init__(info, http, temporal, "temporal", wait_s)
        self.bad = bad

    async def _retrying(self, step, what: str):
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                # Each try bounded too: an update whose workflow cannot run (its workflow task failing) never answers.
                return await asyncio.wait_for(step(), STEP_TIMEOUT_S)
            except Exception as exc:  # Temporal restarting, worker killed: try again, bounded
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what} kept failing for {RETRY_S:.0f} s: {exc}") from exc
                await asyncio.sleep(0.5)

    async def _wait_view(self, sid, done, what, wait_s: float | None = None):
        from workflows.task_workflow import FlexTaskWorkflow

        wait_s = self.wait_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while True:
            try:
                view = await asyncio.wait_for(self._handle(sid).query(FlexTaskWorkflow.view), 10)
                if done(view):
                    return view
            except Exception:  # not started, no worker polling, Temporal restarting
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {wait_s:.0f} s")
            await asyncio.sleep(0.2)

    async def _select(self, sid, p):
        await self._retrying(lambda: Driver._select(self, sid, p), "the record selection")

    async def _submit_notes(self, sid, p):
        await self._retrying(lambda: Driver._submit_notes(self, sid, p), "the notes")

    # ---- the bad day ----------------------------------------------------------------------------------------------

    async def _started(self, result: TaskResult) -> None:
        if self.bad is None:
            return
        if self.bad.drops_every_callback(result):
            if result.planned.notes is not None:
                # No workflow to take the copilot's notes (the agent API answers 404): the log cannot hold them.
                expected = dataclasses.replace(result.planned.expected, description=None, disposition=None)
                result.planned = dataclasses.replace(result.planned, notes=None, expected=expected)
        elif result.planned.index in self.bad.poison_at:
            # Never for a task without callbacks: a surrogate, kept as U+FFFD, would give it a workflow.
            await self.bad.post_poison(self.http, result.sid)

    async def _during_call(self, result: TaskResult) -> None:
        bad = self.bad
        if bad is not None and result.planned.index in bad.without_callbacks:
            return  # no workflow, no screen pop: a record among several is chosen once the sweep has the task
        if result.planned.scenario != "outbound":
            await self._ask_pop(result)
        await self._choose(result)
        if bad is not None and result.planned.index in bad.gone:
            await self._wait_view(result.sid, _popped, "the screen pop")
            bad.delete_relation(result)

    async def _completed(self, result: TaskResult) -> None:
        bad = self.bad
        if bad is None or result.planned.index not in bad.without_callbacks:
            return
        if result.planned.scenario == "several" and not bad.sweep:
            raise RuntimeError("no sweep schedule: nothing will recover this task to choose its record on")
        await self._choose(result)

    async def _ask_pop(self, result: TaskResult) -> None:
        """What the agent's bridge does once the task is accepted: ask the gateway's pop long-poll until the pop is
        decided. When every callback so far was lost (Temporal restarting, TaskRouter never retrying), that request
        is what starts the task's workflow, which then asks TaskRouter's Events list what it missed."""
        token = await self._token(result.planned.worker_sid)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                response = await self.http.post(
                    f"{self.gateway}/agent/pop",
                    json={"task_sid": result.sid, "wait_s": POP_WAIT_S},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=POP_WAIT_S + 30,
                )
                if response.status_code == 200 and response.json().get("decided"):
                    return
                answered = response.status_code == 200  # not decided yet: ask again at once, as the bridge does
            except Exception:  # the gateway between answers (a restart): ask again
                answered = False
            if time.monotonic() > deadline:
                raise TimeoutError(f"no decided pop from the gateway's long-poll within {self.wait_s:.0f} s")
            if not answered:
                await asyncio.sleep(0.5)

    async def _choose(self, result: TaskResult) -> None:
        """Among several candidates the agent picks one; a pop that offers none (its search gave up under the chaos)
        leaves nothing to pick, and the agent finishes the call without."""
        if result.planned.scenario != "several":
            return
        view = await self._wait_view(result.sid, lambda v: bool(v.pop.candidates) or _popped(v), "the screen pop")
        if view.pop.candidates:
            await self._select(result.sid, result.planned)


def _popped(view) -> bool:
    """The screen pop is over: the workflow has found the caller's record(s), or given up looking."""
    return view.stage.value not in ("created", "accepted")


class Chaos:
    """Runs beside the tasks: re-arms the Salesforce faults, opens and closes the outage windows, kills and replaces the
    worker, restarts Temporal."""

    def __init__(self, stack: Stack, kill_every_s: float, progress, seed: int = 1) -> None:
        self.stack = stack
        self.seed = seed
        self.kill_every_s = kill_every_s
        self.progress = progress
        self.worker_kills = 0
        self.worker_crashes = 0
        self.temporal_restarts = 0
        self.temporal_down_s: list[float] = []
        self.sessions_expired = 0
        self.limit_windows = 0
        self.drops_armed = 0
        self.lock_rows_armed = 0
        self.windows = dict.fromkeys(WINDOWS, 0)
        self._refused: set[str] = set()

    def start_faults(self) -> None:
        self.stack.sf.faults.set(
            fail_rate=SF_FAIL_RATE, expire_sessions_after=SESSION_CALLS, drop_after_commit=1, lock_row_next=1
        )
        self.drops_armed = self.lock_rows_armed = 1
        self.stack.tw.faults.update(**CALLBACK_CHAOS, **CALLBACK_RETRY)

    def stop_faults(self) -> None:
        self.stack.sf.faults.reset()
        self.stack.tw.faults.update(
            callback_duplicate_fraction=0.0,
            callback_reorder="none",
            callback_drop_fraction=0.0,
            callback_drop_task_fraction=0.0,
            refused_endpoints={},
        )

    async def run(self, stop: asyncio.Event, restart_at: list[asyncio.Event]) -> None:
        # The windows keep their own time: a worker or Temporal restart in the main loop must not stretch them.
        windows = asyncio.create_task(self._windows(stop))
        try:
            await self._run(stop, restart_at)
        finally:
            stop.set()
            await windows

    async def _windows(self, stop: asyncio.Event) -> None:
        rng = random.Random(f"{self.seed}:windows")
        started = time.monotonic()
        opens_at = {name: started + first for name, (_, _, first) in WINDOWS.items()}
        closes_at: dict[str, float] = {}
        try:
            while not stop.is_set():
                now = time.monotonic()
                for name, (length, (low, high), _) in WINDOWS.items():
                    if name in closes_at and now >= closes_at[name]:
                        del closes_at[name]
                        self._close(name)
                    elif name not in closes_at and now >= opens_at[name]:
                        closes_at[name] = now + length
                        opens_at[name] = now + length + rng.uniform(low, high)
                        self.windows[name] += 1
                        self._open(name)
                try:
                    await asyncio.wait_for(stop.wait(), 0.1)
                except TimeoutError:
                    pass
        finally:
            for name in closes_at:
                self._close(name)

    def _open(self, name: str) -> None:
        if name == "token_503":
            self.stack.sf.faults.set(token_unavailable_next=_EVERY_LOGIN)
            self.stack.sf.expire_sessions()
            return
        self._refused.add(_REFUSED_ENDPOINT[name])
        self.stack.tw.faults.update(refused_endpoints=dict.fromkeys(self._refused, 401))

    def _close(self, name: str) -> None:
        if name == "token_503":
            self.stack.sf.faults.set(token_unavailable_next=0)
            return
        self._refused.discard(_REFUSED_ENDPOINT[name])
        self.stack.tw.faults.update(refused_endpoints=dict.fromkeys(self._refused, 401))

    async def _run(self, stop: asyncio.Event, restart_at: list[asyncio.Event]) -> None:
        faults = self.stack.sf.faults
        last_limit = time.monotonic()
        drops_armed_at = locks_armed_at = 0
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
            settings = faults.settings()
            if writes - drops_armed_at >= DROP_EVERY_WRITES and settings.drop_after_commit == 0:
                drops_armed_at = writes
                self.drops_armed += 1
                faults.set(drop_after_commit=1)
            if writes - locks_armed_at >= LOCK_ROW_EVERY_WRITES and settings.lock_row_next == 0:
                locks_armed_at = writes
                self.lock_rows_armed += 1
                faults.set(lock_row_next=1)
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


async def settle(client, result: TaskResult, deadline: float, views: dict[str, Any]) -> None:
    """Until the task's workflow has closed or sits in `failed` awaiting an operator's repair (retrying through kills
    and restarts), or the deadline; its last view goes into `views`."""
    from flexsf.models import Stage, TaskView
    from workflows.task_workflow import FlexTaskWorkflow

    if result.sid is None:
        return
    handle = client.get_workflow_handle(workflow_id(result.sid), result_type=TaskView)
    last: Exception | None = None
    unqueried: Exception | None = None
    while time.monotonic() < deadline:
        try:
            view = await asyncio.wait_for(handle.result(), max(1.0, min(10.0, deadline - time.monotonic())))
            result.finished, result.stage, views[result.sid] = True, view.stage.value, view
            return
        except Exception as exc:  # not started yet, Temporal restarting, long poll timed out
            last = exc
        try:
            view = await asyncio.wait_for(handle.query(FlexTaskWorkflow.view), 10)
            result.stage, views[result.sid], unqueried = view.stage.value, view, None
            if view.stage == Stage.FAILED:
                return  # parked for repair: it will not close by itself
        except Exception as exc:  # not started yet, no worker polling, Temporal restarting
            unqueried = exc
        await asyncio.sleep(0.5)
    view = views.get(result.sid)
    if unqueried is not None:  # e.g. its workflow task fails: the workflow cannot run, nor answer
        where = f" (unanswered query: {unqueried})"
    elif view is not None:
        where = f" (stage {view.stage.value}{': ' + view.error if view.error else ''}{await _pending(handle)})"
    else:
        where = ""
    result.errors.append(f"workflow not finished{where}: {type(last).__name__ if last else 'deadline'}")


async def _pending(handle) -> str:
    """What the workflow is still retrying, and the last failure of each (a retried activity's failures reach the
    workflow only once it gives up)."""
    try:
        described = await asyncio.wait_for(handle.describe(), 10)
    except Exception as exc:  # Temporal restarting
        return f"; not described: {type(exc).__name__}"
    pending = [
        f"{a.activity_type.name} attempt {a.attempt}"
        + (f", last failure: {a.last_failure.message[:200]}" if a.HasField("last_failure") else "")
        for a in described.raw_description.pending_activities
    ]
    return f"; pending: {'; '.join(pending)}" if pending else "; nothing pending"


async def task_workflow_runs(client) -> tuple[int, str | None, dict[str, float], dict[str, float]]:
    """Every task workflow run in Temporal's visibility: the most history events of any run (a run continued-as-new
    counts apart) and its task, when each task's first run started and when its last run closed (epoch seconds, by
    task sid; closed runs only)."""
    from flexsf.vocabulary import task_sid_of

    longest: tuple[int, str | None] = (0, None)
    started: dict[str, float] = {}
    closed: dict[str, float] = {}
    async for execution in client.list_workflows(f'WorkflowType = "{WORKFLOW_TYPE}"'):
        sid = task_sid_of(execution.id)
        length = execution.history_length
        if not length:  # visibility may not have it for a running workflow: ask the run itself
            length = (await client.get_workflow_handle(execution.id, run_id=execution.run_id).describe()).history_length
        if length > longest[0]:
            longest = (length, sid)
        started[sid] = min(started.get(sid, math.inf), execution.start_time.timestamp())
        if execution.close_time is not None:
            closed[sid] = max(closed.get(sid, 0.0), execution.close_time.timestamp())
    return (*longest, started, closed)


def finished_at(stack: Stack, task_sid: str) -> float | None:
    """When TaskRouter completed or canceled the task (epoch seconds), from its events."""
    for params in stack.tw.callback_params(task_sid):
        if params["EventType"] in ("task.completed", "task.canceled"):
            return int(params["TimestampMs"]) / 1000
    return None


async def start_sweep(stack: Stack, progress) -> bool:
    """The sweep's Schedule, as `flexsf worker` creates it at start (the stack's worker leaves it to its caller), at
    SOAK_ENV's interval; whether it runs."""
    try:
        await stack.start_sweep_schedule(stack.settings.flexsf_sweep_interval_s)
    except Exception as exc:  # no sweep in this build, or Temporal refused: the run says so and goes on
        progress(f"no sweep schedule: {type(exc).__name__}: {exc}")
        return False
    return True


async def run_soak(
    tasks: int,
    chaos: bool,
    concurrency: int = 20,
    kill_every_s: float = 30.0,
    temporal_restarts: int = 1,
    seed: int = 1,
    wait_s: float = 600.0,
    progress=None,
    bars: Bars = NO_BARS,
) -> dict[str, Any]:
    import httpx

    progress = progress or (lambda text: None)
    started = time.monotonic()
    views: dict[str, Any] = {}
    async with Stack(env=SOAK_ENV, log=progress) as stack:
        workers = [w["sid"] for w in stack.tw.info["workers"] if "agent" in w.get("roles", [])]
        planned = plan(tasks, "mix", seed, workers)
        results = [TaskResult(p) for p in planned]
        sweep = await start_sweep(stack, progress)
        bad = BadDay(stack, results, seed, sweep) if chaos else None
        info = {"urls": {"twilio_control": stack.tw.control_url, "gateway": stack.gateway_url}}
        chaos_loop = Chaos(stack, kill_every_s, progress, seed)
        stop = asyncio.Event()
        restart_at = [asyncio.Event() for _ in range(temporal_restarts if chaos else 0)]
        if chaos:
            chaos_loop.start_faults()
        chaos_task = asyncio.create_task(chaos_loop.run(stop, restart_at)) if chaos else None
        figures: dict[str, Any] = {}

        async def play() -> None:
            async with httpx.AsyncClient(trust_env=False, timeout=30.0) as http:
                driver = SoakDriver(info, http, stack.client, wait_s, bad)
                gate = asyncio.Semaphore(concurrency)
                driven = 0
                advance_driven = bars.add("driving tasks", tasks)

                async def one(result: TaskResult) -> None:
                    nonlocal driven
                    async with gate:
                        await driver.run(result)
                    driven += 1
                    advance_driven()
                    for i, event in enumerate(restart_at):  # evenly spaced through the run, e.g. half-way
                        if driven >= tasks * (i + 1) / (len(restart_at) + 1):
                            event.set()
                    if driven % max(1, tasks // 10) == 0:
                        progress(f"driven {driven}/{tasks}")

                await asyncio.gather(*(one(r) for r in results))
                for event in restart_at:
                    event.set()
                deadline = time.monotonic() + wait_s
                # A task whose callbacks were all lost has a workflow only once the sweep found it: without a sweep,
                # never (those tasks are then lost, and the verdict says so).
                recovered_by = deadline if sweep else time.monotonic()
                gate = asyncio.Semaphore(200)
                advance_settled = bars.add("waiting for workflows", tasks)

                async def settled(result: TaskResult) -> None:
                    without = bad is not None and result.planned.index in bad.without_callbacks
                    async with gate:
                        await settle(stack.client, result, recovered_by if without else deadline, views)
                    advance_settled()

                await asyncio.gather(*(settled(r) for r in results))
                progress(
                    "all workflows settled"
                    if all(r.finished for r in results if r.sid)
                    else "some workflows did not finish"
                )
                figures["sweep_scheduled"] = sweep
                if bad is not None:
                    figures["poison_counted_by_gateway"] = bad.poison_counted_by_gateway()

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
        longest, longest_task, started_at, closed_at = await task_workflow_runs(stack.client)
        figures["longest_history_events"], figures["longest_history_task"] = longest, longest_task
        ended = {r.sid: finished for r in results if r.sid and (finished := finished_at(stack, r.sid)) is not None}
        # How long the sweep took to give a task without callbacks its workflow, from the task's end in TaskRouter.
        recovery_s = [
            started_at[r.sid] - ended[r.sid]
            for r in results
            if bad is not None and r.planned.index in bad.without_callbacks and r.sid in started_at and r.sid in ended
        ]
        figures["sweep_recovery_s_max"] = round(max(recovery_s), 1) if recovery_s else None
        # The slowest task to be done with: from its end in TaskRouter to its workflow's close (the log written, the
        # grace for late notes over).
        to_close = {sid: closed_at[sid] - ended[sid] for sid in ended if sid in closed_at}
        slowest = max(to_close, key=to_close.get, default=None)
        figures["slowest_close_s"] = round(to_close[slowest], 1) if slowest else None
        figures["slowest_close_task"] = slowest
        sids = [r.sid for r in results if r.sid]
        logged = await asyncio.to_thread(salesforce_tasks, stack.salesforce_info(), sids) if sids else {}
        for r in results:
            if r.sid:
                r.logged = logged.get(r.sid, [])
    notes_on_fallback = _expect_no_notes_on_fallback_flags(results, views)
    failed_pops = _expect_no_relation_after_a_failed_pop(results, views)
    for r in results:
        if r.sid and r.planned.expected.logged and not r.logged and r.finished:
            # Finished without a Salesforce Task: say how the workflow saw it, so a lost task is never just a count.
            view = views.get(r.sid)
            seen = f"stage {view.stage.value}; {view.log_note or view.error or 'no note'}" if view else "no view"
            r.errors.append(f"lost: the workflow finished without a Salesforce Task ({seen})")
        if r.related_wrongly:
            expected = r.planned.expected
            rows = "; ".join(f"WhoId {row.get('WhoId')}, WhatId {row.get('WhatId')}" for row in r.logged)
            r.errors.append(f"related wrongly: logged {rows}, expected WhoId {expected.who}, WhatId {expected.what}")
    summary = summarize(results, time.monotonic() - started, "temporal")
    if chaos:
        faults |= {
            "sessions_expired": chaos_loop.sessions_expired,
            "limit_windows": chaos_loop.limit_windows,
            "lock_rows_armed": chaos_loop.lock_rows_armed,
            **{f"{name}_windows": n for name, n in chaos_loop.windows.items()},
            "relations_deleted": len(bad.deleted),
            "poison_callbacks": len(bad.poison),
        }
    by_index = {r.planned.index: r for r in results}
    without = [by_index[i] for i in sorted(bad.without_callbacks)] if bad else []
    deleted = [by_index[i] for i in sorted(bad.deleted)] if bad else []
    poison = [status for _, status in bad.poison] if bad else []
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
        "all_callbacks_dropped": len(without),
        "recovered_by_sweep": sum(r.as_expected for r in without),
        "sweep_scheduled": figures["sweep_scheduled"],
        "sweep_recovery_s_max": figures["sweep_recovery_s_max"],
        "slowest_close_s": figures["slowest_close_s"],
        "slowest_close_task": figures["slowest_close_task"],
        "relations_deleted": len(deleted),
        "unassociated_by_deleted_relation": sum(_logged_unassociated(r, views) for r in deleted),
        "repairable": sum(r.stage in REPAIRABLE for r in results),
        "poison_sent": len(poison),
        "poison_rejected": sum(status is not None and 400 <= status < 500 for status in poison),
        "poison_accepted": sum(status is not None and 200 <= status < 300 for status in poison),
        "poison_counted_by_gateway": figures.get("poison_counted_by_gateway", 0),
        "notes_on_fallback_flags": notes_on_fallback,
        "unassociated_by_failed_pop": failed_pops,
        "longest_history_events": figures["longest_history_events"],
        "longest_history_task": figures["longest_history_task"],
        "worker_kills": chaos_loop.worker_kills,
        "worker_crashes": chaos_loop.worker_crashes,
        "temporal_restarts": chaos_loop.temporal_restarts,
        "temporal_down_s": chaos_loop.temporal_down_s,
        "faults_injected": sum(faults.values()) if chaos else 0,
        "faults": faults,
        "scenarios": summary["scenarios"],
        "wall_s": round(time.monotonic() - started, 1),
    }


def _logged_unassociated(result: TaskResult, views: dict[str, Any]) -> bool:
    """Logged once with neither WhoId nor WhatId, its workflow saying why: stage logged_unassociated, a log note."""
    view = views.get(result.sid)
    return bool(result.as_expected and view is not None and view.stage.value == "logged_unassociated" and view.log_note)


def _expect_no_relation_after_a_failed_pop(results: list[TaskResult], views: dict[str, Any]) -> int:
    """A caller's search that gave up (its retries outlasted by the chaos: the pop is useless once the agent has moved
    on) leaves the workflow no record, and the log rightly goes without one (stage `logged_unassociated`). Such a task
    is expected unrelated, and counted: its view shows no search ever answered and no record chosen."""
    count = 0
    for r in results:
        view = views.get(r.sid)
        expected = r.planned.expected
        if view is None or r.planned.scenario == "outbound" or (expected.who is None and expected.what is None):
            continue
        unrelated = all(not row.get("WhoId") and not row.get("WhatId") for row in r.logged)
        if view.pop.search_term is None and view.record is None and unrelated:
            r.planned = dataclasses.replace(r.planned, expected=dataclasses.replace(expected, who=None, what=None))
            count += 1
    return count


def _expect_no_notes_on_fallback_flags(results: list[TaskResult], views: dict[str, Any]) -> int:
    """A notes task whose flags could not be read from Flex (a 401 window, on a worker that never read them) runs on
    the fallback flags, where copilot notes are off: its log rightly holds no notes. How many such tasks."""
    count = 0
    for r in results:
        view = views.get(r.sid)
        if r.planned.notes is None or view is None or view.flags_source == "flex" or view.flags.copilot_notes:
            continue
        expected = dataclasses.replace(r.planned.expected, description=None, disposition=None)
        r.planned = dataclasses.replace(r.planned, expected=expected)
        count += 1
    return count


def _faults(stack: Stack) -> dict[str, int]:
    sf = stack.sf.counters()
    tw = stack.tw.counters()
    return {
        "salesforce_503": sf.get("fault_503", 0),
        "salesforce_limit_exceeded": sf.get("limit_exceeded", 0),
        "salesforce_dropped_after_commit": sf.get("dropped_after_commit", 0),
        "salesforce_unauthorized": sf.get("unauthorized", 0),
        "salesforce_lock_row": sf.get("fault_lock_row", 0),
        "salesforce_token_503": sf.get("token_fault_503", 0),
        "twilio_flex_config_401": tw.get("configuration_fetch_refused", 0),
        "twilio_events_list_401": tw.get("events_list_refused", 0),
        "callbacks_duplicated": tw.get("callbacks_duplicated", 0),
        "callbacks_dropped": tw.get("callbacks_dropped", 0),
        "callbacks_failed_then_retried": tw.get("callbacks_failed", 0),
        "tasks_without_callbacks": tw.get("tasks_without_callbacks", 0),
    }


# Figures the verdict wants equal to another (shown red in the table when they are not).
_SHOULD_EQUAL = {
    "recovered_by_sweep": "all_callbacks_dropped",
    "unassociated_by_deleted_relation": "relations_deleted",
    "poison_counted_by_gateway": "poison_rejected",
}


def failed(summary: dict[str, Any]) -> bool:
    """The verdict: no task lost, logged twice or misrelated; every task whose callbacks were all lost recovered by
    the sweep; every task whose record was deleted logged unassociated; no poison callback answered other than 2xx or
    4xx, and every 4xx counted by the gateway."""
    return bool(
        summary["lost"]
        or summary["duplicates"]
        or summary["misrelated"]
        or summary["recovered_by_sweep"] != summary["all_callbacks_dropped"]
        or summary["unassociated_by_deleted_relation"] != summary["relations_deleted"]
        or summary["poison_rejected"] + summary["poison_accepted"] != summary["poison_sent"]
        or summary["poison_rejected"] != summary["poison_counted_by_gateway"]
    )


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
    with Bars(console, shows_bars(console, as_json)) as bars:
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
                    progress=bars.print,
                    bars=bars,
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
        "all_callbacks_dropped",
        "recovered_by_sweep",
        "sweep_recovery_s_max",
        "slowest_close_s",
        "relations_deleted",
        "unassociated_by_deleted_relation",
        "repairable",
        "poison_sent",
        "poison_rejected",
        "poison_counted_by_gateway",
        "notes_on_fallback_flags",
        "unassociated_by_failed_pop",
        "longest_history_events",
        "worker_kills",
        "worker_crashes",
        "temporal_restarts",
        "faults_injected",
    ):
        bad = (key in ("lost", "duplicates", "misrelated") and summary[key]) or (
            key in _SHOULD_EQUAL and summary[key] != summary[_SHOULD_EQUAL[key]]
        )
        table.add_row(key.replace("_", " "), str(summary[key]), style="red" if bad else "")
    for key, value in summary["faults"].items():
        table.add_row(f"  {key.replace('_', ' ')}", str(value))
    console.print(table)
    for line in summary["error_details"][:10]:
        console.print(f"  {line}", markup=False, highlight=False)
    if summary["chaos"] and not summary["sweep_scheduled"]:
        console.print("[yellow]no sweep schedule: tasks whose callbacks were all lost could not be recovered[/]")
    if as_json:
        print(json.dumps(summary), flush=True)
    return 1 if failed(summary) else 0
