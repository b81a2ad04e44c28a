"""The operator commands' contract without a Temporal server: `--json` everywhere, one line (never a traceback) when
Temporal cannot be reached, `--stage` checked against the workflow's stages, the Temporal UI link.

The commands run as subprocesses, as an operator or a cron job runs them; the real-stack behaviour is in
tests/test_operability.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexsf.models import Stage
from flexsf.settings import ConfigurationError, settings_from_env
from ops.tasks import workflow_ui_url

REPO = Path(__file__).resolve().parent.parent
TASK = "WT" + "0" * 32
OPERATOR_COMMANDS = {
    "tasks list": ["tasks", "list"],
    "tasks show": ["tasks", "show", TASK],
    "relog": ["relog", TASK],
    "reconcile": ["reconcile", "--since", "10m"],
    "search-attributes": ["search-attributes"],
}


@pytest.fixture
def dead_address() -> Iterator[str]:
    """host:port where nothing listens: bound (so no one else takes it) but never listening, so connects are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def flexsf(*args: str, **env: str) -> subprocess.CompletedProcess:
    prefixes = ("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        cwd=REPO,
        env={**clean, "TEMPORAL_NAMESPACE": "default", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", ["tasks list", "relog"])
def test_an_unreachable_temporal_is_one_line_and_exit_1(command: str, dead_address: str) -> None:
    done = flexsf(*OPERATOR_COMMANDS[command], TEMPORAL_ADDRESS=dead_address)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("flexsf: cannot reach Temporal") and dead_address in line
    assert done.stdout == ""


@pytest.mark.parametrize("command", OPERATOR_COMMANDS)
def test_with_json_a_failure_is_also_one_json_object_on_stdout(command: str, dead_address: str) -> None:
    done = flexsf(*OPERATOR_COMMANDS[command], "--json", TEMPORAL_ADDRESS=dead_address)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    [line] = done.stderr.splitlines()
    assert json.loads(done.stdout) == {"ok": False, "error": line.removeprefix("flexsf: ")}


def test_an_unknown_stage_is_refused_with_the_valid_ones_before_connecting(dead_address: str) -> None:
    done = flexsf("tasks", "list", "--stage", "broken", TEMPORAL_ADDRESS=dead_address)
    assert done.returncode == 2
    assert "Invalid value for '--stage'" in done.stderr and "cannot reach Temporal" not in done.stderr
    assert all(stage.value in done.stderr for stage in (Stage.FAILED, Stage.AWAITING_SELECTION, Stage.LOGGED))


def test_a_stage_is_matched_whatever_its_case(dead_address: str) -> None:
    done = flexsf("tasks", "list", "--stage", "FAILED", TEMPORAL_ADDRESS=dead_address)
    assert "Invalid value" not in done.stderr and "cannot reach Temporal" in done.stderr


def test_the_ui_link_is_the_workflows_page_under_the_configured_ui() -> None:
    assert workflow_ui_url(None, "default", "flex-task-WT1") is None
    assert workflow_ui_url("http://127.0.0.1:8233", "default", "flex-task-WT1") == (
        "http://127.0.0.1:8233/namespaces/default/workflows/flex-task-WT1"
    )
    assert workflow_ui_url("https://cloud.temporal.io", "prod.a1b2c", "id with/slash") == (
        "https://cloud.temporal.io/namespaces/prod.a1b2c/workflows/id%20with%2Fslash"
    )


def test_the_ui_url_setting_is_optional_and_must_be_a_url() -> None:
    assert settings_from_env({}).flexsf_temporal_ui_url is None
    assert settings_from_env({"FLEXSF_TEMPORAL_UI_URL": " "}).flexsf_temporal_ui_url is None
    ui = settings_from_env({"FLEXSF_TEMPORAL_UI_URL": "https://cloud.temporal.io/"})
    assert ui.flexsf_temporal_ui_url == "https://cloud.temporal.io"
    with pytest.raises(ConfigurationError, match="FLEXSF_TEMPORAL_UI_URL|flexsf_temporal_ui_url"):
        settings_from_env({"FLEXSF_TEMPORAL_UI_URL": "localhost:8233"})
