"""`flexsf`: the one command-line entry point of the project."""

from __future__ import annotations

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


if __name__ == "__main__":
    app()
