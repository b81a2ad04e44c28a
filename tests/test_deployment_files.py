"""The deployment files agree with the code: compose layout, each service's own variables, what is published and how,
the Caddyfile, every setting documented, the image's commands exist."""

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
from gateway.codec_server import PREFIX as CODEC_PREFIX

ROOT = Path(__file__).resolve().parent.parent
FLEXSF = Path(sys.executable).parent / "flexsf"
TEMPORAL_SETTINGS = ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS")
_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
PRODUCT_SERVICES = ("flexsf-setup", "worker", "gateway", "codec-server")
SEARCH_ATTRIBUTES_COMMAND = "flexsf search-attributes --create"
KEY_FILE_COMMAND = 'python -m flexsf.codec create-key-file "$$FLEXSF_ENCRYPTION_KEYS_FILE"'
KEYS_DIR = "/var/lib/flexsf/keys"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
# .env.example variables no compose service is given, and why.
NOT_FOR_COMPOSE = {"FLEXSF_ENCRYPTION_KEYS": "compose reads the keys from the setup's key file"}
_INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}")
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


def service_env(spec: dict) -> dict[str, str | None]:
    """A service's `environment` as a mapping (None: the value comes from .env or the shell, else it is unset)."""
    env = spec.get("environment") or {}
    if isinstance(env, list):
        return {k: v for k, _, v in (item.partition("=") for item in env)}
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def interpolate(value: str, available: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}` against `available` (.env), `$$` as `$`."""

    def one(match: re.Match) -> str:
        name, kind, rest = match[1], match[2], match[3]
        found = available.get(name)
        if kind == ":?":
            assert found, f"compose refuses to start without {name}: {rest}"
        if kind == ":-" and not found:
            return rest
        return found or ""

    return _INTERPOLATION.sub(one, value).replace("$$", "$")


def compose_environment(spec: dict, available: dict[str, str]) -> dict[str, str]:
    """What a container of this service gets, with `available` as .env: pass-through names only when set."""
    env = {}
    for name, value in service_env(spec).items():
        if value is None:
            if name in available:
                env[name] = available[name]
        else:
            env[name] = interpolate(value, available)
    return env


def known_variables() -> set[str]:
    """Every variable a flexsf process reads: the settings' and Temporal's own connection variables."""
    return setting_names() | set(TEMPORAL_SETTINGS)


def test_compose_has_postgres_temporal_with_schema_setup_ui_worker_and_gateway(compose) -> None:
    services = compose["services"]
    expected = {"postgresql", "temporal-admin-tools", "temporal", "temporal-ui", "caddy", "check-postgres-password"}
    assert {*expected, *PRODUCT_SERVICES} <= set(services)
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
        ("flexsf-setup", ["sh", "-c"]),
        ("worker", ["flexsf", "worker"]),
        ("gateway", ["flexsf", "gateway", "--host", "0.0.0.0"]),
        ("codec-server", ["flexsf", "codec-server", "--host", "0.0.0.0"]),
    ],
)
def test_the_products_services_are_the_one_image_each_given_only_its_own_variables(compose, service, command) -> None:
    spec = compose["services"][service]
    assert spec["build"] == "."
    assert "env_file" not in spec, "no service gets .env whole"
    assert spec["command"][: len(command)] == command
    env = service_env(spec)
    unknown = set(env) - known_variables()
    assert not unknown, f"{service} is given variables no flexsf process reads: {sorted(unknown)}"
    if service != "codec-server":
        # Compose's own TEMPORAL_ADDRESS default reaches the server in the compose network; .env (Temporal Cloud) wins.
        assert env["TEMPORAL_ADDRESS"] == "${TEMPORAL_ADDRESS:-temporal:7233}"
    # Payloads encrypted by default, with the keys from the setup's file.
    assert env["FLEXSF_ENCRYPTION_KEYS_FILE"].startswith(KEYS_DIR + "/")
    assert "FLEXSF_ENCRYPTION_KEYS" not in env


def test_the_gateway_gets_no_salesforce_secret_no_database_password_and_the_codec_server_only_its_own(compose) -> None:
    services = compose["services"]
    gateway = service_env(services["gateway"])
    assert not [name for name in gateway if name.startswith(("SALESFORCE_", "POSTGRES", "SQL_"))], sorted(gateway)
    assert "FLEXSF_CODEC_TOKEN" not in gateway
    # What it does use: Twilio's signature and token checks, Temporal, its public URL (required: signatures cover it).
    assert {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WORKSPACE_SID", "TEMPORAL_NAMESPACE"} <= set(gateway)
    assert gateway["FLEXSF_PUBLIC_BASE_URL"].startswith("${FLEXSF_PUBLIC_BASE_URL:?")
    codec = service_env(services["codec-server"])
    assert set(codec) == {
        "FLEXSF_LOG_LEVEL",
        "FLEXSF_ENCRYPTION_KEYS_FILE",
        "FLEXSF_CODEC_TOKEN",
        "FLEXSF_CODEC_CORS_ORIGINS",
    }
    assert codec["FLEXSF_CODEC_TOKEN"].startswith("${FLEXSF_CODEC_TOKEN:?"), "the codec server needs its token"
    setup = service_env(services["flexsf-setup"])
    assert set(setup) <= {*TEMPORAL_SETTINGS, "FLEXSF_LOG_LEVEL", "FLEXSF_ENCRYPTION_KEYS_FILE"}
    worker = service_env(services["worker"])
    assert "FLEXSF_CODEC_TOKEN" not in worker and not [name for name in worker if name.startswith("POSTGRES")]
    # The database password goes to the database and Temporal's own services only.
    holders = {name for name, spec in services.items() if "POSTGRES_PASSWORD" in str(spec.get("environment", ""))}
    assert holders == {"check-postgres-password", "postgresql", "temporal-admin-tools", "temporal"}, holders


def test_every_variable_of_the_env_example_reaches_a_service_or_is_knowingly_left_out(compose) -> None:
    given = {name for spec in compose["services"].values() for name in service_env(spec)}
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    documented = {name for name, _, _ in env_example()}
    forgotten = documented - given - interpolated - set(NOT_FOR_COMPOSE)
    assert not forgotten, f"in .env.example but given to no compose service: {sorted(forgotten)}"
    assert not set(NOT_FOR_COMPOSE) & given


def test_only_caddy_publishes_and_everything_else_stays_on_loopback(compose) -> None:
    services = compose["services"]
    published = {name: spec.get("ports", []) for name, spec in services.items() if spec.get("ports")}
    assert set(published) == {"caddy", "temporal"}, published
    assert published["temporal"] == ["127.0.0.1:7233:7233"]
    public = [p for p in published["caddy"] if not p.startswith("127.0.0.1:")]
    assert sorted(public) == ["443:443", "443:443/udp", "80:80"], public
    assert "127.0.0.1:8080:8080" in published["caddy"], "the Temporal UI on the host's loopback only"
    # The gateway's metrics are a listener of their own, on the compose network only.
    gateway = service_env(services["gateway"])
    assert gateway["FLEXSF_GATEWAY_METRICS_ADDRESS"].endswith(":9465")
    assert "FLEXSF_GATEWAY_DOCS" in gateway and gateway["FLEXSF_GATEWAY_DOCS"] is None, "off unless .env says so"


def caddy_sites() -> dict[str, str]:
    """Site address → its block, of deploy/Caddyfile (comments dropped)."""
    text = "\n".join(line for line in CADDYFILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    sites, depth, address, body = {}, 0, None, []
    for line in text.splitlines():
        stripped = line.strip()
        if depth == 0 and stripped.endswith("{"):
            address, body = stripped[:-1].strip(), []
        elif depth > 0:
            body.append(stripped)
        depth += line.count("{") - line.count("}")
        if depth == 0 and address is not None:
            sites[address] = "\n".join(body)
            address = None
    return sites


def test_caddy_terminates_tls_for_the_public_url_and_forwards_only_the_gateways_public_routes(compose) -> None:
    caddy = compose["services"]["caddy"]
    assert caddy["image"] == "caddy:2"
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    env = service_env(caddy)
    assert env["FLEXSF_PUBLIC_BASE_URL"].startswith("${FLEXSF_PUBLIC_BASE_URL:?")
    sites = caddy_sites()
    # The site is the gateway's public URL: Caddy's automatic HTTPS obtains its certificate and redirects HTTP.
    public = sites["{$FLEXSF_PUBLIC_BASE_URL}"]
    assert "reverse_proxy gateway:8000" in public
    [matcher] = [line for line in public.splitlines() if line.startswith("@gateway path")]
    routes = matcher.split()[2:]
    # Twilio's two webhooks (TaskRouter's callbacks, Agent Copilot's wrap-up notes), the agent API and the probe.
    assert set(routes) == {"/taskrouter/*", "/copilot/*", "/agent/*", "/healthz"}
    assert "respond 404" in public, "anything else stops at Caddy"
    for hidden in ("/docs", "/openapi.json", "/metrics", "/codec"):
        assert not any(route.startswith(hidden) for route in routes), hidden
    assert "request_body" in public and "max_size" in public


def test_the_temporal_ui_decodes_through_the_authenticated_codec_server(compose) -> None:
    services = compose["services"]
    ui = service_env(services["temporal-ui"])
    assert ui["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert "ports" not in services["temporal-ui"], "reached through Caddy on the host's loopback only"
    # The browser calls /codec on the UI's own origin (Caddy on 127.0.0.1:8080), unless .env names another endpoint.
    endpoint = interpolate(ui["TEMPORAL_CODEC_ENDPOINT"], {})
    url = urlsplit(endpoint)
    assert url.path == CODEC_PREFIX and url.hostname == "localhost" and url.port == 8080
    examples = {name: (value, comment) for name, value, comment in env_example()}
    assert examples["FLEXSF_UI_CODEC_ENDPOINT"][1], "FLEXSF_UI_CODEC_ENDPOINT needs its one-line comment"
    # Caddy forwards /codec to the codec server with the token, so the token never reaches a browser.
    ui_site = caddy_sites()[":8080"]
    codec = services["codec-server"]
    port = codec["command"][codec["command"].index("--port") + 1]
    assert f"handle {CODEC_PREFIX}/*" in ui_site
    assert f"reverse_proxy codec-server:{port}" in ui_site
    assert 'header_up Authorization "Bearer {$FLEXSF_CODEC_TOKEN}"' in ui_site
    assert "reverse_proxy temporal-ui:8080" in ui_site
    assert service_env(services["caddy"])["FLEXSF_CODEC_TOKEN"].startswith("${FLEXSF_CODEC_TOKEN")
    # The codec server answers the UI's origins (both spellings of loopback) by default.
    origins = interpolate(service_env(codec)["FLEXSF_CODEC_CORS_ORIGINS"], {}).split(",")
    assert {f"{url.scheme}://localhost:8080", f"{url.scheme}://127.0.0.1:8080"} <= set(origins)


def test_caddy_is_the_gateways_only_trusted_proxy_and_alone_with_what_it_forwards_to(compose) -> None:
    services = compose["services"]
    caddy_address = services["caddy"]["networks"]["edge"]["ipv4_address"]
    assert service_env(services["gateway"])["FLEXSF_TRUSTED_PROXIES"] == caddy_address
    [subnet] = [c["subnet"] for c in compose["networks"]["edge"]["ipam"]["config"]]
    import ipaddress

    assert ipaddress.ip_address(caddy_address) in ipaddress.ip_network(subnet)
    assert set(services["caddy"]["networks"]) == {"edge"}
    on_edge = {name for name, spec in services.items() if "edge" in (spec.get("networks") or [])}
    assert on_edge == {"caddy", "gateway", "codec-server", "temporal-ui"}, on_edge


def test_the_key_file_is_written_by_the_setup_alone_and_read_only_for_the_rest(compose) -> None:
    services = compose["services"]
    assert f"flexsf-keys:{KEYS_DIR}" in services["flexsf-setup"]["volumes"]
    for name in ("worker", "gateway", "codec-server"):
        assert f"flexsf-keys:{KEYS_DIR}:ro" in services[name]["volumes"], name
    assert "flexsf-keys" in compose["volumes"]
    # The image makes the mount point its user's, so a fresh named volume is writable by it and by nobody else.
    runs = " ".join(" ".join(args) for keyword, args in dockerfile_instructions() if keyword == "RUN")
    user = [args[0] for keyword, args in dockerfile_instructions() if keyword == "USER"][-1]
    assert f"mkdir -p {KEYS_DIR}" in runs and f"chown {user} {KEYS_DIR}" in runs and f"chmod 700 {KEYS_DIR}" in runs


def postgres_password_check(compose) -> tuple[dict, str]:
    spec = compose["services"]["check-postgres-password"]
    assert spec["entrypoint"] == ["/bin/sh", "-c"]
    return spec, spec["command"][0].replace("$$", "$")


def test_compose_refuses_to_start_with_the_example_database_password(compose) -> None:
    services = compose["services"]
    spec, script = postgres_password_check(compose)
    assert services["postgresql"]["depends_on"]["check-postgres-password"] == {
        "condition": "service_completed_successfully"
    }
    assert spec["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    example = {name: value for name, value, _ in env_example()}["POSTGRES_PASSWORD"]
    # The check, run as the container runs it: the example value fails, any other passes.
    refused = subprocess.run(
        ["/bin/sh", "-c", script], env={"POSTGRES_PASSWORD": example}, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
    accepted = subprocess.run(
        ["/bin/sh", "-c", script], env={"POSTGRES_PASSWORD": "a-long-random-one-4f9c"}, capture_output=True, text=True
    )
    assert accepted.returncode == 0, accepted.stderr


def test_every_image_is_pinned_and_the_products_carries_the_package_version(compose) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, spec in compose["services"].items():
        image, _, tag = spec["image"].rpartition(":")
        assert image and tag and tag != "latest" and "/" not in tag, f"{name}: {spec['image']!r} is not pinned"
    assert {compose["services"][s]["image"] for s in PRODUCT_SERVICES} == {f"flexsf:{version}"}
    base = [args[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"python:3\.11-slim-\w+", base[0]), base


def test_the_setup_creates_the_key_file_then_registers_the_search_attributes_once_the_namespace_exists(
    compose,
) -> None:
    services = compose["services"]
    setup = services["flexsf-setup"]
    assert setup["command"][:2] == ["sh", "-c"]
    script = setup["command"][2]
    assert script == f"{KEY_FILE_COMMAND} && exec {SEARCH_ATTRIBUTES_COMMAND}"
    assert setup["depends_on"] == {"temporal-create-namespace": {"condition": "service_completed_successfully"}}
    assert services["temporal-create-namespace"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert "namespace create" in str(services["temporal-create-namespace"]["command"])
    assert setup.get("restart", "no") == "no", "a one-shot step: `restart` would keep its dependents waiting"


@pytest.mark.parametrize("service", ["worker", "gateway", "codec-server"])
def test_worker_gateway_and_codec_server_start_only_after_the_setup_succeeded(compose, service) -> None:
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
    assert one_shot == {"check-postgres-password", "temporal-admin-tools", "temporal-create-namespace", "flexsf-setup"}
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


@pytest.mark.parametrize(
    "command, expected", [(["worker"], "worker"), (["gateway"], "--host"), (["codec-server"], "FLEXSF_CODEC_TOKEN")]
)
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
