"""docker-compose.yml's start order, played without Docker: a Temporal server as a fresh cluster has it (no search
attributes), the `flexsf-setup` command exactly as compose runs it (the key file, then the search attributes), then
`flexsf worker`, `flexsf gateway` and `flexsf codec-server` as processes of their own, each given only the variables
its compose service lists (with the sandboxes' settings as .env), checked the way compose checks them (healthchecks)
and stopped the way Docker stops them (SIGTERM). Payloads are encrypted with the setup's key file, as in compose."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

import worker
from devtools.dev import sandbox_env
from devtools.netutil import free_port, wait_for_port
from devtools.temporal_server import TemporalDevServer
from flexsf.codec import KEY_ID_METADATA, create_key_file, read_key_file
from flexsf.search_attributes import DEFINITIONS
from flexsf.vocabulary import workflow_id
from sandboxes.salesforce import demo as sf_demo
from sandboxes.twilio import demo as tw_demo
from tests.fixtures_stack import history_once_completed
from tests.test_deployment_files import KEYS_DIR, compose_environment
from tests.test_encryption import as_json, from_json, payloads_in

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TASK_QUEUE = "compose-start"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture
def fresh_cluster() -> Iterator[TemporalDevServer]:
    server = TemporalDevServer(search_attributes={}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def gateway_port() -> int:
    return free_port()


@pytest.fixture
def dot_env(fresh_cluster, clean_salesforce_sandbox, fresh_twilio_sandbox, gateway_port) -> dict[str, str]:
    """What the operator's .env holds for this stack: Temporal's address and namespace, the settings (here pointing
    at the sandboxes), the gateway's public URL and the codec server's token."""
    return sandbox_env(
        clean_salesforce_sandbox.info,
        fresh_twilio_sandbox.info,
        TASK_QUEUE,
        TEMPORAL_ADDRESS=fresh_cluster.address,
        TEMPORAL_NAMESPACE=fresh_cluster.namespace,
        FLEXSF_PUBLIC_BASE_URL=f"http://127.0.0.1:{gateway_port}",
        FLEXSF_CODEC_TOKEN=secrets.token_urlsafe(32),
        POSTGRES_PASSWORD="not-for-the-product",
    )


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """The `flexsf-keys` volume: an empty directory only this user may enter, as the image makes it."""
    path = tmp_path / "keys"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def container_env(compose, dot_env, keys_dir, metrics_port):
    """`container_env(service, **fixed)`: what that service's container gets (its compose `environment` with
    `dot_env` as .env), the volume's path mapped to `keys_dir`, the worker's metrics port to `metrics_port`, `fixed`
    over it, on top of this process's environment without any product setting."""
    own = ("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_", "POSTGRES")
    base = {k: v for k, v in os.environ.items() if not k.startswith(own)}

    def build(service: str, **fixed: str) -> dict[str, str]:
        env = compose_environment(compose["services"][service], dot_env)
        env = {k: v.replace(KEYS_DIR, str(keys_dir)) for k, v in env.items()}
        if "FLEXSF_WORKER_METRICS_ADDRESS" in env:
            env["FLEXSF_WORKER_METRICS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
        return base | env | fixed

    return build


@pytest.fixture
def product_env(container_env) -> dict[str, str]:
    """The worker's container environment."""
    return container_env("worker")


def installed(command: list[str]) -> list[str]:
    """A compose command run with this environment's console scripts (the image has them on PATH)."""
    return [str(BIN / command[0]), *command[1:]]


def worker_healthcheck(compose: dict, port: int) -> list[str]:
    """The worker's compose healthcheck, aimed at `port` instead of the container's fixed metrics port."""
    spec = compose["services"]["worker"]
    fixed = spec["environment"]["FLEXSF_WORKER_METRICS_ADDRESS"].rpartition(":")[2]
    kind, program, *args = spec["healthcheck"]["test"]
    assert kind == "CMD" and program == "python"
    return [sys.executable, *(a.replace(f":{fixed}/", f":{port}/") for a in args)]


async def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def pollers(client: Client, kind: TaskQueueType.ValueType) -> int:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=TASK_QUEUE), task_queue_type=kind
        )
    )
    return len(response.pollers)


def setup_command(compose: dict) -> list[str]:
    """flexsf-setup's command as its container runs it (compose's `$$` is a `$`), with this environment's programs."""
    program, flag, script = compose["services"]["flexsf-setup"]["command"]
    return [program, flag, script.replace("$$", "$")]


def with_programs(env: dict[str, str]) -> dict[str, str]:
    """`python` and `flexsf` are the image's; here this environment's, first on PATH."""
    return env | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


async def test_the_worker_refuses_a_namespace_the_setup_has_not_prepared(product_env, keys_dir, tmp_path) -> None:
    create_key_file(keys_dir / "encryption-keys")
    done = await run(installed(["flexsf", "worker"]), product_env, tmp_path)
    assert done.returncode != 0
    assert "lacks the search attributes" in done.stderr, done.stderr[-3000:]
    for name in DEFINITIONS:
        assert name in done.stderr
    assert "flexsf search-attributes --create" in done.stderr


async def test_after_the_compose_setup_step_the_worker_polls_passes_its_healthcheck_and_stops_cleanly(
    compose, container_env, product_env, fresh_cluster, metrics_port, keys_dir, tmp_path
) -> None:
    healthcheck = worker_healthcheck(compose, metrics_port)
    assert (await run(healthcheck, product_env, tmp_path)).returncode != 0, "healthy before any worker runs"

    setup_env = with_programs(container_env("flexsf-setup"))
    done = await run(setup_command(compose), setup_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    key_file = keys_dir / "encryption-keys"
    assert done.stdout.strip().splitlines() == [
        f"{key_file}: created with one new key",
        f"created: {', '.join(DEFINITIONS)}",
    ]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    written = key_file.read_text()
    # Every `docker compose up` runs it again: the key stays, the attributes are there.
    again = await run(setup_command(compose), setup_env, tmp_path)
    assert again.returncode == 0 and "all search attributes are registered" in again.stdout, again.stderr[-3000:]
    assert key_file.read_text() == written

    log = tmp_path / "worker.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            installed(compose["services"]["worker"]["command"]),
            env=product_env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client = await Client.connect(fresh_cluster.address, namespace=fresh_cluster.namespace)
        deadline = asyncio.get_running_loop().time() + 60
        while not (
            await pollers(client, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
            and await pollers(client, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        ):
            assert process.poll() is None, f"the worker exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            assert asyncio.get_running_loop().time() < deadline, f"no pollers:\n{log.read_text()[-3000:]}"
            await asyncio.sleep(0.1)

        health = await run(healthcheck, product_env, tmp_path)
        assert health.returncode == 0, health.stderr[-3000:]

        process.send_signal(signal.SIGTERM)
        # Docker's stop_grace_period is checked against GRACEFUL_SHUTDOWN in test_deployment_files; with no activity
        # running the worker must be done well within it.
        code = await asyncio.to_thread(process.wait, worker.GRACEFUL_SHUTDOWN.total_seconds() + 30)
        output = log.read_text()
        assert "shutting down" in output
        assert code == 0, output[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@contextmanager
def serving(command: list[str], env: dict[str, str], cwd: Path, log_name: str) -> Iterator[subprocess.Popen]:
    """A product process as its container runs it, stopped as Docker stops it (SIGTERM; killed if that hangs)."""
    with (cwd / log_name).open("w") as out:
        process = subprocess.Popen(installed(command), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def listening_on(port: int, process: subprocess.Popen, log: Path) -> None:
    try:
        wait_for_port("127.0.0.1", port, 60)
    except TimeoutError:
        raise AssertionError(f"nothing listens on {port}:\n{log.read_text()[-3000:]}") from None
    assert process.poll() is None, log.read_text()[-3000:]


def with_port(command: list[str], port: int) -> list[str]:
    """The compose command with `--host 127.0.0.1 --port <port>` in place of the container's."""
    command = list(command)
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    return command


async def test_the_compose_product_logs_a_task_with_encrypted_history_each_service_with_only_its_own_variables(
    compose,
    container_env,
    dot_env,
    fresh_cluster,
    fresh_twilio_sandbox,
    clean_salesforce_sandbox,
    gateway_port,
    keys_dir,
    tmp_path,
) -> None:
    import httpx

    services = compose["services"]
    setup = await run(setup_command(compose), with_programs(container_env("flexsf-setup")), tmp_path)
    assert setup.returncode == 0, setup.stderr[-3000:]
    keys = read_key_file(keys_dir / "encryption-keys")

    gateway_metrics, codec_port = free_port(), free_port()
    gateway_env = container_env("gateway", FLEXSF_GATEWAY_METRICS_ADDRESS=f"127.0.0.1:{gateway_metrics}")
    assert not [name for name in gateway_env if name.startswith(("SALESFORCE_", "POSTGRES"))]
    codec_env = container_env("codec-server")
    assert not [name for name in codec_env if name.startswith(("SALESFORCE_", "TWILIO_", "TEMPORAL_"))]
    gateway_command = with_port(services["gateway"]["command"], gateway_port)
    codec_command = with_port(services["codec-server"]["command"], codec_port)
    with (
        serving(services["worker"]["command"], container_env("worker"), tmp_path, "worker.log"),
        serving(gateway_command, gateway_env, tmp_path, "gateway.log") as gateway,
        serving(codec_command, codec_env, tmp_path, "codec.log") as codec_server,
    ):
        listening_on(gateway_port, gateway, tmp_path / "gateway.log")
        listening_on(codec_port, codec_server, tmp_path / "codec.log")
        public = dot_env["FLEXSF_PUBLIC_BASE_URL"]
        fresh_twilio_sandbox.set_callback_url(f"{public}/taskrouter/events")

        contact = sf_demo.UNIQUE_PHONE_CONTACT
        sid = fresh_twilio_sandbox.lifecycle(
            {"from": contact.phone, "customerName": contact.name},
            worker_sid=tw_demo.DEMO_WORKERS[0].sid,
            complete=True,
        )["sid"]

        raw = await Client.connect(fresh_cluster.address, namespace=fresh_cluster.namespace)  # no codec
        handle = raw.get_workflow_handle(workflow_id(sid))
        history = await history_once_completed(
            handle, 90, lambda status: (status, (tmp_path / "worker.log").read_text()[-3000:])
        )
        [logged] = [t for t in clean_salesforce_sandbox.records("Task") if t.get("Flex_Task_Sid__c") == sid]
        assert logged["WhoId"] == contact.id

        # Private by default: what Temporal stores is ciphertext under the setup's key.
        stored = b"".join(event.SerializeToString() for event in history.events)
        assert contact.phone.encode() not in stored and contact.name.encode() not in stored
        payloads = [p for event in history.events for p in payloads_in(event)]
        assert payloads and {p.metadata[KEY_ID_METADATA] for p in payloads} == {keys.current_id.encode()}

        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            # The codec server decodes it for the token's holder only (Caddy adds it to the UI's calls).
            codec_url = f"http://127.0.0.1:{codec_port}/codec/decode"
            token = {"Authorization": f"Bearer {dot_env['FLEXSF_CODEC_TOKEN']}"}
            decoded = await http.post(codec_url, json=as_json(payloads), headers=token)
            assert decoded.status_code == 200, decoded.text
            assert contact.phone.encode() in b"".join(p.data for p in from_json(decoded.json()))
            assert (await http.post(codec_url, json=as_json(payloads))).status_code == 401
            # The gateway's port: no codec, no docs, no metrics; those are on its metrics listener.
            for method, path in (
                ("POST", "/codec/decode"),
                ("GET", "/docs"),
                ("GET", "/openapi.json"),
                ("GET", "/metrics"),
            ):
                answer = await http.request(
                    method, f"{public}{path}", json={"payloads": []} if method == "POST" else None
                )
                assert answer.status_code == 404, (path, answer.status_code)
            metrics = (await http.get(f"http://127.0.0.1:{gateway_metrics}/metrics")).text
            assert 'flexsf_taskrouter_events_total{outcome="signalled",type="task.created"}' in metrics
