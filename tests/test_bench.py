"""`flexsf bench`: its arithmetic, and a run of every phase with tiny counts on a stack of its own.

No speed is asserted (the machine is shared): only that every figure is there and makes sense.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.bench import _pct, _slope
from tests.test_soak import processes_mentioning

REPO = Path(__file__).resolve().parent.parent

TINY_RUN = """
import asyncio, json, os, sys
from devtools.bench import Sizes, run_bench
sizes = Sizes(
    per_scenario=1, lifecycles=10, concurrency=5, pop_tasks=5, pop_rounds=1, open_checkpoints=(10, 20), sweep_tasks=20
)
result = asyncio.run(run_bench(sizes))
print(json.dumps(result), flush=True)
os._exit(0)
"""


def test_percentiles_and_slopes() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert _pct(values, 50) == 50.0 and _pct(values, 99) == 99.0 and _pct(values, 100) == 100.0
    assert _pct([7.0], 99) == 7.0
    assert _slope([(0, 100), (10, 120), (20, 140)]) == pytest.approx(2.0)
    assert _slope([(5, 1), (5, 2)]) == 0.0


@pytest.mark.timeout(300)
def test_every_phase_runs_with_tiny_counts_and_reports_sane_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_"))}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", TINY_RUN], cwd=REPO, env=env, capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])

    assert r["lifecycle_tasks_per_s"] > 0 and r["bare_workflows_per_s"] > 0
    assert r["throughput_ratio"] == pytest.approx(r["lifecycle_tasks_per_s"] / r["bare_workflows_per_s"], rel=0.05)
    for part in ("temporal_server", "worker", "gateway_sandboxes_driver"):
        assert r["cpu_ms_per_lifecycle"][part] >= 0 and r["cpu_ms_per_bare_workflow"][part] >= 0
    assert 0 < r["pop_overhead_p50_ms"] <= r["pop_overhead_p99_ms"]
    assert r["pop_samples"] == 5 and r["pop_overhead_unloaded_p50_ms"] > 0
    assert {"search_activity", "write_activity_until_applied"} <= set(r["pop_stages_p50_ms"])

    # API economy of one single-match task: one search and one log write, one fetch and one attribute write.
    assert (r["sf_calls_per_task"], r["twilio_calls_per_task"]) == (2, 2)
    first = r["api_calls_by_scenario"]["single_first"]
    assert first["sf_logins"] == 1 and first["sf_calls_per_task"] == 3  # + the owner lookup, cached afterwards
    assert set(r["api_calls_by_scenario"]) == {"single_first", "single", "several", "none", "by_id", "outbound"}
    assert r["api_calls_by_scenario"]["outbound"]["twilio_calls_per_task"] == 0  # click-to-dial: nothing to write
    assert r["sf_logins"] == 1

    assert set(r["worker_rss_mib_by_open_tasks"]) == {"0", "10", "20"}
    assert all(mib > 20 for mib in r["worker_rss_mib_by_open_tasks"].values())  # a live Python worker's RSS
    assert r["worker_rss_10k_extrapolated"] is True and r["worker_rss_mib_at_10k_open"] > 0
    # The sweep: 20 tasks finished in its window, 19 of them the memory phase's open ones (in hand) and one that never
    # had a workflow: recovered (one Events-list call of its own) and logged. Then, all in hand, a page per type.
    assert r["sweep_tasks"] == 20 and r["sweep_recovered"] == r["sweep_recovered_logged"] == 1
    assert r["sweep_calls_per_lost_task"] == 1.0
    assert r["sweep_events_pages"] == r["sweep_events_pages_seen_by_twilio"] == 4
    per_minute = r["sweep_events_pages_per_traffic_minute"]
    assert isinstance(per_minute, int | float) and per_minute == pytest.approx(4 / (20 / (10000 / 60)), rel=0.01)
    assert r["sweep_steady_s"] > 0 and r["sweep_recovery_s"] > 0
    assert r["wall_s"] > 0
    assert not processes_mentioning(str(tmp_path)), "the bench left a Temporal server or worker running"


def test_the_cli_prints_json_as_the_last_line_and_refuses_nonsense() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "flexsf"), "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--quick" in done.stdout and "--json" in done.stdout
    done = subprocess.run(
        [str(Path(sys.executable).parent / "flexsf"), "soak", "--tasks", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
