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

    try:
        application = create_app(load_settings())
    except ConfigurationError as exc:
        raise SystemExit(f"flexsf gateway: {exc}") from None
    uvicorn.run(application, host=host, port=port, proxy_headers=True)


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


if __name__ == "__main__":
    app()
