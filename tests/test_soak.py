"""`flexsf soak --chaos` as a user runs it: a small bad day under every fault, audited in Salesforce and Temporal."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from devtools.soak import failed
from tests.test_dev_stack import FLEXSF


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line or environment names `marker` (what the soak's stack left running)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in text and state != "Z":
            found.append(int(proc.name))
    return found


def run_to_the_end(args: list[str], cwd: Path, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run the command; past `timeout_s` it gets SIGTERM, as Ctrl-C would, so it stops the stack it started (a SIGKILL
    would leave its Temporal server and worker running), and the test fails."""
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=90)
        pytest.fail(f"{' '.join(args[1:3])} still ran after {timeout_s:.0f} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_the_verdict_fails_on_any_lost_duplicated_misrelated_or_unrecovered_task() -> None:
    clean = {
        "lost": 0,
        "duplicates": 0,
        "misrelated": 0,
        "all_callbacks_dropped": 2,
        "recovered_by_sweep": 2,
        "relations_deleted": 1,
        "unassociated_by_deleted_relation": 1,
        "poison_sent": 4,
        "poison_rejected": 2,
        "poison_accepted": 2,
        "poison_counted_by_gateway": 2,
    }
    assert not failed(clean)
    for key in ("lost", "duplicates", "misrelated"):
        assert failed(clean | {key: 1})
    assert failed(clean | {"recovered_by_sweep": 1})  # a task whose callbacks were all lost, never swept up
    assert failed(clean | {"unassociated_by_deleted_relation": 0})  # a deleted relation that cost the log
    assert failed(clean | {"poison_accepted": 1})  # one poison answered neither 2xx nor 4xx: a 5xx, or nothing
    assert failed(clean | {"poison_counted_by_gateway": 1})  # a refusal the gateway's metric missed


@pytest.mark.timeout(660)
def test_a_bad_day_soak_of_thirty_tasks_loses_none_and_the_sweep_recovers_the_silent_ones(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_"))}
    env["TMPDIR"] = str(tmp_path)  # the stack's working directory, so anything it leaves running can be found
    # --wait-s bounds the soak's own wait for workflows (it then reports them unfinished), well within the timeout.
    done = run_to_the_end(
        [str(FLEXSF), "soak", "--tasks", "30", "--chaos", "--json", "--kill-every-s", "15", "--wait-s", "420"],
        cwd=tmp_path,
        env=env,
        timeout_s=540,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, (summary, done.stderr[-3000:])
    # A task canceled in the queue was nobody's call: not logged (FLEXSF_LOG_UNHANDLED_TASKS is off).
    assert summary["tasks"] == 30 and summary["logged"] == 30 - summary["scenarios"]["cancel"]
    assert (summary["lost"], summary["duplicates"], summary["misrelated"]) == (0, 0, 0)
    assert (summary["related_as_expected"], summary["unfinished"], summary["repairable"]) == (30, 0, 0), summary[
        "error_details"
    ]
    assert summary["worker_kills"] >= 1
    assert summary["temporal_restarts"] == 1
    # The bad day: 5 % of 30 tasks spread evenly is one or two that lost every callback, all found by the sweep.
    assert summary["sweep_scheduled"] and summary["all_callbacks_dropped"] in (1, 2)
    assert summary["recovered_by_sweep"] == summary["all_callbacks_dropped"]
    assert summary["relations_deleted"] == summary["unassociated_by_deleted_relation"] == 1
    assert summary["poison_rejected"] >= 2  # the first two sent: nested 255 deep, and over the size bound
    assert summary["poison_rejected"] + summary["poison_accepted"] == summary["poison_sent"]
    assert summary["poison_counted_by_gateway"] == summary["poison_rejected"]
    assert summary["longest_history_events"] > 0 and summary["longest_history_task"].startswith("WT")
    faults = summary["faults"]
    assert faults["salesforce_503"] > 0 and faults["callbacks_duplicated"] > 0
    assert faults["salesforce_lock_row"] > 0  # armed from the start: the first write meets it
    assert faults["tasks_without_callbacks"] == summary["all_callbacks_dropped"]
    assert min(faults["flex_config_401_windows"], faults["events_list_401_windows"], faults["token_503_windows"]) >= 1
    assert summary["faults_injected"] == sum(faults.values())
    assert set(summary["scenarios"]) == {"single", "several", "none", "outbound", "cancel", "notes"}
    assert not processes_mentioning(str(tmp_path)), "the soak left a Temporal server or worker running"
    assert not list(tmp_path.glob("flexsf-bench-*")), "the soak left its working directory behind"
