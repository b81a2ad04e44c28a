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


if __name__ == "__main__":
    app()
