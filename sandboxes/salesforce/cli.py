"""`flexsf sandbox salesforce`: run the Salesforce sandbox in the foreground.

Prints one JSON line (url, token_url, ca_bundle, credentials, private_key_file, api_version,
control_url, …) to stdout once it accepts connections, then logs requests to stderr until Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from typing import Annotated

import typer

from sandboxes.salesforce.faults import FaultSettings
from sandboxes.salesforce.sandbox import DEFAULT_API_VERSION, DEFAULT_CLIENT_ID, DEFAULT_USERNAME, SalesforceSandbox
from sandboxes.salesforce.schema import DEFAULT_CUSTOM_FIELDS, FLEX_TASK_SID_FIELD, CustomField


def salesforce_command(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 0,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    state: Annotated[str, typer.Option(help="SQLite file for the org's records, or :memory:.")] = ":memory:",
    seed_demo: Annotated[bool, typer.Option(help="Seed the demo org when the state is empty.")] = True,
    flex_task_sid_field: Annotated[
        bool, typer.Option(help="Declare the Task.Flex_Task_Sid__c external-id field.")
    ] = True,
    custom_field: Annotated[
        list[str] | None,
        typer.Option(help="Extra custom field: Object.Name__c[:external|:unique]. Repeatable."),
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="Latency added to every Salesforce request.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Plus a uniform random 0..jitter.")] = 0.0,
    fail_rate: Annotated[float, typer.Option(help="Fraction of REST calls answered 503.")] = 0.0,
    daily_limit: Annotated[int, typer.Option(help="Daily API request limit (403 REQUEST_LIMIT_EXCEEDED).")] = 100_000,
    token_lifetime_s: Annotated[float, typer.Option(help="Access token lifetime in seconds.")] = 7200,
    api_version: Annotated[str, typer.Option(help="API version advertised to clients.")] = DEFAULT_API_VERSION,
    client_id: Annotated[str, typer.Option(help="Connected app consumer key.")] = DEFAULT_CLIENT_ID,
    client_secret: Annotated[
        str | None, typer.Option(envvar="FLEXSF_SANDBOX_SF_CLIENT_SECRET", help="Consumer secret; random if unset.")
    ] = None,
    username: Annotated[str, typer.Option(help="Integration user's username.")] = DEFAULT_USERNAME,
    password: Annotated[
        str | None, typer.Option(envvar="FLEXSF_SANDBOX_SF_PASSWORD", help="Its password; random if unset.")
    ] = None,
    jwt_private_key: Annotated[
        str | None, typer.Option(help="PEM private key for the JWT flow; a new one is generated if unset.")
    ] = None,
    jwt_certificate: Annotated[
        str | None, typer.Option(help="PEM certificate/public key to verify JWT assertions with instead.")
    ] = None,
    admin_secret: Annotated[
        str | None,
        typer.Option(
            envvar="FLEXSF_SANDBOX_SF_ADMIN_SECRET",
            help="Require this secret on /__sandbox__ (header X-Sandbox-Admin).",
        ),
    ] = None,
    workdir: Annotated[
        str | None, typer.Option(help="Where the CA bundle and JWT key are written; a temp dir if unset.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Do not log requests to stderr.")] = False,
) -> None:
    """Run a local stand-in for a small Salesforce org (OAuth, REST, SOQL, SOSL) over HTTPS."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    fields = [f for f in DEFAULT_CUSTOM_FIELDS if flex_task_sid_field or f != FLEX_TASK_SID_FIELD]
    try:
        fields += [CustomField.parse(spec) for spec in custom_field or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--custom-field") from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sandbox = SalesforceSandbox(
        host=host,
        port=port,
        state=state,
        seed_demo=seed_demo,
        token_lifetime_s=token_lifetime_s,
        daily_limit=daily_limit,
        custom_fields=fields,
        api_version=api_version,
        client_id=client_id,
        client_secret=client_secret,
        username=username,
        password=password,
        jwt_private_key_file=jwt_private_key,
        jwt_certificate_file=jwt_certificate,
        admin_secret=admin_secret,
        workdir=workdir,
        faults=FaultSettings(latency_ms=latency_ms, jitter_ms=jitter_ms, fail_rate=fail_rate),
    ).start()
    try:
        sys.stdout.write(json.dumps(sandbox.info) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
