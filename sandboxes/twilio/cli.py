"""`flexsf sandbox twilio`: run the Twilio sandbox in the foreground.

Prints one JSON line (url, credentials, sids, demo workers) to stdout once it is ready, then logs requests
to stderr until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Annotated

import typer

from sandboxes.twilio.sandbox import DEFAULT_RETENTION_S, TwilioSandbox


def twilio_command(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 0,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    callback_url: Annotated[
        str | None, typer.Option(help="Workspace EventCallbackUrl: where TaskRouter events are POSTed.")
    ] = None,
    auth_token: Annotated[
        str | None,
        typer.Option(
            envvar="FLEXSF_SANDBOX_TWILIO_AUTH_TOKEN", help="Auth token to accept and sign with; random if unset."
        ),
    ] = None,
    retention_s: Annotated[
        float, typer.Option(help="Seconds a completed/canceled task is kept before it is deleted.")
    ] = DEFAULT_RETENTION_S,
    quiet: Annotated[bool, typer.Option(help="Do not log requests to stderr.")] = False,
) -> None:
    """Run a local stand-in for Twilio TaskRouter, Flex Configuration and Flex token validation."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sandbox = TwilioSandbox(
        port=port, host=host, callback_url=callback_url, auth_token=auth_token, retention_s=retention_s
    ).start()
    try:
        sys.stdout.write(json.dumps(sandbox.info) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.1):
            pass
    finally:
        sandbox.stop()
