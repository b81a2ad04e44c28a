"""`flexsf`: the one command-line entry point of the project.

Production commands (worker, gateway, codec server, operator commands) live here and import nothing of the
development tools or the sandboxes; the development commands are forwarded to `devtools.cli`, loaded only when one
of them runs, and say in one line what to install when the development extra is missing.
"""

from __future__ import annotations

import typer

from flexsf.models import Stage

app = typer.Typer(no_args_is_help=True, help="Durable Salesforce integration for Twilio Flex.")


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

    from flexsf.logs import setup_logging
    from flexsf.settings import ConfigurationError, load_settings
    from gateway.app import create_app

    try:
        settings = load_settings()
        setup_logging(settings)
        application = create_app(settings)
    except ConfigurationError as exc:
        raise SystemExit(f"flexsf gateway: {exc}") from None
    # log_config=None: uvicorn's records go through flexsf's handler (JSON, task sid, redaction).
    # The client's address (the agent API's failure limit) comes from FLEXSF_TRUSTED_PROXIES only: uvicorn's own
    # proxy headers, with FORWARDED_ALLOW_IPS=*, would let any caller pick the address it is limited by.
    uvicorn.run(application, host=host, port=port, proxy_headers=False, log_config=None)


@app.command("codec-server")
def codec_server_command(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8081, help="Port to listen on."),
) -> None:
    """Serve POST /codec/encode and /codec/decode so the Temporal UI and CLI can show encrypted payloads
    (FLEXSF_ENCRYPTION_KEYS or FLEXSF_ENCRYPTION_KEYS_FILE). Every call needs `Authorization: Bearer
    <FLEXSF_CODEC_TOKEN>` (it does not start without one); browsers are allowed from FLEXSF_CODEC_CORS_ORIGINS.
    Serve it on an internal network, never beside the gateway's public port; point the UI at http(s)://HOST:PORT/codec."""
    import uvicorn

    from flexsf.logs import setup_logging
    from flexsf.settings import ConfigurationError, load_settings
    from gateway.codec_server import create_codec_app

    try:
        settings = load_settings()
        setup_logging(settings)
        application = create_codec_app(settings)
    except ConfigurationError as exc:
        raise SystemExit(f"flexsf codec-server: {exc}") from None
    uvicorn.run(application, host=host, port=port, log_config=None)


# ---- operating: find, inspect, relog and reconcile tasks (ops.tasks) -------------------------------------------

tasks_app = typer.Typer(no_args_is_help=True, help="Find and inspect task workflows by their search attributes.")
app.add_typer(tasks_app, name="tasks")


def _ops(coro_fn, as_json: bool = False):
    """Run one ops coroutine against Temporal (connected as the worker connects: TEMPORAL_* env / profile).

    A failure leaves with exit 1 and one line on stderr; with `as_json` also `{"ok": false, "error": …}` on stdout, so
    a script reading stdout always gets one JSON object."""
    import asyncio

    from temporalio.service import RPCError

    from flexsf.settings import ConfigurationError, load_settings
    from flexsf.temporal_client import connect
    from ops.tasks import OpsError

    async def go():
        settings = load_settings()
        client = await connect(settings)
        return await coro_fn(client, settings)

    try:
        return asyncio.run(go())
    except (OpsError, ConfigurationError, ValueError) as exc:
        _fail(str(exc), as_json)
    except RPCError as exc:
        # Refused by Temporal (permissions, a namespace that does not exist …): one line an operator can act on.
        _fail(f"Temporal refused the request: {exc.status.name}: {exc.message}", as_json)
    except RuntimeError as exc:
        # The SDK's connect failure (nothing listening, TLS mismatch) arrives as a RuntimeError.
        _fail(f"cannot reach Temporal: {exc}", as_json)


def _fail(message: str, as_json: bool) -> None:
    # Messages from the SDK can span lines (a gRPC status with details): the promise is one line.
    line = " ".join(message.split())
    typer.echo(f"flexsf: {line}", err=True)
    if as_json:
        _emit({"ok": False, "error": line})
    _ops_exit(1)


def _emit(document: dict) -> None:
    import json

    typer.echo(json.dumps(document, default=str))


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


_JSON_HELP = 'One JSON object on stdout (errors: {"ok": false, "error": …} too); same exit codes.'


@tasks_app.command("list")
def tasks_list_command(
    stage: Stage = typer.Option(
        None, case_sensitive=False, help="Only tasks at this stage (failed, waiting_for_api_budget: repairable)."
    ),
    repairable: bool = typer.Option(
        False, "--repairable", help="Only running tasks in a repairable stage (failed or waiting_for_api_budget)."
    ),
    worker_sid: str = typer.Option(None, "--worker", help="Only tasks accepted by this worker (WK…)."),
    since: str = typer.Option(None, help="Only workflows started since: a duration (30m, 1h, 1d) or ISO-8601."),
    limit: int = typer.Option(100, min=1, help="At most this many rows."),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """List task workflows, newest first: task sid, stage, worker, record, Salesforce Task, start time."""
    from rich.table import Table

    from ops.tasks import list_tasks, parse_since, repairable_query, tasks_query

    if repairable and stage:
        raise typer.BadParameter("--repairable already names its stages; leave out --stage", param_hint="--stage")
    try:
        filters = {"worker_sid": worker_sid, "since": parse_since(since) if since else None}
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    query = repairable_query(**filters) if repairable else tasks_query(stage=stage, **filters)
    rows = _ops(lambda client, _: list_tasks(client, query, limit), as_json)
    if as_json:
        _emit({"ok": True, "query": query, "tasks": [row.as_json() for row in rows]})
        _ops_exit(0)
    table = Table(title=f"{len(rows)} task(s) · {query}")
    for column in ("Task", "Stage", "Worker", "Record", "Salesforce Task", "Started (UTC)", "Workflow"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            row.task_sid,
            row.stage or "",
            row.worker_sid or "",
            row.record_id or "",
            row.activity_id or "",
            row.started.strftime("%Y-%m-%d %H:%M:%S") if row.started else "",
            row.status,
        )
    _console().print(table)
    _ops_exit(0)


@tasks_app.command("show")
def tasks_show_command(
    task_sid: str = typer.Argument(..., help="The Flex task (WT…)."),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Show one task as its workflow sees it: stage, record, Salesforce Task, last error, and its Temporal UI link
    when FLEXSF_TEMPORAL_UI_URL is set."""
    from rich.table import Table

    from ops.tasks import show_task, workflow_ui_url

    async def go(client, settings):
        details = await show_task(client, task_sid)
        details.ui_url = workflow_ui_url(settings.flexsf_temporal_ui_url, client.namespace, details.workflow_id)
        return details

    details = _ops(go, as_json)
    if as_json:
        _emit({"ok": True, **details.as_json()})
        _ops_exit(0)
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
        "Log note": view.log_note or "",
        "Flags": view.flags_source + (f" ({view.flags_error})" if view.flags_error else ""),
    }
    if details.ui_url:
        rows["Temporal UI"] = details.ui_url
    for label, value in rows.items():
        table.add_row(label, value)
    _console().print(table)
    _ops_exit(0)


@app.command("relog")
def relog_command(
    task_sid: str = typer.Argument(..., help="The Flex task (WT…) whose log to write again."),
    reason: str = typer.Option(None, help="Why (kept in the workflow's history)."),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Write a finished task's Salesforce activity log again, any time within the namespace's retention: retries a
    failed log, or amends the logged Task in place (same Task, so repeating it changes nothing); a closed workflow
    gets a new run that does only that. Prints the stage and Salesforce Task afterwards."""
    from ops.tasks import relog

    result = _ops(lambda client, _: relog(client, task_sid, reason), as_json)
    failed = result.stage == Stage.FAILED
    if as_json:
        _emit({"ok": not failed, "task_sid": task_sid, **result.model_dump(mode="json")})
    else:
        typer.echo(
            f"{task_sid}: stage {result.stage.value}, Salesforce Task {result.activity_id or '-'}"
            + (f", error: {result.error}" if result.error else "")
        )
    _ops_exit(1 if failed else 0)


@app.command("reconcile")
def reconcile_command(
    since: str = typer.Option("1h", help="Window of TaskRouter's Events list to walk: 30m, 1h, 1d or ISO-8601."),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Find tasks TaskRouter finished in the window that have no workflow (all callbacks lost) and start one each
    from the Events list, so they get logged. Tasks with a workflow are left alone."""
    from dataclasses import asdict

    from ops.tasks import parse_since, reconcile, twilio_client_from

    try:
        start = parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None

    async def go(client, settings):
        return await reconcile(
            client, twilio_client_from(settings), settings.twilio_workspace_sid, settings.flexsf_task_queue, start
        )

    actions = _ops(go, as_json)
    started = sum(a.action == "started" for a in actions)
    failed = sum(a.action == "failed" for a in actions)
    if as_json:
        _emit(
            {
                "ok": not failed,
                "since": start.isoformat(timespec="seconds"),
                "started": started,
                "failed": failed,
                "actions": [asdict(a) for a in actions],
            }
        )
    else:
        for action in actions:
            if action.action == "started":
                typer.echo(
                    f"{action.task_sid}: {action.finished}, no workflow -> started with {action.events} event(s)"
                )
            elif action.action == "failed":
                typer.echo(f"{action.task_sid}: {action.finished} -> failed: {action.reason}")
            else:
                typer.echo(f"{action.task_sid}: {action.finished}, workflow exists -> left alone")
        summary = f"{len(actions)} finished task(s) since {start.isoformat(timespec='seconds')}; {started} started"
        typer.echo(summary + (f", {failed} failed" if failed else ""))
    # A failed task still has no log: a script or cron job running this must notice.
    _ops_exit(1 if failed else 0)


@app.command("search-attributes")
def search_attributes_command(
    create: bool = typer.Option(
        False, "--create", help="Create the missing ones (self-hosted clusters; Temporal Cloud: use tcld or the UI)."
    ),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Check that the namespace has the task workflow's search attributes (FlexStage, FlexWorkerSid …)."""
    from flexsf.search_attributes import create_search_attributes, missing_search_attributes

    async def go(client, _):
        missing = await missing_search_attributes(client)
        if missing and create:
            await create_search_attributes(client, missing)
        return missing

    missing = _ops(go, as_json)
    ok = not missing or create
    if as_json:
        created = list(missing) if create else []
        _emit({"ok": ok, "missing": [] if create else list(missing), "created": created})
    elif not missing:
        typer.echo("all search attributes are registered")
    elif create:
        typer.echo(f"created: {', '.join(missing)}")
    else:
        typer.echo(f"missing: {', '.join(missing)} (run with --create, or see docs/operating.md)")
    _ops_exit(0 if ok else 1)


@app.command("doctor")
def doctor_command(
    as_json: bool = typer.Option(
        False, "--json", help='One JSON object: {"ok": bool, "checks": [{name, ok, detail, fix}]}.'
    ),
) -> None:
    """Check a real org and Flex account with the configured settings: Salesforce login and fields, the TaskRouter
    workspace's callback and events, the Flex flags, Temporal's search attributes and a polling worker. Exits 1 when
    any check fails; every failed row says what to change."""
    import asyncio

    from flexsf.settings import ConfigurationError, load_settings
    from ops.doctor import diagnose, diagnose_settings_error

    try:
        report = asyncio.run(diagnose(load_settings()))
    except ConfigurationError as exc:
        report = diagnose_settings_error(exc)
    if as_json:
        typer.echo(report.as_json())
    else:
        from rich.table import Table

        table = Table(title="flexsf doctor", show_lines=False)
        for column in ("", "Check", "Detail", "Fix"):
            table.add_column(column)
        for check in report.checks:
            table.add_row("[green]✔[/]" if check.ok else "[red]✘[/]", check.name, check.detail, check.fix)
        _console().print(table)
    _ops_exit(0 if report.ok else 1)


# ---- development commands: found through the `flexsf.dev_commands` entry points, loaded only when one runs -------

DEV_EXTRA_HINT = "pip install 'flex-salesforce-temporal[dev]'"


def _forward(entry_point) -> None:
    name = entry_point.name

    @app.command(
        name,
        help=f"Development tool (the dev extra): `flexsf {name} --help` for its options.",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def forward(ctx: typer.Context) -> None:
        try:
            commands = entry_point.load()
        except ModuleNotFoundError as exc:
            raise SystemExit(
                f"flexsf {name} is a development command and needs the development extra "
                f"(missing: {exc.name}): {DEV_EXTRA_HINT}"
            ) from None
        commands([name, *ctx.args], prog_name="flexsf")


def _forward_development_commands() -> None:
    from importlib.metadata import entry_points

    for entry_point in sorted(entry_points(group="flexsf.dev_commands"), key=lambda e: e.name):
        _forward(entry_point)


_forward_development_commands()


if __name__ == "__main__":
    app()
