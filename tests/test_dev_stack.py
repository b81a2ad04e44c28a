"""`flexsf dev` as a user runs it: a subprocess in its own directory, one inbound call end to end, Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from devtools.dev import (
    CODEC_PORT,
    GATEWAY_METRICS_PORT,
    GATEWAY_PORT,
    SALESFORCE_PORT,
    TEMPORAL_PORT,
    TEMPORAL_UI_PORT,
    TWILIO_PORT,
    WORKER_METRICS_PORT,
)

FLEXSF = Path(sys.executable).parent / "flexsf"
PORTS = (
    TEMPORAL_PORT,
    TEMPORAL_UI_PORT,
    GATEWAY_PORT,
    SALESFORCE_PORT,
    TWILIO_PORT,
    WORKER_METRICS_PORT,
    GATEWAY_METRICS_PORT,
    CODEC_PORT,
)
# Linux hands out outgoing connections' local ports from 32768 up: an offset that keeps every port of the stack
# below that range cannot collide with a connection some other test opened meanwhile.
_EPHEMERAL_START = 32768


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not listening(port)


def free_offset() -> int:
    for _ in range(50):
        offset = random.randrange(10000, _EPHEMERAL_START - max(PORTS))
        if all(port_is_free(base + offset) for base in PORTS):
            return offset
    raise RuntimeError("no free port offset found")


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            output = getattr(proc, "output_path", None)
            tail = output.read_text(errors="replace")[-3000:] if output and output.exists() else ""
            raise AssertionError(f"flexsf dev exited with {proc.returncode} while waiting for {what}:\n{tail}")
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any product setting, so `flexsf dev` starts on the sandboxes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_"))}
    return env | extra


@contextmanager
def flexsf_dev(cwd: Path, offset: int, env: dict[str, str], log_name: str = "dev.out") -> Iterator[subprocess.Popen]:
    """`flexsf dev` as a user runs it, in `cwd`; stopped with Ctrl-C (killed if that hangs) however the test ends."""
    with open(cwd / log_name, "wb") as log:
        proc = subprocess.Popen(
            [str(FLEXSF), "dev", "--port-offset", str(offset)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        proc.output_path = cwd / log_name
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def dev_stack(tmp_path: Path):
    env = clean_env()
    offset = free_offset()
    with flexsf_dev(tmp_path, offset, env) as proc:
        proc.args_env = env
        yield proc, tmp_path, offset


def test_flexsf_dev_runs_an_inbound_call_end_to_end_and_stops_cleanly(dev_stack):
    proc, cwd, offset = dev_stack
    info_file = cwd / ".flexsf" / "dev.json"
    wait_until(info_file.exists, 120, ".flexsf/dev.json", proc)
    info = json.loads(info_file.read_text())
    urls = info["urls"]
    assert urls["gateway"] == f"http://127.0.0.1:{GATEWAY_PORT + offset}"
    assert urls["temporal"] == f"127.0.0.1:{TEMPORAL_PORT + offset}"

    http = requests.Session()
    http.trust_env = False
    assert http.get(f"{urls['gateway']}/readyz", timeout=10).status_code == 200
    # A laptop's gateway shows its OpenAPI; its metrics are on a listener of their own, as in production.
    assert urls["gateway_docs"] == f"{urls['gateway']}/docs"
    assert http.get(urls["gateway_docs"], timeout=10).status_code == 200
    assert urls["gateway_metrics"] == f"http://127.0.0.1:{GATEWAY_METRICS_PORT + offset}/metrics"
    assert "flexsf_gateway_requests_total" in http.get(urls["gateway_metrics"], timeout=10).text
    assert http.get(f"{urls['gateway']}/metrics", timeout=10).status_code == 404
    assert "codec" not in urls, "plaintext by default: no codec server"

    # The admin's first command, against this stack: every check passes.
    doctor_env = {**proc.args_env, **info["env"]}
    doctor = subprocess.run(
        [str(FLEXSF), "doctor", "--json"], env=doctor_env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    report = json.loads(doctor.stdout.strip().splitlines()[-1])
    assert doctor.returncode == 0 and report["ok"], [c for c in report["checks"] if not c["ok"]]

    # The sweep's Schedule, as `flexsf worker` creates it: visible in the local UI under Schedules.
    async def schedule_ids() -> list[str]:
        from temporalio.client import Client

        client = await Client.connect(urls["temporal"])
        return [s.id async for s in await client.list_schedules()]

    assert f"flexsf-sweep-{info['task_queue']}" in asyncio.run(schedule_ids())

    # One inbound call from a demo contact with a unique phone number, through the Twilio sandbox's control API.
    control = urls["twilio_control"]
    task = http.post(f"{control}/tasks", json={"attributes": {"from": "(628) 555-0147"}}, timeout=10).json()
    sid = task["sid"]
    for step, body in (("reserve", {}), ("accept", {}), ("wrapup", {}), ("complete", {"reason": "resolved"})):
        response = http.post(f"{control}/tasks/{sid}/{step}", json=body, timeout=10)
        assert response.status_code < 300, (step, response.text)

    salesforce = requests.Session()
    salesforce.trust_env = False
    salesforce.verify = info["ca_bundle"]

    def logged_tasks():
        records = salesforce.get(f"{urls['salesforce_control']}/records/Task", timeout=10).json()
        return [r for r in records if r.get("Flex_Task_Sid__c") == sid] or None

    logged = wait_until(logged_tasks, 90, f"a Salesforce Task for {sid}", proc)
    assert len(logged) == 1

    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert not info_file.exists()
    for base in PORTS:
        assert not listening(base + offset), f"port {base + offset} still accepts connections"
    assert (cwd / ".flexsf" / "temporal.sqlite").exists()


def test_temporal_history_survives_a_restart(dev_stack):
    proc, cwd, offset = dev_stack
    info_file = cwd / ".flexsf" / "dev.json"
    wait_until(info_file.exists, 120, ".flexsf/dev.json", proc)
    address = json.loads(info_file.read_text())["urls"]["temporal"]
    workflow = f"dev-restart-{random.getrandbits(32)}"
    run(
        [
            "workflow",
            "start",
            "--address",
            address,
            "--task-queue",
            "nobody-polls",
            "--type",
            "Nothing",
            "--workflow-id",
            workflow,
        ]
    )
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0

    with flexsf_dev(cwd, offset, proc.args_env, "dev2.out") as again:
        wait_until(info_file.exists, 120, ".flexsf/dev.json after a restart", again)
        described = run(["workflow", "describe", "--address", address, "--workflow-id", workflow])
        assert workflow in described
        again.send_signal(signal.SIGINT)
        assert again.wait(30) == 0


def run(args: list[str]) -> str:
    from devtools.temporal_server import temporal_binary

    done = subprocess.run([temporal_binary(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
