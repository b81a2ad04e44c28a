"""`flexsf soak --chaos` as a user runs it: a small run under every fault, audited in Salesforce."""

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


def test_the_verdict_fails_on_any_lost_duplicated_or_misrelated_task() -> None:
    clean = {"lost": 0, "duplicates": 0, "misrelated": 0}
    assert not failed(clean)
    for key in clean:
        assert failed(clean | {key: 1})


@pytest.mark.timeout(420)
def test_a_chaos_soak_of_thirty_tasks_loses_duplicates_and_misrelates_none(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_"))}
    env["TMPDIR"] = str(tmp_path)  # the stack's working directory, so anything it leaves running can be found
    done = subprocess.run(
        [str(FLEXSF), "soak", "--tasks", "30", "--chaos", "--json", "--kill-every-s", "15"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, (summary, done.stderr[-3000:])
    assert summary["tasks"] == 30 and summary["logged"] == 30
    assert (summary["lost"], summary["duplicates"], summary["misrelated"]) == (0, 0, 0)
    assert summary["related_as_expected"] == 30 and summary["unfinished"] == 0
    assert summary["worker_kills"] >= 1
    assert summary["temporal_restarts"] == 1
    faults = summary["faults"]
    assert faults["salesforce_503"] > 0 and faults["callbacks_duplicated"] > 0
    assert summary["faults_injected"] == sum(faults.values())
    assert set(summary["scenarios"]) == {"single", "several", "none", "outbound", "cancel", "notes"}
    assert not processes_mentioning(str(tmp_path)), "the soak left a Temporal server or worker running"
    assert not list(tmp_path.glob("flexsf-bench-*")), "the soak left its working directory behind"
