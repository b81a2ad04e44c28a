"""`flexsf sandbox twilio` as a real process: one JSON line when ready, SDK calls work, SIGINT exits cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from flexsf.twilio_client import build_twilio_client

FLEXSF = Path(sys.executable).parent / "flexsf"


def test_cli_runs_serves_and_stops_cleanly() -> None:
    process = subprocess.Popen(
        [str(FLEXSF), "sandbox", "twilio", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert {"url", "account_sid", "auth_token", "workspace_sid", "workflow_sid", "control_url", "workers"} <= set(
            info
        )
        assert info["workers"][0]["email"] == "ada.lovelace@example.com"
        client = build_twilio_client(info["account_sid"], info["auth_token"], base_url=info["url"])
        assert client.taskrouter.v1.workspaces(info["workspace_sid"]).fetch().sid == info["workspace_sid"]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert info["auth_token"] not in stderr  # the token is handed over once, on stdout, never logged
