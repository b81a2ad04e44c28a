"""`flexsf sandbox salesforce` as a real process: JSON line, one simple-salesforce call, clean SIGINT exit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from flexsf.salesforce_client import SalesforceCredentials, connect

FLEXSF = str(Path(sys.executable).parent / "flexsf")


def test_cli_runs_serves_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "org.sqlite"
    process = subprocess.Popen(
        [FLEXSF, "sandbox", "salesforce", "--port", "0", "--state", str(state), "--no-flex-task-sid-field"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line, process.stderr.read()  # type: ignore[union-attr]
        info = json.loads(line)
        for key in (
            "url",
            "token_url",
            "ca_bundle",
            "client_id",
            "client_secret",
            "username",
            "password",
            "private_key_file",
            "api_version",
            "control_url",
        ):
            assert info[key], key
        creds = SalesforceCredentials(
            token_url=info["token_url"],
            client_id=info["client_id"],
            username=info["username"],
            private_key_file=info["private_key_file"],
            api_version=info["api_version"],
            ca_bundle=info["ca_bundle"],
        )
        sf = connect(creds)
        assert sf.query("SELECT COUNT() FROM Contact")["totalSize"] > 100
        assert "Flex_Task_Sid__c" not in {f["name"] for f in sf.Task.describe()["fields"]}
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert out == ""
    assert "POST /services/oauth2/token 200" in err
    assert info["client_secret"] not in err and info["password"] not in err
    assert state.exists()
