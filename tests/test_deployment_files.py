"""The deployment files agree with the code: compose layout, every setting documented, the image's commands exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel, SecretStr

import worker
from flexsf.settings import ConfigurationError, Settings, load_settings
from gateway.routes.codec import PREFIX as CODEC_PREFIX

ROOT = Path(__file__).resolve().parent.parent
FLEXSF = Path(sys.executable).parent / "flexsf"
TEMPORAL_SETTINGS = ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS")
_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
PRODUCT_SERVICES = ("flexsf-setup", "worker", "gateway")
SETUP_COMMAND = ["flexsf", "search-attributes", "--create"]
# What the image holds: the production packages and what installing them needs. Nothing else may be copied in.
PRODUCTION_SOURCES = {
    "requirements/runtime.txt",
    "pyproject.toml",
    "README.md",
    "worker.py",
    "flexsf",
    "workflows",
    "activities",
    "gateway",
    "ops",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_duration(text: str) -> timedelta:
    """Compose's duration format: `30s`, `1m30s`, `1h`, `500ms`."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a compose duration: {text!r}"
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    return timedelta(seconds=sum(float(n) * unit[u] for n, u in parts))


def dockerfile_instructions() -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, arguments) per instruction of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.split()))
    return instructions


def copied_sources() -> list[str]:
    """Every source path of the Dockerfile's COPY instructions, in order (options such as --chown dropped)."""
    sources = []
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY":
            paths = [a for a in args if not a.startswith("--")]
            sources += [s.rstrip("/") for s in paths[:-1]]
    return sources


def _docker_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker matches it (`*` stays within one path segment, `**` crosses them)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative to the checkout) into the build context: the last matching rule
    wins, and a rule matching a parent directory matches everything under it."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _docker_pattern(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def checkout_files() -> list[str]:
    """Tracked and new (not ignored) files of the checkout."""
    done = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if (ROOT / line).is_file()]


def is_production(path: str) -> bool:
    return any(path == source or path.startswith(source + "/") for source in PRODUCTION_SOURCES)


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
    assert {"postgresql", "temporal-admin-tools", "temporal", "temporal-ui", *PRODUCT_SERVICES} <= set(services)
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
    "service, command",
    [
        ("flexsf-setup", SETUP_COMMAND),
        ("worker", ["flexsf", "worker"]),
        ("gateway", ["flexsf", "gateway", "--host", "0.0.0.0"]),
    ],
)
def test_setup_worker_and_gateway_are_the_one_image_configured_through_dot_env(compose, service, command) -> None:
    spec = compose["services"][service]
    assert spec["build"] == "."
    assert spec["env_file"] in (".env", [".env"])
    assert spec["command"][: len(command)] == command
    # Compose's own TEMPORAL_ADDRESS default reaches the server in the compose network; .env (Temporal Cloud) wins.
    assert spec["environment"]["TEMPORAL_ADDRESS"] == "${TEMPORAL_ADDRESS:-temporal:7233}"


def test_every_image_is_pinned_and_the_products_carries_the_package_version(compose) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, spec in compose["services"].items():
        image, _, tag = spec["image"].rpartition(":")
        assert image and tag and tag != "latest" and "/" not in tag, f"{name}: {spec['image']!r} is not pinned"
    assert {compose["services"][s]["image"] for s in PRODUCT_SERVICES} == {f"flexsf:{version}"}
    base = [args[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"python:3\.11-slim-\w+", base[0]), base


def test_the_setup_registers_the_search_attributes_with_the_products_own_command_once_the_namespace_exists(
    compose,
) -> None:
    services = compose["services"]
    setup = services["flexsf-setup"]
    assert setup["command"] == SETUP_COMMAND
    assert setup["depends_on"] == {"temporal-create-namespace": {"condition": "service_completed_successfully"}}
    assert services["temporal-create-namespace"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert "namespace create" in str(services["temporal-create-namespace"]["command"])
    assert setup.get("restart", "no") == "no", "a one-shot step: `restart` would keep its dependents waiting"


@pytest.mark.parametrize("service", ["worker", "gateway"])
def test_worker_and_gateway_start_only_after_the_setup_succeeded(compose, service) -> None:
    assert compose["services"][service]["depends_on"] == {
        "flexsf-setup": {"condition": "service_completed_successfully"}
    }


def test_docker_lets_the_worker_drain_before_killing_it(compose) -> None:
    grace = compose_duration(compose["services"]["worker"]["stop_grace_period"])
    # Past the drain, the worker still has to cancel what is left and close its client.
    assert grace >= worker.GRACEFUL_SHUTDOWN + timedelta(seconds=5), (grace, worker.GRACEFUL_SHUTDOWN)


def test_every_long_running_service_has_a_healthcheck(compose) -> None:
    services = compose["services"]
    one_shot = {
        name
        for spec in services.values()
        for name, dep in (spec.get("depends_on") or {}).items()
        if dep["condition"] == "service_completed_successfully"
    }
    assert one_shot == {"temporal-admin-tools", "temporal-create-namespace", "flexsf-setup"}
    for name in set(services) - one_shot:
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    for name in one_shot:
        assert "healthcheck" not in services[name], f"{name} runs once; compose waits for it to exit"


def test_the_worker_healthcheck_asks_the_metrics_endpoint_the_worker_serves(compose) -> None:
    spec = compose["services"]["worker"]
    address = spec["environment"]["FLEXSF_WORKER_METRICS_ADDRESS"]
    port = address.rpartition(":")[2]
    probe = " ".join(spec["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/metrics" in probe
    assert "temporal_num_pollers" in probe, "healthy only once it polls, not as soon as the endpoint is up"


def test_the_temporal_ui_decodes_payloads_through_the_gateways_codec_when_configured(compose) -> None:
    ui = compose["services"]["temporal-ui"]["environment"]
    assert ui["TEMPORAL_ADDRESS"] == "temporal:7233"
    # Empty (no codec) unless .env names one: without encryption keys the gateway serves no /codec.
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == "${FLEXSF_UI_CODEC_ENDPOINT:-}"
    examples = {name: (value, comment) for name, value, comment in env_example()}
    endpoint, comment = examples["FLEXSF_UI_CODEC_ENDPOINT"]
    assert comment, "FLEXSF_UI_CODEC_ENDPOINT needs its one-line comment in .env.example"
    url = urlsplit(endpoint)
    assert url.path == CODEC_PREFIX
    published = [p.split(":")[-2] for p in compose["services"]["gateway"]["ports"]]
    assert str(url.port) in published, "the browser reaches the gateway on its published port"


def test_the_dockerfile_runs_as_a_user_and_defaults_to_the_worker() -> None:
    instructions = dockerfile_instructions()
    users = [args[0] for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("CMD", ['["flexsf",', '"worker"]']) in instructions


def test_the_dockerfile_installs_the_locked_dependencies_before_it_copies_the_sources() -> None:
    instructions = dockerfile_instructions()
    lock_install = next(
        i
        for i, (keyword, args) in enumerate(instructions)
        if keyword == "RUN" and "-r" in args and args[args.index("-r") + 1] == "requirements/runtime.txt"
    )
    assert "--require-hashes" in instructions[lock_install][1]
    copied_before = [args for keyword, args in instructions[:lock_install] if keyword == "COPY"]
    assert copied_before == [["requirements/runtime.txt", "requirements/runtime.txt"]], copied_before
    project_install = next(
        i for i, (keyword, args) in enumerate(instructions) if keyword == "RUN" and "." in args and "install" in args
    )
    assert "--no-deps" in instructions[project_install][1], "the dependencies come from the lock only"
    assert lock_install < project_install


def test_the_image_gets_the_production_sources_and_nothing_else() -> None:
    sources = copied_sources()
    assert set(sources) == PRODUCTION_SOURCES, set(sources) ^ PRODUCTION_SOURCES
    assert not {"sandboxes", "devtools", "tests", "."} & set(sources)


def test_dockerignore_lets_only_the_production_sources_into_the_build_context() -> None:
    files = checkout_files()
    assert any(f.startswith("sandboxes/") for f in files) and any(f.startswith("tests/") for f in files)
    leaked = sorted(f for f in files if in_build_context(f) and not is_production(f))
    missing = sorted(f for f in files if is_production(f) and not in_build_context(f) and "__pycache__" not in f)
    assert not leaked, f"in the build context but not production: {leaked[:20]}"
    assert not missing, f"production files kept out of the build context: {missing[:20]}"
    # What the checkout may hold without tracking it.
    for path in (".env", ".venv/bin/python", ".flexsf/dev.json", "flexsf/__pycache__/codec.cpython-311.pyc"):
        assert not in_build_context(path), path


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
