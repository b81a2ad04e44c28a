"""`flexsf`: the one command-line entry point of the project."""

from __future__ import annotations

from pathlib import Path

import typer

from sandboxes.salesforce.cli import salesforce_command
from sandboxes.twilio.cli import twilio_command

app = typer.Typer(no_args_is_help=True, help="Durable Salesforce integration for Twilio Flex.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Local stand-ins for Salesforce and Twilio.")
app.add_typer(sandbox_app, name="sandbox")
sandbox_app.command("salesforce")(salesforce_command)
sandbox_app.command("twilio")(twilio_command)


@app.callback()
def main() -> None:
    """Durable Salesforce integration for Twilio Flex."""


@app.command("worker")
def worker_command() -> None:
    """Run the Temporal worker: the task workflow and its Salesforce and Twilio activities (config from env/.env)."""
    import worker

    worker.main()


@app.command("gateway")
def gateway_command(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
) -> None:
    """Run the HTTP gateway: verifies TaskRouter callbacks and signals each task's workflow (config from env/.env)."""
    import uvicorn

    from flexsf.settings import ConfigurationError, load_settings
    from gateway.app import create_app

    from flexsf.logs import setup_logging

    try:
        settings = load_settings()
        setup_logging(settings)
        application = create_app(settings)
    except ConfigurationError as exc:
        raise SystemExit(f"flexsf gateway: {exc}") from None
    # log_config=None: uvicorn's records go through flexsf's handler (JSON, task sid, redaction).
    uvicorn.run(application, host=host, port=port, proxy_headers=True, log_config=None)


@app.command("codec-server")
def codec_server_command(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8081, help="Port to listen on."),
) -> None:
    """Serve POST /codec/encode and /codec/decode so the Temporal UI and CLI can show encrypted payloads
    (FLEXSF_ENCRYPTION_KEYS; browsers allowed from FLEXSF_CODEC_CORS_ORIGINS). Point the UI at http://HOST:PORT/codec."""
    import uvicorn

    from flexsf.settings import ConfigurationError, load_settings
    from gateway.routes.codec import create_codec_app

    try:
        application = create_codec_app(load_settings())
    except ConfigurationError as exc:
        raise SystemExit(f"flexsf codec-server: {exc}") from None
    uvicorn.run(application, host=host, port=port)


@app.command("dev")
def dev_command(
    port_offset: int = typer.Option(0, help="Added to every port (7233, 8233, 8000, 8443, 8444) to run two stacks."),
    state_dir: Path = typer.Option(Path(".flexsf"), help="Where Temporal history, sandbox state and dev.json live."),
) -> None:
    """Run the whole stack locally: Temporal, the sandboxes (unless credentials are configured), gateway, worker."""
    from flexsf.dev import dev_command as run

    run(port_offset, state_dir)


@app.command("simulate")
def simulate_command(
    tasks: int = typer.Option(20, "--tasks", min=1, help="How many Flex tasks to play."),
    scenario: str = typer.Option("mix", help="mix, single, several, none, outbound, cancel or notes."),
    concurrency: int = typer.Option(8, min=1, help="Tasks played at the same time."),
    as_json: bool = typer.Option(False, "--json", help="Last stdout line: the summary as one JSON object "
                                                       "(progress and table go to stderr)."),
    state_dir: Path = typer.Option(Path(".flexsf"), help="Where the running `flexsf dev` wrote dev.json."),
    seed: int = typer.Option(1, help="Same seed, same tasks: scenarios, callers, agents, choices, notes."),
    wait_s: float = typer.Option(180.0, "--wait-s", help="How long to wait for a workflow step or for "
                                                         "the workflows to finish."),
    via: str = typer.Option("auto", help="How the agent selects records and submits notes: gateway (its agent "
                                         "API), temporal (the workflow directly), auto (gateway if it has one)."),
) -> None:
    """Play realistic tasks through a running `flexsf dev` stack and check what was logged in Salesforce.

    Exits 1 when a task was lost, logged twice, related to the wrong record, or a step failed.
    """
    from flexsf.simulate import SimulationError, simulate_command as run

    if via not in ("auto", "gateway", "temporal"):
        raise typer.BadParameter("one of auto, gateway, temporal", param_hint="--via")
    try:
        code = run(tasks, scenario, concurrency, as_json, state_dir, seed, wait_s, via)
    except SimulationError as exc:
        raise SystemExit(f"flexsf simulate: {exc}") from None
    raise typer.Exit(code)


@app.command("bench")
def bench_command(
    quick: bool = typer.Option(False, "--quick", help="Smaller counts (under 2 minutes); memory at 10k open tasks "
                                                      "is extrapolated from 200/500/1000."),
    as_json: bool = typer.Option(False, "--json", help="Last stdout line: the figures as one JSON object "
                                                       "(progress and table go to stderr)."),
) -> None:
    """Measure throughput against a bare workflow, screen-pop overhead, API calls per task and worker memory on a
    stack of its own (Temporal dev server, sandboxes, gateway, worker process)."""
    from flexsf.bench import bench_command as run

    _leave(run(quick, as_json))


@app.command("soak")
def soak_command(
    tasks: int = typer.Option(1000, "--tasks", min=1, help="How many Flex tasks to play."),
    chaos: bool = typer.Option(False, "--chaos", help="Salesforce 503s, limits, dropped answers and expiring "
                                                      "sessions; callbacks duplicated, reordered, delayed and "
                                                      "dropped; the worker SIGKILLed every --kill-every-s; "
                                                      "Temporal restarted mid-run."),
    as_json: bool = typer.Option(False, "--json", help="Last stdout line: the summary as one JSON object."),
    concurrency: int = typer.Option(20, min=1, help="Tasks played at the same time."),
    kill_every_s: float = typer.Option(30.0, "--kill-every-s", help="With --chaos: seconds between worker kills."),
    temporal_restarts: int = typer.Option(1, "--temporal-restarts", min=0,
                                          help="With --chaos: how many times the Temporal dev server restarts."),
    seed: int = typer.Option(1, help="Same seed, same tasks and the same fault draws."),
    wait_s: float = typer.Option(600.0, "--wait-s", help="How long to wait for the workflows to finish."),
) -> None:
    """Run N tasks through a stack of its own, optionally under chaos, and audit Salesforce: exits 1 unless no task
    was lost, logged twice or related to the wrong record."""
    from flexsf.soak import soak_command as run

    _leave(run(tasks, chaos, as_json, concurrency, kill_every_s, temporal_restarts, seed, wait_s))


def _leave(code: int) -> None:
    """Exit without interpreter teardown once everything is stopped (sdk-python issue #300 can abort it)."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ---- operating: find, inspect, relog and reconcile tasks (flexsf.ops) -------------------------------------------

tasks_app = typer.Typer(no_args_is_help=True, help="Find and inspect task workflows by their search attributes.")
app.add_typer(tasks_app, name="tasks")


def _ops(coro_fn):
    """Run one ops coroutine against Temporal (connected as the worker connects: TEMPORAL_* env / profile)."""
    import asyncio

    import worker
    from flexsf.ops import OpsError
    from flexsf.settings import ConfigurationError, load_settings

    async def go():
        settings = load_settings()
        client = await worker.connect(settings)
        return await coro_fn(client, settings)

    try:
        return asyncio.run(go())
    except (OpsError, ConfigurationError, ValueError) as exc:
        typer.echo(f"flexsf: {exc}", err=True)
        _ops_exit(1)


def _ops_exit(code: int = 0) -> None:
    """Leave without interpreter teardown once the client is done: sdk-python issue #300 can abort it (SIGABRT)
    and turn a successful command into a failed one."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _console():
    from rich.console import Console

    console = Console()
    # Piped or captured output keeps whole sids rather than an 80-column table with ellipses.
    return console if console.is_terminal else Console(width=200)


@tasks_app.command("list")
def tasks_list_command(
    stage: str = typer.Option(None, help="Only tasks at this stage (e.g. awaiting_selection, failed, logged)."),
    worker_sid: str = typer.Option(None, "--worker", help="Only tasks accepted by this worker (WK…)."),
    since: str = typer.Option(None, help="Only workflows started since: a duration (30m, 1h, 1d) or ISO-8601."),
    limit: int = typer.Option(100, min=1, help="At most this many rows."),
) -> None:
    """List task workflows, newest first: task sid, stage, worker, record, Salesforce Task, start time."""
    from rich.table import Table

    from flexsf.ops import list_tasks, parse_since, tasks_query

    try:
        query = tasks_query(stage=stage, worker_sid=worker_sid, since=parse_since(since) if since else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    rows = _ops(lambda client, _: list_tasks(client, query, limit))
    table = Table(title=f"{len(rows)} task(s) · {query}")
    for column in ("Task", "Stage", "Worker", "Record", "Salesforce Task", "Started (UTC)", "Workflow"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(row.task_sid, row.stage or "", row.worker_sid or "", row.record_id or "", row.activity_id or "",
                      row.started.strftime("%Y-%m-%d %H:%M:%S") if row.started else "", row.status)
    _console().print(table)
    _ops_exit(0)


@tasks_app.command("show")
def tasks_show_command(task_sid: str = typer.Argument(..., help="The Flex task (WT…).")) -> None:
    """Show one task as its workflow sees it: stage, record, Salesforce Task, last error."""
    from rich.table import Table

    from flexsf.ops import show_task

    details = _ops(lambda client, _: show_task(client, task_sid))
    view = details.view
    table = Table(title=f"task {view.task_sid}", show_header=False)
    record = view.record
    rows = {
        "Workflow": details.status,
        "Stage": view.stage.value,
        "Outcome": view.outcome or "",
        "Channel / direction": f"{view.channel or ''} / {view.direction or ''}",
        "Worker": view.worker_sid or "",
        "Record": f"{record.type or ''} {record.id}".strip() if record else "",
        "Candidates": ", ".join(c.id for c in view.pop.candidates),
        "Salesforce Task": view.activity_id or "",
        "Last error": view.error or "",
    }
    for label, value in rows.items():
        table.add_row(label, value)
    _console().print(table)
    _ops_exit(0)


@app.command("relog")
def relog_command(
    task_sid: str = typer.Argument(..., help="The Flex task (WT…) whose log to write again."),
    reason: str = typer.Option(None, help="Why (kept in the workflow's history)."),
) -> None:
    """Write a finished task's Salesforce activity log again: retries a failed log, or amends the logged Task in
    place (same Task, so repeating it changes nothing). Prints the stage and Salesforce Task afterwards."""
    from flexsf.ops import relog

    result = _ops(lambda client, _: relog(client, task_sid, reason))
    typer.echo(f"{task_sid}: stage {result.stage.value}, Salesforce Task {result.activity_id or '-'}"
               + (f", error: {result.error}" if result.error else ""))
    _ops_exit(1 if result.stage.value == "failed" else 0)


@app.command("reconcile")
def reconcile_command(
    since: str = typer.Option("1h", help="Window of TaskRouter's Events list to walk: 30m, 1h, 1d or ISO-8601."),
) -> None:
    """Find tasks TaskRouter finished in the window that have no workflow (all callbacks lost) and start one each
    from the Events list, so they get logged. Tasks with a workflow are left alone."""
    from flexsf.ops import parse_since, reconcile, twilio_client_from

    try:
        start = parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None

    async def go(client, settings):
        return await reconcile(client, twilio_client_from(settings), settings.twilio_workspace_sid,
                               settings.flexsf_task_queue, start)

    actions = _ops(go)
    for action in actions:
        if action.action == "started":
            typer.echo(f"{action.task_sid}: {action.finished}, no workflow -> started with {action.events} event(s)")
        else:
            typer.echo(f"{action.task_sid}: {action.finished}, workflow exists -> left alone")
    started = sum(a.action == "started" for a in actions)
    typer.echo(f"{len(actions)} finished task(s) since {start.isoformat(timespec='seconds')}; {started} started")
    _ops_exit(0)


@app.command("search-attributes")
def search_attributes_command(
    create: bool = typer.Option(False, "--create", help="Create the missing ones (self-hosted clusters; Temporal "
                                                         "Cloud: use tcld or the UI)."),
) -> None:
    """Check that the namespace has the task workflow's search attributes (FlexStage, FlexWorkerSid …)."""
    from flexsf.ops import create_search_attributes, missing_search_attributes

    async def go(client, _):
        missing = await missing_search_attributes(client)
        if missing and create:
            await create_search_attributes(client, missing)
        return missing

    missing = _ops(go)
    if not missing:
        typer.echo("all search attributes are registered")
    elif create:
        typer.echo(f"created: {', '.join(missing)}")
    else:
        typer.echo(f"missing: {', '.join(missing)} (run with --create, or see README, Operating)")
    _ops_exit(1 if missing and not create else 0)


if __name__ == "__main__":
    app()
