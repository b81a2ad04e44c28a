"""`flexsf`: the one command-line entry point of the project."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Durable Salesforce integration for Twilio Flex.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Local stand-ins for Salesforce and Twilio.")
app.add_typer(sandbox_app, name="sandbox")

from sandboxes.twilio.cli import twilio_command  # noqa: E402

sandbox_app.command("twilio")(twilio_command)

from sandboxes.salesforce.cli import salesforce_command  # noqa: E402

sandbox_app.command("salesforce")(salesforce_command)


@app.callback()
def main() -> None:
    """Durable Salesforce integration for Twilio Flex."""


if __name__ == "__main__":
    app()
