"""`flexsf bench`: its arithmetic, and a run of every phase with tiny counts on a stack of its own.

No speed is asserted (the machine is shared): only that every figure is there and makes sense.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from devtools.bench import _pct, _slope
from devtools.bench_plot import plot_bench
from devtools.history_stats import pop_workflow_tasks
from devtools.progress import Bars, shows_bars
from tests.test_soak import processes_mentioning

REPO = Path(__file__).resolve().parent.parent

TINY_RUN = """
import asyncio, json, os, sys
from devtools.bench import Sizes, run_bench
from devtools.bench_plot import plot_bench
sizes = Sizes(
    per_scenario=1,
    lifecycles=10,
    concurrency=5,
    pop_tasks=5,
    pop_rounds=1,
    open_checkpoints=(10, 20),
    sweep_tasks=20,
    agent_single=2,
    agent_tasks=4,
)
result = asyncio.run(run_bench(sizes))
plot_bench(result, sys.argv[1])
print(json.dumps(result), flush=True)
os._exit(0)
"""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, which must come first (PNG specification, 5.3 and 11.2.2)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_percentiles_and_slopes() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert _pct(values, 50) == 50.0 and _pct(values, 99) == 99.0 and _pct(values, 100) == 100.0
    assert _pct([7.0], 99) == 7.0
    assert _slope([(0, 100), (10, 120), (20, 140)]) == pytest.approx(2.0)
    assert _slope([(5, 1), (5, 2)]) == 0.0


def test_pop_workflow_tasks_counts_the_round_trips_of_a_stored_pop() -> None:
    """docs/performance.md: 4 in the stored single match (acceptance, flags, search, write); none without a pop."""
    histories = Path(__file__).parent / "histories"
    assert pop_workflow_tasks(json.loads((histories / "single_match.json").read_text())) == 4
    assert pop_workflow_tasks(json.loads((histories / "cancel.json").read_text())) is None


@pytest.mark.timeout(300)
def test_every_phase_runs_with_tiny_counts_and_reports_sane_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_"))}
    env["TMPDIR"] = str(tmp_path)
    plot = tmp_path / "bench.png"
    done = subprocess.run(
        [sys.executable, "-c", TINY_RUN, str(plot)], cwd=REPO, env=env, capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])

    assert r["lifecycle_tasks_per_s"] > 0 and r["bare_workflows_per_s"] > 0
    assert r["throughput_ratio"] == pytest.approx(r["lifecycle_tasks_per_s"] / r["bare_workflows_per_s"], rel=0.05)
    for part in ("temporal_server", "worker", "gateway_sandboxes_driver"):
        assert r["cpu_ms_per_lifecycle"][part] >= 0 and r["cpu_ms_per_bare_workflow"][part] >= 0
    assert 0 < r["pop_overhead_p50_ms"] <= r["pop_overhead_p99_ms"]
    assert r["pop_samples"] == 5 and r["pop_overhead_unloaded_p50_ms"] > 0
    # Where the pop's time goes, from the histories (the steps as activities of their own or as local activities).
    assert {"gateway_until_signal_recorded", "signal_until_workflow_task_started"} <= set(r["pop_stages_p50_ms"])
    assert "search_activity" in r["pop_stages_p50_ms"]
    # Where the agent waits, from the bridge's requests in the browser (matched to their accepts in order).
    agent_stages = {"accept_until_request_sent", "request_until_answered", "answer_until_screen_pop"}
    assert set(r["agent_pop_stages_p50_ms"]) == set(r["agent_pop_stages_single_p50_ms"]) == agent_stages
    # The pop as the agent feels it, through the real bridge in Chromium: 4 accepted within a second, 2 alone.
    assert "agent_pop_skipped" not in r, r.get("agent_pop_skipped")
    assert 0 < r["agent_pop_p50_ms"] <= r["agent_pop_p99_ms"] and r["agent_pop_single_p50_ms"] > 0
    assert r["agent_pop_samples"] == 4
    assert {k: len(v) for k, v in r["samples_ms"].items()} == {
        "agent_pop": 4,
        "agent_pop_single": 2,
        "pop_overhead": 5,
        "pop_overhead_unloaded": 5,
    }
    assert isinstance(r["pop_workflow_tasks"], int) and r["pop_workflow_tasks"] >= 1
    width, height = png_size(plot)
    assert (width, height) == (1320, 605) and plot.stat().st_size > 10_000

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


def test_the_plot_draws_every_distribution_present_and_the_throughput(tmp_path: Path) -> None:
    result = {
        "mode": "custom",
        "wall_s": 1.0,
        "lifecycle_tasks_per_s": 30.0,
        "bare_workflows_per_s": 50.0,
        "samples_ms": {"agent_pop": [40.0, 60.0, 170.0], "pop_overhead": [90.0, 120.0]},
    }
    written = plot_bench(result, tmp_path / "nested" / "plot.png")
    assert png_size(written) == (1320, 605) and written.stat().st_size > 10_000
    # Nothing measured: still a picture that says so, not a crash.
    assert png_size(plot_bench({"mode": "custom"}, tmp_path / "empty.png")) == (1320, 605)


@pytest.mark.parametrize(
    ("terminal", "as_json", "drawn"),
    [
        pytest.param(True, False, True, id="terminal"),
        pytest.param(False, False, False, id="piped"),
        pytest.param(True, True, False, id="terminal-json"),
    ],
)
def test_progress_bars_are_drawn_only_on_a_terminal_without_json(terminal: bool, as_json: bool, drawn: bool) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100)
    with Bars(console, shows_bars(console, as_json)) as bars:
        advance = bars.add("driving tasks", 4)
        advance()
        advance()
        bars.print("a line")
    text = out.getvalue()
    assert "a line" in text  # the command's own lines print either way
    assert ("driving tasks" in text and "2/4" in text) is drawn
    assert ("━" in text) is drawn


def test_the_cli_prints_json_as_the_last_line_and_refuses_nonsense(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "flexsf"), "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--quick" in done.stdout and "--json" in done.stdout and "--plot" in done.stdout
    done = subprocess.run(
        [str(Path(sys.executable).parent / "flexsf"), "bench", "--plot", str(tmp_path / "plot.svg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "png" in done.stderr.lower() and not (tmp_path / "plot.svg").exists()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "flexsf"), "soak", "--tasks", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
