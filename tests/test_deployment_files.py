"""The deployment files agree with the code: compose layout, every setting documented, the image's commands exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from flexsf.settings import ConfigurationError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
FLEXSF = Path(sys.executable).parent / "flexsf"
TEMPORAL_SETTINGS = ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS")
_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_example() -> list[tuple[str, str, str | None]]:
    """(NAME, example value, the comment line just above it) for every `NAME=` or `# NAME=` line."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    found = []
    for i, line in enumerate(lines):
        m = _LINE.match(line.strip())
        if m:
            above = lines[i - 1].strip() if i else ""
            comment = above if above.startswith("#") and not _LINE.match(above) else None
            found.append((m[2], m[3], comment))
    return found


def setting_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        nested = field.annotation if isinstance(field.annotation, type) else None
        if nested is not None and issubclass(nested, BaseModel):
            names |= {f"{name}__{sub}".upper() for sub in nested.model_fields}
        else:
            names.add(name.upper())
    return names


def test_compose_has_postgres_temporal_with_schema_setup_ui_worker_and_gateway(compose) -> None:
    services = compose["services"]
    assert {"postgresql", "temporal-admin-tools", "temporal", "temporal-ui", "worker", "gateway"} <= set(services)
    assert not any("auto-setup" in str(s.get("image", "")) for s in services.values()), "auto-setup is deprecated"

    setup = services["temporal-admin-tools"]
    assert setup["image"].startswith("temporalio/admin-tools:")
    assert "temporal-sql-tool" in str(setup["command"])
    assert setup["depends_on"]["postgresql"]["condition"] == "service_healthy"

    temporal = services["temporal"]
    assert temporal["image"].startswith("temporalio/server:")
    assert temporal["depends_on"]["temporal-admin-tools"]["condition"] == "service_completed_successfully"
    assert temporal["healthcheck"]["test"][:3] == ["CMD", "nc", "-z"], "the server image has no curl: TCP probe"
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")


@pytest.mark.parametrize(
    "service, command", [("worker", ["flexsf", "worker"]), ("gateway", ["flexsf", "gateway", "--host", "0.0.0.0"])]
)
def test_worker_and_gateway_are_the_one_image_configured_through_dot_env(compose, service, command) -> None:
    spec = compose["services"][service]
    assert spec["build"] == "."
    assert spec["env_file"] in (".env", [".env"])
    assert spec["command"][: len(command)] == command
    assert "temporal" in str(spec["depends_on"])


def test_the_dockerfile_is_python_311_slim_runs_as_a_user_and_defaults_to_the_worker() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^CMD \["flexsf", "worker"\]\s*$', text, re.M)
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".git", ".flexsf"} <= ignored


@pytest.mark.parametrize("command, expected", [(["worker"], "worker"), (["gateway"], "--host")])
def test_the_images_commands_exist(command, expected) -> None:
    done = subprocess.run([str(FLEXSF), *command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


def test_env_example_documents_every_setting_with_a_comment() -> None:
    documented = {name: comment for name, _, comment in env_example()}
    missing = (setting_names() | set(TEMPORAL_SETTINGS)) - set(documented)
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"
    uncommented = [name for name, comment in documented.items() if not comment]
    assert not uncommented, f"no one-line comment above: {uncommented}"
    env_file = (ROOT / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD" in documented and "POSTGRES_PASSWORD" in env_file


def test_env_example_secrets_are_placeholders_the_settings_refuse(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SALESFORCE_", "TWILIO_", "FLEXSF_")):
            monkeypatch.delenv(name)
    examples = {name: value for name, value, _ in env_example()}
    secrets = [name for name, field in Settings.model_fields.items() if field.annotation == SecretStr | None]
    assert secrets
    for name in secrets:
        value = examples[name.upper()]
        with pytest.raises(ConfigurationError) as refused:
            load_settings(**{name: value})
        assert name.upper() in str(refused.value) and value not in str(refused.value)
    # As shipped (copied to .env unchanged) the file is refused, naming the settings and never echoing a value.
    with pytest.raises(ConfigurationError) as refused:
        load_settings(_env_file=ROOT / ".env.example")
    assert "SALESFORCE_CLIENT_SECRET" in str(refused.value)
    assert "TWILIO_AUTH_TOKEN" in str(refused.value)
    assert "changeme" not in str(refused.value)
