"""Logging for `flexsf worker`, `flexsf gateway` and `flexsf dev`.

- JSON lines on stderr when it is not a terminal (a container, a log shipper), readable lines on a terminal.
- Every line carries `task_sid` and `workflow_id` when known: set per request by the gateway (`bind_task`), read from
  `activity.info()` inside an activity, or from the `temporal_workflow` / `temporal_activity` details Temporal's own
  loggers attach.
- Secrets are masked: the configured secret values themselves, and anything shaped like one (Authorization headers,
  bearer tokens, JWTs, Salesforce session ids, `password=…` / `"client_secret": "…"` pairs, bare 32-hex tokens).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from temporalio import activity

from flexsf.vocabulary import WORKFLOW_ID_PREFIX, task_sid_of, workflow_id

MASK = "[REDACTED]"

_task_sid: contextvars.ContextVar[str | None] = contextvars.ContextVar("flexsf_task_sid", default=None)

_SECRET_KEYS = (
    r"(?:access[_-]?token|refresh[_-]?token|auth[_-]?token|id[_-]?token|token|client[_-]?secret|"
    r"api[_-]?secret|secret|password|passwd|api[_-]?key|apikey|assertion|session[_-]?id|sessionid|"
    r"signature|encryption[_-]?keys?)"
)
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Authorization: Bearer abc / 'Authorization': 'Basic abc' / authorization=...
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(?:bearer|basic|token)\s+)?[^\s'\",;}]+"), r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=!-]+"), r"\1" + MASK),
    # "client_secret": "x" / client_secret=x / password: x / X-Twilio-Signature: x. The name's prefix is bounded:
    # an unbounded `[\w-]*` backtracks over every start in a long run of word characters (a caller's name), which
    # took seconds per line; 40 keeps the scan linear and still reaches any real parameter name.
    (
        re.compile(r"(?i)([\"']?[\w-]{0,40}" + _SECRET_KEYS + r"[\"']?\s*[:=]\s*)(?:\"[^\"]*\"|'[^']*'|[^\s,;&}\]]+)"),
        r"\1" + MASK,
    ),
    # JWTs (Flex tokens, Salesforce JWT assertions).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    # Salesforce session ids / access tokens: 00D<org id>!<token>.
    (re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._-]+"), MASK),
    # A bare 32-hex string is a Twilio auth token's shape (sids are prefixed, WT…/AC…, so they stay readable).
    (re.compile(r"(?<![A-Za-z0-9])[0-9a-f]{32}(?![A-Za-z0-9])"), MASK),
]
_known_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Mask these exact values wherever they appear (the configured tokens and secrets); short ones are skipped."""
    _known_secrets.update(v for v in values if v and len(v) >= 6)


def settings_secrets(settings: Any) -> list[str]:
    names = (
        "salesforce_client_secret",
        "salesforce_password",
        "twilio_auth_token",
        "twilio_api_secret",
        "flexsf_encryption_keys",
    )
    values = []
    for name in names:
        secret = getattr(settings, name, None)
        if secret is not None:
            values.append(secret.get_secret_value())
    return values


def redact(text: str) -> str:
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def bind_task(task_sid: str | None) -> Iterator[None]:
    """Lines logged inside carry this task's sid and workflow id (the gateway, per request)."""
    token = _task_sid.set(task_sid)
    try:
        yield
    finally:
        _task_sid.reset(token)


def set_task(task_sid: str | None) -> None:
    """Like `bind_task` for the rest of the current context (an asyncio task, e.g. one request)."""
    _task_sid.set(task_sid)


class TaskContextFilter(logging.Filter):
    """Adds `task_sid` and `workflow_id` (None when unknown) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        wid = None
        task_sid = _task_sid.get()
        if task_sid:
            wid = workflow_id(task_sid)
        else:
            details = getattr(record, "temporal_activity", None) or getattr(record, "temporal_workflow", None)
            if isinstance(details, dict):
                wid = details.get("workflow_id")
            elif activity.in_activity():
                wid = activity.info().workflow_id
            if wid and wid.startswith(WORKFLOW_ID_PREFIX):
                task_sid = task_sid_of(wid)
        record.task_sid = task_sid
        record.workflow_id = wid
        return True


class RedactingFilter(logging.Filter):
    """Masks secrets in the message (and its arguments) and in a traceback, before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: log what we have, still masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "task_sid": getattr(record, "task_sid", None),
            "workflow_id": getattr(record, "workflow_id", None),
        }
        if record.exc_info or record.exc_text:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = record.stack_info
        return redact(json.dumps(line, default=str))


class HumanFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(task)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        sid = getattr(record, "task_sid", None)
        record.task = f" [{sid}]" if sid else ""
        return redact(super().format(record))


def make_handler(stream: IO[str] | None = None, json_lines: bool | None = None) -> logging.Handler:
    """A handler with the context and redaction filters; JSON unless `stream` is a terminal (or as told)."""
    stream = stream if stream is not None else sys.stderr
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else HumanFormatter())
    handler.addFilter(TaskContextFilter())
    handler.addFilter(RedactingFilter())
    handler.set_name("flexsf")
    return handler


def setup_logging(
    settings: Any = None,
    *,
    level: str | int | None = None,
    stream: IO[str] | None = None,
    json_lines: bool | None = None,
) -> logging.Handler:
    """Route every logger (ours, uvicorn's, Temporal's, the SDKs') through one flexsf handler on the root logger."""
    if settings is not None:
        register_secrets(settings_secrets(settings))
        level = level or settings.flexsf_log_level
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "flexsf"]:
        root.removeHandler(old)
    handler = make_handler(stream, json_lines)
    root.addHandler(handler)
    root.setLevel(str(level or "INFO").upper() if isinstance(level, str) or level is None else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers would print a second, unredacted copy: let its records reach ours.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    return handler
