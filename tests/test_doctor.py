"""`flexsf doctor` against the sandboxes, a real dev server and a running worker: every check passes on a good setup,
and each broken setup fails the check that names it (and only the checks it breaks)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ops.doctor import Report, diagnose
from sandboxes.salesforce.schema import restrict_picklist
from sandboxes.twilio.state import Worker
from tests.fixtures_stack import settings_from

ROOT = Path(__file__).resolve().parent.parent


def settings_for(stack, **overrides: str):
    env = {**stack.env, "FLEXSF_PUBLIC_BASE_URL": stack.gateway.url, **overrides}
    return settings_from(env)


async def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The command as an admin runs it, off the event loop that runs this test's worker and gateway."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ops.cli", "doctor", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def failed(report: Report) -> dict[str, str]:
    return {check.name: check.detail for check in report.checks if not check.ok}


async def test_a_good_setup_passes_every_check(stack, temporal_client) -> None:
    report = await diagnose(settings_for(stack), temporal_client)
    assert report.ok, failed(report)
    names = {check.name for check in report.checks}
    assert {
        "Salesforce login",
        "Task fields",
        "event callback URL",
        "events filter",
        "Flex configuration",
        "search attributes",
        "worker polling",
        "owner mapping",
    } <= names
    login = next(c for c in report.checks if c.name == "Salesforce login")
    assert "client credentials" in login.detail  # which flow, and why
    assert json.loads(report.as_json())["ok"] is True


async def test_a_missing_external_id_field_is_named(stack, temporal_client) -> None:
    report = await diagnose(
        settings_for(stack, FLEXSF_ACTIVITY_EXTERNAL_ID_FIELD="Missing_Flex_Sid__c"), temporal_client
    )
    assert set(failed(report)) == {"external id Missing_Flex_Sid__c"}
    fix = next(c.fix for c in report.checks if not c.ok)
    assert "External ID and Unique" in fix


async def test_a_wrong_callback_url_and_a_filter_without_completion_are_named(stack, temporal_client) -> None:
    stack.tw.state.update_workspace(
        event_callback_url="https://old.example.com/taskrouter/events",
        events_filter="task.created,reservation.accepted,task.canceled",
    )
    report = await diagnose(settings_for(stack), temporal_client)
    problems = failed(report)
    assert set(problems) == {"event callback URL", "events filter"}
    assert "old.example.com" in problems["event callback URL"]
    assert "task.completed" in problems["events filter"]


async def test_an_unmapped_worker_is_named(stack, temporal_client) -> None:
    stray = Worker(
        "WK" + "0" * 32, "Stray Agent", json.dumps({"email": "nobody@example.invalid"}), "Offline", time.time()
    )
    with stack.tw.state.lock:
        stack.tw.state.workers[stray.sid] = stray
    report = await diagnose(settings_for(stack), temporal_client)
    problems = failed(report)
    assert set(problems) == {"owner mapping"}
    assert "Stray Agent" in problems["owner mapping"]


async def test_a_type_the_orgs_restricted_picklist_lacks_is_named(stack, temporal_client) -> None:
    task = stack.sf.org.schema["Task"]
    standard = task.field("Type")
    restrict_picklist(stack.sf.org.schema, "Task.Type", ("Email", "Meeting", "Other"))
    try:  # the session's sandbox: the next test needs the standard schema back
        report = await diagnose(settings_for(stack), temporal_client)
        blank = await diagnose(settings_for(stack, FLEXSF_ACTIVITY_TYPE=""), temporal_client)
    finally:
        task.add(standard)
    detail = failed(report)
    assert set(detail) == {"Task Type value"}
    assert "'Call'" in detail["Task Type value"] and "restricted to Email, Meeting, Other" in detail["Task Type value"]
    assert blank.ok, failed(blank)


async def test_no_worker_polling_is_named(stack, temporal_client) -> None:
    report = await diagnose(settings_for(stack, FLEXSF_TASK_QUEUE="nobody-polls-this"), temporal_client)
    assert set(failed(report)) == {"worker polling"}


async def test_client_credentials_on_a_login_host_fail_in_one_json_line_with_exit_1(stack, temporal_server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_"))}
    env.update(stack.env)
    env.update(
        SALESFORCE_TOKEN_URL="https://login.salesforce.com/services/oauth2/token",
        TEMPORAL_ADDRESS=temporal_server.address,
        TEMPORAL_NAMESPACE=temporal_server.namespace,
    )
    for name in ("SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_PASSWORD"):
        env.pop(name, None)
    done = await doctor(env, "--json")
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["settings"]
    assert "My Domain" in report["checks"][0]["detail"]


async def test_a_good_setup_exits_0_from_the_command(stack, temporal_server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESFORCE_", "TWILIO_", "FLEXSF_", "TEMPORAL_"))}
    env.update(
        stack.env,
        FLEXSF_PUBLIC_BASE_URL=stack.gateway.url,
        TEMPORAL_ADDRESS=temporal_server.address,
        TEMPORAL_NAMESPACE=temporal_server.namespace,
    )
    done = await doctor(env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "✘" not in done.stdout and "✔" in done.stdout


async def test_the_etag_probe_reports_the_spelling_and_fails_only_without_one(stack, temporal_client) -> None:
    stack.tw.create_task({"from": "+15005550006"})
    stack.tw.faults.update(response_header_case="lower")
    lower = await diagnose(settings_for(stack), temporal_client)
    stack.tw.faults.update(response_header_case="canonical", task_fetch_without_etag=True)
    missing = await diagnose(settings_for(stack), temporal_client)
    stack.tw.faults.update(task_fetch_without_etag=False)
    assert lower.ok, failed(lower)
    assert next(c.detail for c in lower.checks if c.name == "TaskRouter ETag") == "sent as 'etag'"
    assert set(failed(missing)) == {"TaskRouter ETag"}
