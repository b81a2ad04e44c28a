"""`flexsf dev`: the whole stack in one process, for a laptop.

Starts the Temporal dev server (a child process; history in `.flexsf/temporal.sqlite`, so it survives restarts),
the Salesforce and Twilio sandboxes in-process when no real credentials are configured, the gateway (uvicorn; its
/docs on, its metrics on a listener of their own) and the worker, and points the Twilio sandbox's TaskRouter callbacks
at the gateway. With encryption keys set, the codec server too, for the dev server's UI: dev only, it runs without a
token (the UI cannot send one) and listens on 127.0.0.1 alone. When ready it prints the URLs and writes
them, with the sandbox credentials, to `.flexsf/dev.json` (removed on exit). Ctrl-C / SIGTERM stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from temporalio.client import Client

from devtools.netutil import wait_for_port
from devtools.temporal_server import TemporalDevServer
from flexsf import logs, metrics
from flexsf.settings import ConfigurationError, Settings, load_settings, settings_from_env
from flexsf.temporal_client import data_converter

log = logging.getLogger("devtools.dev")

HOST = "127.0.0.1"
TEMPORAL_PORT, TEMPORAL_UI_PORT, GATEWAY_PORT, SALESFORCE_PORT, TWILIO_PORT = 7233, 8233, 8000, 8443, 8444
WORKER_METRICS_PORT, GATEWAY_METRICS_PORT, CODEC_PORT = 9464, 9465, 8081
DEV_TASK_QUEUE = "flex-salesforce"


def salesforce_sandbox_env(sf: dict[str, Any]) -> dict[str, str]:
    return {
        "SALESFORCE_TOKEN_URL": sf["token_url"],
        "SALESFORCE_CLIENT_ID": sf["client_id"],
        "SALESFORCE_CLIENT_SECRET": sf["client_secret"],
        "SALESFORCE_API_VERSION": sf["api_version"],
        "SALESFORCE_CA_BUNDLE": sf["ca_bundle"],
        # The sandbox org has the external-id field and person accounts the demo data uses.
        "FLEXSF_ACTIVITY_EXTERNAL_ID_FIELD": "Flex_Task_Sid__c",
        "FLEXSF_PERSON_ACCOUNTS": "true",
        "FLEXSF_SEARCH_OBJECTS": "Contact,Lead,Account",
    }


def twilio_sandbox_env(tw: dict[str, Any]) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": tw["account_sid"],
        "TWILIO_AUTH_TOKEN": tw["auth_token"],
        "TWILIO_WORKSPACE_SID": tw["workspace_sid"],
        "TWILIO_API_BASE_URL": tw["url"],
    }


def sandbox_env(sf: dict[str, Any] | None, tw: dict[str, Any] | None, task_queue: str, **extra: str) -> dict[str, str]:
    """Environment settings that point the product at the sandboxes (either may be None: a real system is used).

    Timers are short so a demo task finishes in seconds rather than the production minutes.
    """
    env: dict[str, str] = {}
    if sf is not None:
        env |= salesforce_sandbox_env(sf)
    if tw is not None:
        env |= twilio_sandbox_env(tw)
    env |= {
        "FLEXSF_TASK_QUEUE": task_queue,
        "FLEXSF_FLEX_CONFIG_TTL_S": "0",
        "FLEXSF_SELECTION_TIMEOUT_S": "30",
        "FLEXSF_NOTES_GRACE_S": "2",
        "FLEXSF_LOST_EVENT_WINDOW_S": "30",
    }
    env.update(extra)
    return env


def settings_with(env: dict[str, str]) -> Settings:
    """Settings from the environment/.env, with `env` (setting name → value) winning."""
    return settings_from_env(env)


class DevStack:
    def __init__(self, port_offset: int = 0, state_dir: Path = Path(".flexsf"), console=None) -> None:
        self.offset = port_offset
        self.state_dir = state_dir.resolve()  # paths in dev.json must work from any directory
        self.info_file = state_dir / "dev.json"
        self.console = console
        self.temporal: TemporalDevServer | None = None
        self.salesforce = None
        self.twilio = None

    def port(self, base: int) -> int:
        return base + self.offset

    async def run(self, stop: asyncio.Event) -> None:
        base = load_settings()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._remove_info)
            await self._start_temporal(stack, base)
            sf_info, tw_info = self._start_sandboxes(stack, base)
            settings = settings_with(
                sandbox_env(
                    sf_info,
                    tw_info,
                    base.flexsf_task_queue or DEV_TASK_QUEUE,
                    **self._gateway_env(base),
                    **self._codec_env(base),
                )
            )
            client = await Client.connect(
                self.temporal.address,
                namespace=self.temporal.namespace,
                data_converter=data_converter(settings),
                runtime=metrics.prometheus_runtime(self.worker_metrics_address(base)),
            )
            logs.register_secrets(logs.settings_secrets(settings))
            gateway_url = await self._start_gateway(stack, settings, client)
            if self._encrypting(base):
                await self._start_codec(stack, settings)
            callback_url = f"{gateway_url}/taskrouter/events"
            if self.twilio is not None:
                self.twilio.set_callback_url(callback_url)
                stack.callback(self.twilio.set_callback_url, None)
                # Agent Copilot's wrap-up notes webhook URL, as set in Console (docs/installing.md).
                self.twilio.set_copilot_url(f"{gateway_url}/copilot/notes")
                stack.callback(self.twilio.set_copilot_url, None)
            await self._start_worker(stack, settings, client)
            info = self._info(gateway_url, callback_url, settings, sf_info, tw_info)
            self._write_info(info)
            self._print(info)
            await stop.wait()
            self._say("stopping …")

    def worker_metrics_address(self, base: Settings) -> str:
        return base.flexsf_worker_metrics_address or f"{HOST}:{self.port(WORKER_METRICS_PORT)}"

    def gateway_metrics_address(self, base: Settings) -> str:
        return base.flexsf_gateway_metrics_address or f"{HOST}:{self.port(GATEWAY_METRICS_PORT)}"

    def codec_url(self) -> str:
        return f"http://{HOST}:{self.port(CODEC_PORT)}/codec"

    @staticmethod
    def _encrypting(base: Settings) -> bool:
        return base.encryption_keys() is not None

    def _gateway_env(self, base: Settings) -> dict[str, str]:
        # A laptop's gateway shows its OpenAPI; its metrics get their own listener, as in production.
        return {"FLEXSF_GATEWAY_DOCS": "true", "FLEXSF_GATEWAY_METRICS_ADDRESS": self.gateway_metrics_address(base)}

    def _codec_env(self, base: Settings) -> dict[str, str]:
        # With encryption on, the codec server serves the UI on its port (this offset).
        if not self._encrypting(base):
            return {}
        ui = self.port(TEMPORAL_UI_PORT)
        return {"FLEXSF_CODEC_CORS_ORIGINS": f"http://{HOST}:{ui},http://localhost:{ui}"}

    async def _start_temporal(self, stack: contextlib.AsyncExitStack, base: Settings) -> None:
        log_file = stack.enter_context(open(self.state_dir / "temporal.log", "ab"))
        # With encryption on, the UI decodes payloads through the codec server.
        codec_args = ["--ui-codec-endpoint", self.codec_url()] if self._encrypting(base) else []
        self.temporal = TemporalDevServer(
            host=HOST,
            port=self.port(TEMPORAL_PORT),
            ui_port=self.port(TEMPORAL_UI_PORT),
            db_file=self.state_dir / "temporal.sqlite",
            extra_args=codec_args,
        )
        # Registered before starting, so a failed start (which stops the server itself) and every later
        # failure alike leave no server process behind.
        stack.callback(self.temporal.stop)
        await asyncio.to_thread(self.temporal.start, 60.0, log_file)
        await asyncio.to_thread(wait_for_port, HOST, self.port(TEMPORAL_UI_PORT), 60.0)

    def _start_sandboxes(self, stack: contextlib.ExitStack, base: Settings):
        sf_info = tw_info = None
        if not base.salesforce_configured:
            from sandboxes.salesforce import SalesforceSandbox

            self.salesforce = SalesforceSandbox(
                host=HOST,
                port=self.port(SALESFORCE_PORT),
                state=str(self.state_dir / "salesforce.sqlite"),
                workdir=str(self.state_dir / "salesforce"),
            )
            stack.callback(self.salesforce.stop)
            sf_info = self.salesforce.start().info
        if not base.twilio_configured:
            from sandboxes.twilio import TwilioSandbox

            self.twilio = TwilioSandbox(host=HOST, port=self.port(TWILIO_PORT))
            stack.callback(self.twilio.stop)
            tw_info = self.twilio.start().info
        return sf_info, tw_info

    async def _start_gateway(self, stack: contextlib.AsyncExitStack, settings: Settings, client: Client) -> str:
        from gateway.app import create_app
        from gateway.server import start_gateway, stop_gateway

        app = create_app(settings, client, dev=True)
        server, task = await start_gateway(app, HOST, self.port(GATEWAY_PORT), log_config=None)
        stack.push_async_callback(stop_gateway, server, task)
        return f"http://{HOST}:{self.port(GATEWAY_PORT)}"

    async def _start_codec(self, stack: contextlib.AsyncExitStack, settings: Settings) -> None:
        """The codec server for the dev server's UI, which can send no static token (`--ui-codec-endpoint` only; it
        forwards a user's access token only with OIDC login and an https endpoint). Dev only: no token, loopback."""
        from gateway.codec_server import create_codec_app
        from gateway.server import start_gateway, stop_gateway

        app = create_codec_app(settings.model_copy(update={"flexsf_codec_token": None}), allow_unauthenticated=True)
        server, task = await start_gateway(app, HOST, self.port(CODEC_PORT), log_config=None)
        stack.push_async_callback(stop_gateway, server, task)

    async def _start_worker(self, stack: contextlib.AsyncExitStack, settings: Settings, client: Client) -> None:
        import worker as worker_module

        activities = worker_module.build_activities(settings)
        executor = stack.enter_context(
            ThreadPoolExecutor(max_workers=worker_module.ACTIVITY_THREADS, thread_name_prefix="activity")
        )
        worker = worker_module.build_worker(client, settings.flexsf_task_queue, activities, executor)
        await stack.enter_async_context(worker)
        # As `flexsf worker` does: the sweep's Schedule, visible in the local Temporal UI under Schedules.
        from workflows.sweep_schedule import start_sweep_schedule

        await start_sweep_schedule(client, settings)

    def _info(self, gateway_url: str, callback_url: str, settings: Settings, sf_info, tw_info) -> dict[str, Any]:
        urls = {
            "temporal": self.temporal.address,
            "temporal_ui": f"http://{HOST}:{self.port(TEMPORAL_UI_PORT)}",
            "gateway": gateway_url,
            "gateway_docs": f"{gateway_url}/docs",
            "taskrouter_callback": callback_url,
            "gateway_metrics": f"http://{settings.flexsf_gateway_metrics_address}/metrics",
            "worker_metrics": f"http://{self.worker_metrics_address(settings)}/metrics",
        }
        if "--ui-codec-endpoint" in self.temporal.extra_args:
            urls["codec"] = self.codec_url()
        if sf_info:
            urls |= {"salesforce": sf_info["url"], "salesforce_control": sf_info["control_url"]}
        if tw_info:
            urls |= {"twilio": tw_info["url"], "twilio_control": tw_info["control_url"]}
        return {
            "pid": os.getpid(),
            "port_offset": self.offset,
            "task_queue": settings.flexsf_task_queue,
            "urls": urls,
            "ca_bundle": sf_info["ca_bundle"] if sf_info else None,
            "salesforce": sf_info,
            "twilio": tw_info,
            # What `flexsf simulate` and `flexsf doctor` need to reach this stack as an admin's environment would.
            "env": sandbox_env(
                sf_info,
                tw_info,
                settings.flexsf_task_queue,
                TEMPORAL_ADDRESS=self.temporal.address,
                FLEXSF_PUBLIC_BASE_URL=gateway_url,
            ),
        }

    def _write_info(self, info: dict[str, Any]) -> None:
        # Holds sandbox credentials: readable by this user only, written whole or not at all.
        tmp = self.info_file.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=2, default=str)
        os.replace(tmp, self.info_file)

    def _remove_info(self) -> None:
        self.info_file.unlink(missing_ok=True)

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    def _print(self, info: dict[str, Any]) -> None:
        if self.console is None:
            return
        from rich.table import Table

        table = Table(title="flexsf dev stack", show_header=False)
        labels = {
            "temporal_ui": "Temporal UI",
            "temporal": "Temporal (gRPC)",
            "gateway_docs": "Gateway docs",
            "taskrouter_callback": "TaskRouter callback",
            "codec": "Codec server (UI; dev: no token)",
            "gateway_metrics": "Gateway metrics",
            "worker_metrics": "Worker metrics",
            "salesforce": "Salesforce sandbox",
            "salesforce_control": "Salesforce control",
            "twilio": "Twilio sandbox",
            "twilio_control": "Twilio control",
        }
        for key, label in labels.items():
            if key in info["urls"]:
                table.add_row(label, info["urls"][key])
        self.console.print(table)
        self.console.print(
            f"Sandbox credentials and settings: {self.info_file}  ·  task queue "
            f"[bold]{info['task_queue']}[/]  ·  Ctrl-C stops everything"
        )


async def run_dev(port_offset: int = 0, state_dir: Path = Path(".flexsf"), console=None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await DevStack(port_offset, state_dir, console).run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def dev_command(
    port_offset: int = 0,
    state_dir: Path = Path(".flexsf"),
) -> None:
    """Run the whole stack locally: Temporal dev server, sandboxes (unless configured), gateway and worker."""
    from rich.console import Console

    logs.setup_logging(level="WARNING")
    console = Console()
    try:
        asyncio.run(run_dev(port_offset, state_dir, console))
    except ConfigurationError as exc:
        raise SystemExit(f"flexsf dev: {exc}") from None
    console.print("stopped")
