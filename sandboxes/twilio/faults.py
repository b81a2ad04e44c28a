"""Faults the sandbox injects on request: slow or failing REST calls, stale ETags, misbehaving callbacks.

All knobs live in one flat `FaultConfig` so the HTTP control API and the Python API set them the same way
(`sandbox.faults.update(rate_limit_fraction=0.5)` == `POST /__sandbox__/faults {"rate_limit_fraction": 0.5}`).
Fractions are drawn from one seeded RNG so a run can be repeated.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

ReorderMode = Literal["none", "swap_pairs", "shuffle"]
HeaderCase = Literal["canonical", "lower"]
TokenInvalidBody = Literal["validation", "error"]


@dataclass
class FaultConfig:
    # --- REST (Twilio API paths only, never /__sandbox__) ---
    latency_s: float = 0.0
    rate_limit_fraction: float = 0.0  # -> 429, code 20429
    server_error_fraction: float = 0.0  # -> server_error_status, code 20500
    server_error_status: int = 503
    fail_next: list[int] = field(default_factory=list)  # exact statuses for the next matching REST calls
    endpoints: list[str] | None = None  # counter names the REST faults apply to; None = every endpoint
    # A "412 storm": before an attribute write is applied, another writer modifies the task, so an If-Match is stale.
    conflict_fraction: float = 0.0
    conflict_next: int = 0
    # A restricted API key: these endpoints (counter names) answer every call 401 (code 20003) or 403 (code 20403).
    # twilio.com/docs/api/errors/20003 ("not valid for the resource you are trying to access"), .../errors/403
    # ("a Restricted API key that does not include permission for the resource").
    refused_endpoints: dict[str, int] = field(default_factory=dict)

    # --- response headers ---
    # "lower": names as HTTP/2 carries them (RFC 9113 §8.2.2: field names MUST be lowercase), which twilio-python 9.x
    # passes on as `dict(response.headers)` in the server's spelling (twilio/base/version.py, fetch_with_response_info).
    response_header_case: HeaderCase = "canonical"
    # A task fetch answered without an ETag (a front end that strips it): a client must not write blind.
    task_fetch_without_etag: bool = False

    # --- Flex token validation (IAM `Tokens/validate`) ---
    # twilio-flex-token-validator reads only the body's `valid`, never the status, and stubs an invalid token as
    # HTTP 200 (src/index.ts, src/index.test.ts); whether IAM ever answers 4xx is unverified, so that is a mode.
    token_invalid_status: int = 200
    # With a 4xx status: "validation" keeps the validate body (`valid: false`, `code`, `message`); "error" sends
    # Twilio's classic error body instead ({"code": 20101|20104, "message", "more_info", "status"}, no `valid`).
    token_invalid_body: TokenInvalidBody = "validation"

    # --- event callbacks ---
    callback_drop_fraction: float = 0.0
    callback_drop_event_types: list[str] = field(default_factory=list)
    # A task whose every callback is lost (the receiver was down for a whole short call): this share of the tasks
    # created while it is set, spread evenly from a seeded offset (so 1 in 20 for 0.05, the first within the first 20),
    # loses every callback for its whole life. Its events are still recorded (the Events list shows them); which tasks
    # were chosen: `TwilioSandbox.tasks_without_callbacks()` / `GET /__sandbox__/tasks-without-callbacks`.
    callback_drop_task_fraction: float = 0.0
    callback_duplicate_fraction: float = 0.0
    callback_duplicate_event_types: list[str] = field(default_factory=list)
    callback_reorder: ReorderMode = "none"
    callback_reorder_window: int = 4  # for "shuffle"
    callback_reorder_flush_s: float = 0.25  # a partly filled reorder window is released after this long
    callback_delay_s: float = 0.0
    callback_attempts: int = 1  # TaskRouter documents no retry; >1 retries non-2xx and timeouts
    callback_backoff_s: float = 0.05  # doubled per retry
    callback_timeout_s: float = 15.0  # TaskRouter's answer deadline
    # Parameters left out of every callback (and of its signature). Twilio's documented callback parameters have no
    # `Sid` or `TimestampMs` (twilio.com/docs/taskrouter/api/event/reference), so ["Sid", "TimestampMs"] is a
    # workspace that sends only what the docs promise.
    callback_omit_params: list[str] = field(default_factory=list)


FAULT_FIELDS = frozenset(f.name for f in dataclasses.fields(FaultConfig))


class Faults:
    """Thread-safe holder of the current `FaultConfig` plus the random draws made from it."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._seed = seed
        self._rng = random.Random(seed)
        self._forget_chosen_tasks()

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            c = self._config
            return dataclasses.replace(
                c,
                fail_next=list(c.fail_next),
                refused_endpoints=dict(c.refused_endpoints),
                callback_omit_params=list(c.callback_omit_params),
            )

    def update(self, **changes: Any) -> FaultConfig:
        unknown = set(changes) - FAULT_FIELDS
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        if "callback_reorder" in changes and changes["callback_reorder"] not in ("none", "swap_pairs", "shuffle"):
            raise ValueError("callback_reorder must be one of none, swap_pairs, shuffle")
        if "response_header_case" in changes and changes["response_header_case"] not in ("canonical", "lower"):
            raise ValueError("response_header_case must be canonical or lower")
        if "token_invalid_body" in changes and changes["token_invalid_body"] not in ("validation", "error"):
            raise ValueError("token_invalid_body must be validation or error")
        if any(status not in (401, 403) for status in (changes.get("refused_endpoints") or {}).values()):
            raise ValueError("refused_endpoints answers 401 or 403")
        if not 0 <= changes.get("callback_drop_task_fraction", 0) <= 1:
            raise ValueError("callback_drop_task_fraction is a fraction from 0 to 1")
        with self._lock:
            if changes.get("callback_drop_task_fraction", self._config.callback_drop_task_fraction) != (
                self._config.callback_drop_task_fraction
            ):
                self._tasks_counted = 0  # a new share counts from here, so the spread stays even
            self._config = dataclasses.replace(self._config, **changes)
        return self.config

    def clear(self) -> None:
        with self._lock:
            self._config = FaultConfig()
            self._rng = random.Random(self._seed)
            self._forget_chosen_tasks()

    def _forget_chosen_tasks(self) -> None:
        # Its own generator, so choosing tasks never shifts the draws of the other fractions.
        chooser = random.Random(None if self._seed is None else f"{self._seed}:callback_drop_task")
        self._task_offset = chooser.random()
        self._tasks_counted = 0
        self._tasks_without_callbacks: dict[str, None] = {}  # insertion-ordered set

    def choose_task(self, task_sid: str) -> bool:
        """Called once as each task is created: whether every callback of this task is to be dropped."""
        with self._lock:
            fraction = self._config.callback_drop_task_fraction
            if fraction <= 0:
                return False
            n, self._tasks_counted = self._tasks_counted, self._tasks_counted + 1
            chosen = math.floor((n + 1) * fraction + self._task_offset) > math.floor(n * fraction + self._task_offset)
            if chosen:
                self._tasks_without_callbacks[task_sid] = None
            return chosen

    def drops_every_callback_of(self, task_sid: str | None) -> bool:
        with self._lock:
            return task_sid in self._tasks_without_callbacks

    def tasks_without_callbacks(self) -> list[str]:
        """The tasks chosen by `callback_drop_task_fraction` so far, in creation order (until `clear()`)."""
        with self._lock:
            return list(self._tasks_without_callbacks)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def roll(self, fraction: float) -> bool:
        if fraction <= 0:
            return False
        if fraction >= 1:
            return True
        with self._lock:
            return self._rng.random() < fraction

    def shuffle(self, items: list[Any]) -> None:
        with self._lock:
            self._rng.shuffle(items)

    def refusal(self, endpoint: str) -> int | None:
        """401 or 403 when `refused_endpoints` refuses this endpoint, else None."""
        with self._lock:
            return self._config.refused_endpoints.get(endpoint)

    def rest_failure(self, endpoint: str) -> int | None:
        """The HTTP status to fail this REST call with, or None to serve it."""
        with self._lock:
            cfg = self._config
            if endpoint in cfg.refused_endpoints:
                return cfg.refused_endpoints[endpoint]
            if cfg.endpoints is not None and endpoint not in cfg.endpoints:
                return None
            if cfg.fail_next:
                return cfg.fail_next.pop(0)
        if self.roll(cfg.rate_limit_fraction):
            return 429
        if self.roll(cfg.server_error_fraction):
            return cfg.server_error_status
        return None

    def take_conflict(self) -> bool:
        """Whether a concurrent writer should modify the task before this attribute write lands."""
        with self._lock:
            if self._config.conflict_next > 0:
                self._config.conflict_next -= 1
                return True
            fraction = self._config.conflict_fraction
        return self.roll(fraction)
