"""Write docs/configuration.md from the `Settings` model: `python -m devtools.config_docs [--check]`.

Every environment variable `Settings` reads (nested models as `NAME__FIELD`), with its type, default and description:
the field's `description`, else the comment line above it in `.env.example`. Secrets' defaults are never printed.
Temporal's own connection variables are read by Temporal's envconfig, not `Settings`; they are listed here by hand.
`--check` exits 1 when the file on disk differs from what would be written.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from flexsf.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"
ENV_EXAMPLE = ROOT / ".env.example"
_ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")

TEMPORAL = "Temporal"  # the group that also lists Temporal's own variables (TEMPORAL_ENVCONFIG)
# (group title, one-line introduction, names or name prefixes of `Settings` fields); the first match wins.
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        TEMPORAL,
        "The connection is Temporal's own environment configuration, read by the SDK's envconfig as the Temporal CLI "
        "reads it (worker, gateway and the `flexsf` operator commands alike); then the task queue and how the worker "
        "polls it.",
        ("flexsf_task_queue", "flexsf_temporal_ui_url", "flexsf_worker_tuning"),
    ),
    (
        "Salesforce",
        "The connected app and its integration user: JWT bearer when username and key are set, else client "
        "credentials, else username-password.",
        ("salesforce_",),
    ),
    ("Twilio", "The account (auth token or API key pair) and the Flex instance's TaskRouter workspace.", ("twilio_",)),
    (
        "Flex feature flags",
        "Flex's `ui_attributes.custom_data.features.salesforce_integration`, read through the Flex Configuration API "
        "and cached per worker; an override set here wins, unset follows Flex.",
        ("flexsf_features", "flexsf_flex_config_ttl_s"),
    ),
    (
        "Screen pop",
        'The "softphone layout": where and how the caller is searched.',
        ("flexsf_search_", "flexsf_person_accounts", "flexsf_default_region"),
    ),
    (
        "Activity log",
        "How the one Salesforce Task of a Flex task is written.",
        ("flexsf_activity_", "flexsf_owner_mapping", "flexsf_notes_precedence", "flexsf_log_unhandled_tasks"),
    ),
    (
        "Workflow timers",
        "Every wait of the task workflow has a timer (see [how a task moves](how-a-task-moves.md)); a task keeps "
        "the values it started with.",
        (
            "flexsf_selection_timeout_s",
            "flexsf_notes_grace_s",
            "flexsf_lost_event_window_s",
            "flexsf_repair_window_s",
            "flexsf_history_events_limit",
        ),
    ),
    (
        "Recovery and API budget",
        "The sweep that recovers tasks whose callbacks were all lost, and the share of the org's daily API limit "
        "past which activity logs wait (see [operating](operating.md)).",
        ("flexsf_sweep_", "flexsf_salesforce_api_budget_share", "flexsf_api_budget_retry_s"),
    ),
    (
        "Gateway",
        "The TaskRouter callback and the agent API (see [the gateway](gateway.md)).",
        (
            "flexsf_public_base_url",
            "flexsf_cors_origins",
            "flexsf_token_",
            "flexsf_auth_",
            "flexsf_trusted_proxies",
            "flexsf_callback_max_age_s",
            "flexsf_gateway_docs",
            "flexsf_dial_",
        ),
    ),
    (
        "Observability",
        "Metrics and logs (see [operating](operating.md)).",
        ("flexsf_worker_metrics_address", "flexsf_gateway_metrics_address", "flexsf_log_level"),
    ),
    (
        "Payload encryption",
        "Encrypts task attributes and notes in Temporal's history; every worker, gateway and CLI needs the same keys. "
        "`flexsf codec-server` decrypts for the Temporal UI and CLI, for callers with its token only.",
        ("flexsf_encryption_keys", "flexsf_encryption_keys_file", "flexsf_codec_"),
    ),
)
OTHER = ("Other", "Settings not yet placed in a group by `devtools/config_docs.py`.")
COMPOSE_ONLY = (
    "Docker Compose only",
    "In `.env.example` for `docker-compose.yml` itself; neither flexsf nor Temporal's SDK reads them.",
)

# Read by `temporalio.envconfig` (flexsf.temporal_client.connect), after an optional TOML profile file.
TEMPORAL_ENVCONFIG: tuple[tuple[str, str, str], ...] = (
    ("TEMPORAL_ADDRESS", "`localhost:7233`", "Frontend host:port; Temporal Cloud: `<ns>.<account>.tmprl.cloud:7233`."),
    ("TEMPORAL_NAMESPACE", "`default`", "Namespace the task workflows run in."),
    ("TEMPORAL_API_KEY", "unset", "Temporal Cloud API key; implies TLS."),
    ("TEMPORAL_TLS", "unset", "`true` to connect over TLS (implied by an API key or client certificate)."),
    ("TEMPORAL_TLS_CLIENT_CERT_PATH", "unset", "Client certificate (PEM) for mTLS; `…_DATA` gives it inline."),
    ("TEMPORAL_TLS_CLIENT_KEY_PATH", "unset", "Its private key (PEM); `…_DATA` gives it inline."),
    ("TEMPORAL_TLS_SERVER_CA_CERT_PATH", "unset", "CA to trust for the server; `…_DATA` gives it inline."),
    ("TEMPORAL_TLS_SERVER_NAME", "unset", "Server name to verify, when it differs from the address's host."),
    ("TEMPORAL_GRPC_META_<NAME>", "unset", "Extra gRPC header `<name>` on every call."),
    ("TEMPORAL_CONFIG_FILE", "unset", "TOML file of connection profiles (Temporal CLI's format); variables win."),
    ("TEMPORAL_PROFILE", "`default`", "Which profile of that file to use."),
)

_BOUNDS = {Ge: ("≥", "ge"), Gt: (">", "gt"), Le: ("≤", "le"), Lt: ("<", "lt")}
_TYPE_NAMES = {str: "text", int: "integer", float: "number", bool: "true/false", Path: "file path", SecretStr: "secret"}


def env_comments(path: Path = ENV_EXAMPLE) -> dict[str, str | None]:
    """NAME → the comment line just above its `NAME=` or `# NAME=` line in `.env.example` (without the `#`), in the
    file's order; None when the line above is not a comment."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    found = {}
    for i, line in enumerate(lines):
        if match := _ENV_LINE.match(line.strip()):
            above = lines[i - 1].strip() if i else ""
            comment = above.startswith("#") and not _ENV_LINE.match(above)
            found[match[2]] = above.lstrip("#").strip() if comment else None
    return found


def _bare(annotation: Any) -> Any:
    """`X | None` → X."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _is_secret(field: FieldInfo) -> bool:
    return _bare(field.annotation) is SecretStr


def type_text(field: FieldInfo) -> str:
    annotation = _bare(field.annotation)
    if get_origin(annotation) is Literal:
        text = "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    elif get_origin(annotation) is list:
        text = "comma-separated list"
    else:
        text = _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
    for rule in field.metadata:
        for kind, (sign, attribute) in _BOUNDS.items():
            if isinstance(rule, kind):
                text += f", {sign} {getattr(rule, attribute):g}"
    return text


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if value >= size and value % size == 0:
            return f" ({value // size:g} {unit})"
    return ""


def default_text(name: str, field: FieldInfo) -> str:
    if _is_secret(field) or field.default is None or field.is_required():
        return "unset"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float | int):
        return f"`{value:g}`" + (_seconds(value) if name.endswith("_S") else "")
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`" if value else "empty"
    return f"`{value}`"


def variables() -> list[tuple[str, str, FieldInfo]]:
    """(field name, ENV_NAME, field) for every variable `Settings` reads, in declaration order."""
    found = []
    for name, field in Settings.model_fields.items():
        nested = field.annotation if isinstance(field.annotation, type) else None
        if nested is not None and issubclass(nested, BaseModel):
            found += [(name, f"{name}__{sub}".upper(), info) for sub, info in nested.model_fields.items()]
        else:
            found.append((name, name.upper(), field))
    return found


def _group_of(name: str) -> tuple[str, str]:
    for title, intro, prefixes in GROUPS:
        if name in prefixes or any(p.endswith("_") and name.startswith(p) for p in prefixes):
            return title, intro
    return OTHER


def _cell(text: str) -> str:
    """A table cell: `|` escaped everywhere, `*` outside code spans (a `*.twilio.com` must not start emphasis)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else part.replace("*", "\\*") for i, part in enumerate(parts))


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{env}` | {_cell(kind)} | {_cell(default)} | {_cell(text)} |" for env, kind, default, text in rows]
    return lines


def render(env_example: Path = ENV_EXAMPLE) -> str:
    comments = env_comments(env_example)
    groups: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {(title, intro): [] for title, intro, _ in GROUPS}
    for name, env, field in variables():
        meaning = field.description or comments.get(env) or "(not documented in `.env.example`)"
        row = (env, type_text(field), default_text(env, field), meaning)
        groups.setdefault(_group_of(name), []).append(row)

    out = [
        "# Configuration",
        "",
        "<!-- Generated by `python -m devtools.config_docs` from flexsf/settings.py and .env.example; do not edit. -->",
        "",
        "Every setting is an environment variable, or a line of a `.env` file in the working directory (names are",
        "case-insensitive; the environment wins over `.env`). `flexsf worker` and `flexsf gateway` validate them all",
        "at start and exit with one line per bad setting, never printing a secret. Copy `.env.example` to `.env` to",
        "start; it carries the same comments. Secrets (type *secret*) refuse placeholders such as `changeme`.",
    ]
    for (title, intro), rows in groups.items():
        if not rows:
            continue
        out += ["", f"## {title}", "", intro, ""]
        if title == TEMPORAL:
            out += ["| variable | default | meaning |", "|---|---|---|"]
            out += [f"| `{env}` | {default} | {_cell(text)} |" for env, default, text in TEMPORAL_ENVCONFIG]
            out += ["", "flexsf's own:", ""]
        out += _table(rows)
    read = {env for _, env, _ in variables()}
    compose_only = [
        (env, text) for env, text in comments.items() if env not in read and not env.startswith("TEMPORAL_")
    ]
    if compose_only:
        out += ["", f"## {COMPOSE_ONLY[0]}", "", COMPOSE_ONLY[1], "", "| variable | meaning |", "|---|---|"]
        out += [f"| `{env}` | {_cell(text or '')} |" for env, text in compose_only]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.config_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs instead of writing it")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: docs/configuration.md")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else None
        if current != text:
            shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
            print(f"{shown} is out of date: run python -m devtools.config_docs", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
