"""`flexsf simulate`: its plan and verdicts, and a run of 30 tasks against `flexsf dev` as a user starts it."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from devtools.simulate import BROWSER_MIX, SCENARIOS, Expected, PlannedTask, TaskResult, failed, plan, summarize
from sandboxes.salesforce import demo as sf_demo
from tests.test_dev_stack import FLEXSF, PORTS, clean_env, flexsf_dev, free_offset, listening, wait_until

WORKERS = ["WK1", "WK2"]


def test_the_plan_is_a_function_of_the_seed_and_covers_every_scenario_and_several_records() -> None:
    first = plan(30, "mix", 5, WORKERS, mix=SCENARIOS)
    assert first == plan(30, "mix", 5, WORKERS, mix=SCENARIOS)
    assert first != plan(30, "mix", 6, WORKERS, mix=SCENARIOS)
    assert {p.scenario for p in first} == set(SCENARIOS)
    # `flexsf soak`'s mix is unchanged by the copilot scenario: the same seed, the same tasks as before it.
    assert {p.scenario for p in plan(30, "mix", 5, WORKERS)} == set(BROWSER_MIX) == set(SCENARIOS) - {"copilot"}
    copilot = plan(10, "copilot", 5, WORKERS)
    assert all(p.interaction and p.expected.description == p.notes["summary"] for p in copilot)
    assert len({p.interaction["flexInteractionChannelSid"] for p in copilot}) == 10
    inbound_single = {p.phone for p in plan(30, "single", 5, WORKERS)}
    assert len(inbound_single) > 1
    several = plan(30, "several", 5, WORKERS)
    assert {p.phone for p in several} == {sf_demo.SHARED_PHONE}
    assert len({p.record_id for p in several}) > 1
    assert all(p.expected.who == p.record_id for p in several)
    assert all(p.expected == Expected() for p in plan(10, "none", 5, WORKERS))
    # Nobody accepts a canceled one: not logged (FLEXSF_LOG_UNHANDLED_TASKS is off by default).
    assert all(p.expected == Expected(logged=False) for p in plan(10, "cancel", 5, WORKERS))


def test_a_canceled_task_is_as_expected_unlogged_and_wrong_once_logged() -> None:
    canceled = PlannedTask(0, "cancel", "WK1", "+16285550147", expected=Expected(logged=False))
    summary = summarize([_result(canceled)], 1.0, "temporal")
    assert (summary["lost"], summary["related_as_expected"]) == (0, 1) and not failed(summary)
    summary = summarize([_result(canceled, {"WhoId": None, "WhatId": None})], 1.0, "temporal")
    assert summary["related_wrongly"] == 1 and failed(summary)


def _result(planned: PlannedTask, *rows: dict) -> TaskResult:
    return TaskResult(planned, sid=f"WT{planned.index:032d}", finished=True, logged=list(rows))


def test_the_verdict_counts_lost_duplicated_and_wrongly_related_tasks() -> None:
    contact = sf_demo.UNIQUE_PHONE_CONTACT.id
    who = PlannedTask(0, "single", "WK1", "+16285550147", expected=Expected(who=contact))
    notes = PlannedTask(
        1, "notes", "WK1", "+16285550147", expected=Expected(who=contact, description="summary", disposition="Resolved")
    )
    good = [
        _result(who, {"WhoId": contact, "WhatId": None}),
        _result(notes, {"WhoId": contact, "Description": "summary", "CallDisposition": "Resolved"}),
    ]
    summary = summarize(good, 1.0, "temporal")
    assert (summary["tasks"], summary["logged"], summary["related_as_expected"]) == (2, 2, 2)
    assert not failed(summary)

    bad = [
        _result(who),  # lost
        _result(who, {"WhoId": contact}, {"WhoId": contact}),  # logged twice
        _result(who, {"WhoId": sf_demo.DEMO_LEAD.id}),  # the wrong record
        _result(notes, {"WhoId": contact, "Description": None, "CallDisposition": "Resolved"}),  # notes missing
    ]
    summary = summarize(bad, 1.0, "temporal")
    assert (summary["lost"], summary["duplicates"], summary["related_wrongly"]) == (1, 1, 2)
    assert summary["related_as_expected"] == 0
    for one in bad:
        assert failed(summarize([one], 1.0, "temporal"))


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.timeout(420)
def test_simulate_plays_thirty_tasks_through_flexsf_dev_and_none_is_lost_or_duplicated(tmp_path: Path) -> None:
    env = clean_env()
    offset = free_offset()
    with flexsf_dev(tmp_path, offset, env) as dev:
        info_file = tmp_path / ".flexsf" / "dev.json"
        wait_until(info_file.exists, 120, ".flexsf/dev.json", dev)
        children = _children(dev.pid)
        assert children, "flexsf dev runs the Temporal dev server as a child process"

        done = subprocess.run(
            [str(FLEXSF), "simulate", "--tasks", "30", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert done.returncode == 0, (summary, done.stderr[-3000:])
        assert summary["tasks"] == 30
        assert summary["logged"] == 30 - summary["scenarios"]["cancel"]  # nobody handled those: not logged
        assert summary["related_as_expected"] == 30
        assert summary["lost"] == 0 and summary["duplicates"] == 0 and summary["related_wrongly"] == 0
        assert summary["awaiting_selection"] == 0 and summary["errors"] == 0
        assert set(summary["scenarios"]) == set(SCENARIOS)
        assert sum(summary["scenarios"].values()) == 30
        # Copilot's notes reached those tasks' Salesforce Tasks by the wrap-up webhook alone, no browser involved.
        assert summary["notes_via_webhook"] == summary["scenarios"]["copilot"] > 0
        assert summary["selections_and_notes_via"] in ("gateway", "temporal")
        assert "driving tasks" not in done.stderr  # no progress bar with --json, nor into a pipe

        dev.send_signal(signal.SIGINT)
        assert dev.wait(30) == 0
    assert not info_file.exists()
    for base in PORTS:
        assert not listening(base + offset), f"port {base + offset} still accepts connections"
    assert not [pid for pid in children if _alive(pid)], "a child of flexsf dev outlived it"
