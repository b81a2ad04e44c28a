"""`flexsf simulate`: drive realistic Flex tasks through a running `flexsf dev` stack and check Salesforce.

Finds the stack through `.flexsf/dev.json`, plays N tasks through the Twilio sandbox's control API (inbound calls
with one, several or no matching records, click-to-dial outbound calls, calls canceled before anyone accepted them,
calls with copilot notes from the agent's browser, and calls of a Flex interaction whose copilot notes reach the
product only through Agent Copilot's wrap-up notes webhook, which the Twilio sandbox sends), makes the agent's choices
(a record among several candidates, wrap-up notes) through the gateway's agent API when the gateway has one, else on
the task's workflow directly, waits until every workflow has finished, then reads the logged Salesforce Tasks back
and compares each with what its scenario should have produced.
The plan is a pure function of `--tasks`, `--scenario` and `--seed`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo

SCENARIOS = ("single", "several", "none", "outbound", "cancel", "notes", "copilot")
# "mix" for callers that predate the copilot webhook (`flexsf soak`, whose stack does not set the webhook's URL): the
# same seed keeps giving them the same tasks. `flexsf simulate` mixes every scenario.
BROWSER_MIX = tuple(s for s in SCENARIOS if s != "copilot")
DEFAULT_WAIT_S = 180.0
_POLL_S = 0.2
_GATEWAY_RECORD_PATH = re.compile(r"^/agent/tasks/\{[^}]+\}/record$")
_GATEWAY_NOTES_PATH = re.compile(r"^/agent/tasks/\{[^}]+\}/notes$")


class SimulationError(RuntimeError):
    """The stack cannot be simulated against (no dev.json, no sandboxes); the message says what to do."""


# ---- the plan ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    who: str | None = None
    what: str | None = None
    description: str | None = None
    disposition: str | None = None
    # A task nobody accepted is not logged (FLEXSF_LOG_UNHANDLED_TASKS off, the default).
    logged: bool = True


@dataclass(frozen=True)
class PlannedTask:
    index: int
    scenario: str
    worker_sid: str
    phone: str
    record_id: str | None = None  # outbound: the dialed record; several: the agent's choice
    record_type: str | None = None
    notes: dict[str, Any] | None = None
    expected: Expected = field(default_factory=Expected)
    # copilot: the Flex interaction's attributes (flexInteractionSid, flexInteractionChannelSid) the webhook names.
    interaction: dict[str, str] | None = None


def e164(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return "+" + (digits if len(digits) > 10 else "1" + digits)


# Inbound calls from a number exactly one record has: (record, who, what) it must relate to.
_SINGLE = (
    (sf_demo.UNIQUE_PHONE_CONTACT, sf_demo.UNIQUE_PHONE_CONTACT.id, None),
    (sf_demo.PERSON_ACCOUNT, sf_demo.PERSON_ACCOUNT_CONTACT_ID, None),  # a person account relates via its contact
    (sf_demo.DEMO_LEAD, sf_demo.DEMO_LEAD.id, None),
    (sf_demo.UNIQUE_PHONE_ACCOUNT, None, sf_demo.UNIQUE_PHONE_ACCOUNT.id),
)
# Click-to-dial from a record's page: (record, who, what).
_OUTBOUND = (
    (sf_demo.UNIQUE_PHONE_CONTACT, sf_demo.UNIQUE_PHONE_CONTACT.id, None),
    (sf_demo.DEMO_LEAD, sf_demo.DEMO_LEAD.id, None),
    (sf_demo.APOSTROPHE_CONTACT, sf_demo.APOSTROPHE_CONTACT.id, None),
    (sf_demo.UNIQUE_PHONE_ACCOUNT, None, sf_demo.UNIQUE_PHONE_ACCOUNT.id),
)
_DISPOSITIONS = ("Resolved", "Follow-up required", "Escalated", "Callback scheduled")
_TOPICS = ("billing", "delivery", "login", "refund", "upgrade")


def plan(
    tasks: int, scenario: str, seed: int, worker_sids: list[str], mix: tuple[str, ...] = BROWSER_MIX
) -> list[PlannedTask]:
    rng = random.Random(seed)
    if scenario == "mix":
        kinds = [mix[i % len(mix)] for i in range(tasks)]
        rng.shuffle(kinds)
    else:
        kinds = [scenario] * tasks
    return [_plan_one(i, kind, rng, rng.choice(worker_sids)) for i, kind in enumerate(kinds)]


def _plan_one(i: int, kind: str, rng: random.Random, worker: str) -> PlannedTask:
    if kind in ("single", "notes"):
        record, who, what = rng.choice(_SINGLE)
        notes = None
        expected = Expected(who=who, what=what)
        if kind == "notes":
            disposition = rng.choice(_DISPOSITIONS)
            topics = rng.sample(_TOPICS, 2)
            summary = f"Simulated call {i}: {record.name} asked about {topics[0]} and {topics[1]}."
            notes = {
                "disposition": disposition,
                "summary": summary,
                "topics": topics,
                "sentiment": rng.choice(("positive", "neutral", "negative")),
            }
            expected = Expected(who=who, what=what, description=summary, disposition=disposition)
        return PlannedTask(i, kind, worker, e164(record.phone), notes=notes, expected=expected)
    if kind == "several":
        chosen = rng.choice(sf_demo.SHARED_PHONE_RECORDS)
        return PlannedTask(
            i,
            kind,
            worker,
            sf_demo.SHARED_PHONE,
            record_id=chosen.id,
            record_type=chosen.sobject,
            expected=Expected(who=chosen.id),
        )
    if kind == "none":
        # 425 is no demo record's area code (well-known or generated).
        return PlannedTask(i, kind, worker, f"+1425555{rng.randrange(10000):04d}")
    if kind == "outbound":
        record, who, what = rng.choice(_OUTBOUND)
        return PlannedTask(
            i,
            kind,
            worker,
            e164(record.phone),
            record_id=record.id,
            record_type=record.sobject,
            expected=Expected(who=who, what=what),
        )
    if kind == "copilot":
        # No browser: the agent types in Flex's wrap-up panel, Twilio sends the note to the gateway on Complete.
        record, who, what = rng.choice(_SINGLE)
        summary = f"Simulated interaction {i}: {record.name} was helped by copilot."
        interaction = {
            "flexInteractionSid": "KD" + rng.randbytes(16).hex(),
            "flexInteractionChannelSid": "UO" + rng.randbytes(16).hex(),
        }
        return PlannedTask(
            i,
            kind,
            worker,
            e164(record.phone),
            notes={"summary": summary, "sentiment": rng.choice(("positive", "neutral", "negative"))},
            expected=Expected(who=who, what=what, description=summary),
            interaction=interaction,
        )
    if kind == "cancel":
        record, _, _ = rng.choice(_SINGLE)
        # Nobody accepted it: no screen pop, and no log (FLEXSF_LOG_UNHANDLED_TASKS is off).
        return PlannedTask(i, kind, worker, e164(record.phone), expected=Expected(logged=False))
    raise ValueError(f"unknown scenario {kind!r}")


# ---- results -------------------------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    planned: PlannedTask
    sid: str | None = None
    errors: list[str] = field(default_factory=list)
    finished: bool = False
    stage: str | None = None
    logged: list[dict[str, Any]] = field(default_factory=list)
    notes_source: str | None = None  # which path brought the notes the workflow ended with ("webhook", or None)

    def row_as_expected(self, row: dict[str, Any]) -> bool:
        want = self.planned.expected
        return (
            _same(row.get("WhoId"), want.who)
            and _same(row.get("WhatId"), want.what)
            and (want.description is None or row.get("Description") == want.description)
            and (want.disposition is None or row.get("CallDisposition") == want.disposition)
        )

    @property
    def as_expected(self) -> bool:
        """Logged exactly once, related (and annotated) as its scenario says; or not at all, when it says so."""
        if not self.planned.expected.logged:
            return self.finished and not self.logged
        return len(self.logged) == 1 and self.row_as_expected(self.logged[0])

    @property
    def notes_via_webhook(self) -> bool:
        """Notes that arrived only by Agent Copilot's webhook (the scenario never uses the browser) and are in the
        one Salesforce Task, as planned."""
        return self.planned.scenario == "copilot" and self.notes_source == "webhook" and self.as_expected

    @property
    def related_wrongly(self) -> bool:
        unwanted = not self.planned.expected.logged and bool(self.logged)
        return unwanted or any(not self.row_as_expected(row) for row in self.logged)


def _same(a: str | None, b: str | None) -> bool:
    from flexsf.salesforce_ids import to_18

    if not a or not b:
        return not a and not b
    try:
        return to_18(a) == to_18(b)
    except ValueError:
        return a == b


def summarize(results: list[TaskResult], elapsed_s: float, via: str) -> dict[str, Any]:
    per_scenario: dict[str, dict[str, int]] = {}
    for r in results:
        s = per_scenario.setdefault(r.planned.scenario, {"tasks": 0, "logged": 0, "related_as_expected": 0})
        s["tasks"] += 1
        s["logged"] += bool(r.logged)
        s["related_as_expected"] += r.as_expected
    errors = [
        f"task {r.planned.index} ({r.planned.scenario}{', ' + r.sid if r.sid else ''}): {e}"
        for r in results
        for e in r.errors
    ]
    logged = sum(bool(r.logged) for r in results)
    as_expected = sum(r.as_expected for r in results)
    return {
        "tasks": len(results),
        "logged": logged,
        "related_as_expected": as_expected,
        "related_wrongly": sum(r.related_wrongly for r in results),
        "duplicates": sum(max(len(r.logged) - 1, 0) for r in results),
        "lost": sum(r.sid is not None and r.planned.expected.logged and not r.logged for r in results),
        "not_created": sum(r.sid is None for r in results),
        "awaiting_selection": sum(r.stage == "awaiting_selection" for r in results),
        "notes_via_webhook": sum(r.notes_via_webhook for r in results),
        "unfinished": sum(r.sid is not None and not r.finished for r in results),
        "errors": len(errors),
        "error_details": errors[:50],
        "scenarios": dict(sorted(Counter(r.planned.scenario for r in results).items())),
        "per_scenario": dict(sorted(per_scenario.items())),
        "selections_and_notes_via": via,
        "elapsed_s": round(elapsed_s, 3),
    }


def failed(summary: dict[str, Any]) -> bool:
    return bool(
        summary["lost"]
        or summary["duplicates"]
        or summary["related_wrongly"]
        or summary["errors"]
        or summary["not_created"]
        or summary["related_as_expected"] != summary["tasks"]
    )


# ---- the stack -----------------------------------------------------------------------------------------------------


def load_dev_info(state_dir: Path) -> dict[str, Any]:
    info_file = state_dir / "dev.json"
    if not info_file.is_file():
        raise SimulationError(f"{info_file} not found: start the stack with `flexsf dev` first")
    info = json.loads(info_file.read_text())
    if not info.get("twilio") or not info.get("salesforce"):
        raise SimulationError("simulate needs the Twilio and Salesforce sandboxes; this stack uses real systems")
    return info


class Driver:
    """Plays one planned task the way TaskRouter, an agent and Flex's copilot would."""

    def __init__(self, info: dict[str, Any], http, temporal, via: str, wait_s: float) -> None:
        self.control = info["urls"]["twilio_control"]
        self.gateway = info["urls"]["gateway"]
        self.http = http
        self.temporal = temporal
        self.via = via
        self.wait_s = wait_s
        self._tokens: dict[str, str] = {}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(f"{self.control}{path}", json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"POST {path.split('/')[-1]} answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def _handle(self, sid: str):
        from flexsf.models import TaskView

        return self.temporal.get_workflow_handle(workflow_id(sid), result_type=TaskView)

    async def run(self, result: TaskResult) -> None:
        p = result.planned
        try:
            await self._start(result)
            await self._started(result)
            if p.scenario == "cancel":
                await self._post(f"/tasks/{result.sid}/cancel", {"reason": "caller hung up in the queue"})
                return
            if p.scenario != "outbound":  # click-to-dial hands the task to its agent already accepted
                await self._post(f"/tasks/{result.sid}/accept", {})
            await self._during_call(result)
            await self._post(f"/tasks/{result.sid}/wrapup", {})
            await self._at_wrapup(result)
            await self._post(f"/tasks/{result.sid}/complete", {"reason": "resolved"})
            await self._completed(result)
        except Exception as exc:  # every failure is counted and reported, the run goes on
            result.errors.append(f"{type(exc).__name__}: {exc}")

    async def _start(self, result: TaskResult) -> None:
        """TaskRouter creates the task and reserves it for the agent (click-to-dial: hands it over accepted)."""
        p = result.planned
        if p.scenario == "outbound":
            task = await self._post(
                "/outbound-calls",
                {
                    "worker_sid": p.worker_sid,
                    "destination": p.phone,
                    "task_attributes": {"sfdcObjectId": p.record_id, "sfdcObjectType": p.record_type},
                },
            )
            result.sid = task["sid"]
            return
        attributes = {
            "type": "inbound",
            "direction": "inbound",
            "from": p.phone,
            "caller": p.phone,
            "to": "+15005550006",
            "channelType": "voice",
            **(p.interaction or {}),
        }
        result.sid = (await self._post("/tasks", {"attributes": attributes, "channel": "voice"}))["sid"]
        await self._post(f"/tasks/{result.sid}/reserve", {"worker_sid": p.worker_sid})

    async def _started(self, result: TaskResult) -> None:
        """The task exists (`result.sid`); nothing to do here (`flexsf soak` adds its chaos)."""

    async def _during_call(self, result: TaskResult) -> None:
        """The agent's part of the call: among several matching records, the agent picks one."""
        if result.planned.scenario == "several":
            await self._wait_view(result.sid, lambda v: bool(v.pop.candidates), "the candidate records")
            await self._select(result.sid, result.planned)

    async def _at_wrapup(self, result: TaskResult) -> None:
        """The copilot submits its notes at wrap-up, once the screen pop has happened: through the agent's browser,
        or (copilot) typed in Flex's wrap-up panel, which Twilio sends to the webhook on Complete."""
        if result.planned.scenario == "copilot":
            await self._post(f"/tasks/{result.sid}/copilot-note", result.planned.notes)
            return
        if result.planned.notes is not None:
            await self._wait_view(result.sid, lambda v: v.stage.value not in ("created", "accepted"), "the screen pop")
            await self._submit_notes(result.sid, result.planned)

    async def _completed(self, result: TaskResult) -> None:
        """The task is completed; nothing to do here (`flexsf soak` adds its chaos)."""

    async def _wait_view(self, sid: str, done, what: str):
        from temporalio.service import RPCError

        from workflows.task_workflow import FlexTaskWorkflow

        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                view = await self._handle(sid).query(FlexTaskWorkflow.view)
                if done(view):
                    return view
            except RPCError:
                pass  # the gateway has not started the workflow yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {self.wait_s:.0f} s")
            await asyncio.sleep(_POLL_S)

    async def _token(self, worker_sid: str) -> str:
        if worker_sid not in self._tokens:
            self._tokens[worker_sid] = (await self._post("/tokens", {"worker_sid": worker_sid}))["token"]
        return self._tokens[worker_sid]

    async def _gateway(self, method: str, path: str, worker_sid: str, body: dict[str, Any]) -> None:
        token = await self._token(worker_sid)
        response = await self.http.request(
            method, f"{self.gateway}{path}", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code >= 300:
            raise RuntimeError(
                f"{method} {path.rsplit('/', 1)[-1]} answered {response.status_code}: {response.text[:200]}"
            )

    async def _select(self, sid: str, p: PlannedTask) -> None:
        if self.via == "gateway":
            await self._gateway("PUT", f"/agent/tasks/{sid}/record", p.worker_sid, {"record_id": p.record_id})
            return
        from flexsf.models import RecordSelection
        from workflows.task_workflow import FlexTaskWorkflow

        await self._handle(sid).execute_update(
            FlexTaskWorkflow.select_record, RecordSelection(worker_sid=p.worker_sid, record_id=p.record_id)
        )

    async def _submit_notes(self, sid: str, p: PlannedTask) -> None:
        if self.via == "gateway":
            await self._gateway("POST", f"/agent/tasks/{sid}/notes", p.worker_sid, p.notes)
            return
        from flexsf.models import Notes
        from workflows.task_workflow import FlexTaskWorkflow

        await self._handle(sid).signal(FlexTaskWorkflow.submit_notes, Notes(**p.notes))

    async def settle(self, result: TaskResult, deadline: float) -> None:
        """Wait until the task's workflow has closed (or the deadline passed); note its last stage."""
        from temporalio.client import WorkflowExecutionStatus
        from temporalio.service import RPCError

        from workflows.task_workflow import FlexTaskWorkflow

        if result.sid is None:
            return
        handle = self._handle(result.sid)
        while True:
            try:
                status = (await handle.describe()).status
                if status != WorkflowExecutionStatus.RUNNING:
                    result.finished = True
                    if status == WorkflowExecutionStatus.COMPLETED:
                        view = await handle.result()
                        result.stage = view.stage.value
                        result.notes_source = view.notes.source if view.notes else None
                    else:
                        result.errors.append(f"workflow ended {status.name}")
                    return
            except RPCError:
                pass  # not started yet
            if time.monotonic() > deadline:
                try:
                    result.stage = (await handle.query(FlexTaskWorkflow.view)).stage.value
                except RPCError as exc:
                    result.errors.append(f"workflow not found: {exc}")
                return
            await asyncio.sleep(_POLL_S)


async def gateway_has_agent_api(http, gateway_url: str) -> bool:
    try:
        response = await http.get(f"{gateway_url}/openapi.json")
    except Exception:  # no schema, no agent API
        return False
    if response.status_code != 200:
        return False
    paths = response.json().get("paths", {})
    return any(_GATEWAY_RECORD_PATH.match(p) for p in paths) and any(_GATEWAY_NOTES_PATH.match(p) for p in paths)


def salesforce_tasks(info: dict[str, Any], sids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every Salesforce Task carrying one of these Flex task sids, by sid (simple-salesforce, the sandbox's CA)."""
    from flexsf.salesforce_client import SalesforceCredentials, connect

    sf = info["salesforce"]
    client = connect(
        SalesforceCredentials(
            token_url=sf["token_url"],
            client_id=sf["client_id"],
            client_secret=sf["client_secret"],
            api_version=sf["api_version"],
            ca_bundle=sf["ca_bundle"],
        )
    )
    found: dict[str, list[dict[str, Any]]] = {sid: [] for sid in sids}
    for start in range(0, len(sids), 100):
        chunk = ", ".join(f"'{sid}'" for sid in sids[start : start + 100])
        rows = client.query_all(
            "SELECT Id, WhoId, WhatId, Description, CallDisposition, Flex_Task_Sid__c "
            f"FROM Task WHERE Flex_Task_Sid__c IN ({chunk})"
        )["records"]
        for row in rows:
            found.setdefault(row["Flex_Task_Sid__c"], []).append({k: v for k, v in row.items() if k != "attributes"})
    return found


async def simulate(
    info: dict[str, Any], planned: list[PlannedTask], concurrency: int, wait_s: float, progress=None, via: str = "auto"
) -> dict[str, Any]:
    import httpx
    from temporalio.client import Client

    from flexsf.settings import load_settings
    from flexsf.temporal_client import data_converter

    started = time.monotonic()
    temporal = await Client.connect(
        info["urls"]["temporal"], namespace="default", data_converter=data_converter(load_settings())
    )  # FLEXSF_ENCRYPTION_KEYS
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as http:
        if via == "auto":
            via = "gateway" if await gateway_has_agent_api(http, info["urls"]["gateway"]) else "temporal"
        driver = Driver(info, http, temporal, via, wait_s)
        results = [TaskResult(p) for p in planned]
        gate = asyncio.Semaphore(concurrency)
        drive_bar = progress.add_task("driving tasks", total=len(results)) if progress else None

        async def one(result: TaskResult) -> None:
            async with gate:
                await driver.run(result)
            if progress:
                progress.advance(drive_bar)

        await asyncio.gather(*(one(r) for r in results))
        settle_bar = progress.add_task("waiting for workflows", total=len(results)) if progress else None
        deadline = time.monotonic() + wait_s

        async def settle(result: TaskResult) -> None:
            await driver.settle(result, deadline)
            if progress:
                progress.advance(settle_bar)

        await asyncio.gather(*(settle(r) for r in results))
    sids = [r.sid for r in results if r.sid]
    logged = await asyncio.to_thread(salesforce_tasks, info, sids) if sids else {}
    for r in results:
        if r.sid:
            r.logged = logged.get(r.sid, [])
    return summarize(results, time.monotonic() - started, via)


# ---- the command ---------------------------------------------------------------------------------------------------


def _table(summary: dict[str, Any]):
    from rich.table import Table

    table = Table(
        title=f"flexsf simulate · {summary['tasks']} tasks in {summary['elapsed_s']:.1f} s · "
        f"selections and notes via {summary['selections_and_notes_via']}"
    )
    table.add_column("scenario")
    for column in ("tasks", "logged", "related as expected"):
        table.add_column(column, justify="right")
    for name, s in summary["per_scenario"].items():
        style = "" if s["related_as_expected"] == s["tasks"] else "red"
        table.add_row(name, str(s["tasks"]), str(s["logged"]), str(s["related_as_expected"]), style=style)
    table.add_section()
    table.add_row(
        "all", str(summary["tasks"]), str(summary["logged"]), str(summary["related_as_expected"]), style="bold"
    )
    return table


def simulate_command(
    tasks: int, scenario: str, concurrency: int, as_json: bool, state_dir: Path, seed: int, wait_s: float, via: str
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from devtools.progress import shows_bars

    if scenario != "mix" and scenario not in SCENARIOS:
        raise SimulationError(f"unknown scenario {scenario!r}; one of mix, {', '.join(SCENARIOS)}")
    info = load_dev_info(state_dir)
    console = Console(stderr=as_json)
    workers = [w["sid"] for w in info["twilio"]["workers"] if "agent" in w.get("roles", [])] or [
        w["sid"] for w in info["twilio"]["workers"]
    ]
    planned = plan(tasks, scenario, seed, workers, mix=SCENARIOS)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        # Only for a person at a terminal: not into a pipe or a log, not with --json.
        disable=not shows_bars(console, as_json),
    ) as progress:
        summary = asyncio.run(simulate(info, planned, concurrency, wait_s, progress, via))
    console.print(_table(summary))
    problems = {
        k: summary[k]
        for k in ("lost", "duplicates", "related_wrongly", "awaiting_selection", "unfinished", "not_created", "errors")
        if summary[k]
    }
    if problems:
        console.print("[red]" + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in problems.items()) + "[/]")
        for line in summary["error_details"][:10]:
            console.print(f"  {line}", markup=False, highlight=False)
    if as_json:
        print(json.dumps(summary), flush=True)
    return 1 if failed(summary) else 0
