"""Faults the sandbox injects on request: slow or failing REST calls, stale ETags, misbehaving callbacks.

All knobs live in one flat `FaultConfig` so the HTTP control API and the Python API set them the same way
(`sandbox.faults.update(rate_limit_fraction=0.5)` == `POST /__sandbox__/faults {"rate_limit_fraction": 0.5}`).
Fractions are drawn from one seeded RNG so a run can be repeated.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

ReorderMode = Literal["none", "swap_pairs", "shuffle"]


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

    # --- event callbacks ---
    callback_drop_fraction: float = 0.0
    callback_drop_event_types: list[str] = field(default_factory=list)
    callback_duplicate_fraction: float = 0.0
    callback_duplicate_event_types: list[str] = field(default_factory=list)
    callback_reorder: ReorderMode = "none"
    callback_reorder_window: int = 4  # for "shuffle"
    callback_reorder_flush_s: float = 0.25  # a partly filled reorder window is released after this long
    callback_delay_s: float = 0.0
    callback_attempts: int = 1  # TaskRouter documents no retry; >1 retries non-2xx and timeouts
    callback_backoff_s: float = 0.05  # doubled per retry
    callback_timeout_s: float = 15.0  # TaskRouter's answer deadline


FAULT_FIELDS = frozenset(f.name for f in dataclasses.fields(FaultConfig))


class Faults:
    """Thread-safe holder of the current `FaultConfig` plus the random draws made from it."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._seed = seed
        self._rng = random.Random(seed)

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return dataclasses.replace(self._config, fail_next=list(self._config.fail_next))

    def update(self, **changes: Any) -> FaultConfig:
        unknown = set(changes) - FAULT_FIELDS
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        if "callback_reorder" in changes and changes["callback_reorder"] not in ("none", "swap_pairs", "shuffle"):
            raise ValueError("callback_reorder must be one of none, swap_pairs, shuffle")
        with self._lock:
            self._config = dataclasses.replace(self._config, **changes)
        return self.config

    def clear(self) -> None:
        with self._lock:
            self._config = FaultConfig()
            self._rng = random.Random(self._seed)

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

    def rest_failure(self, endpoint: str) -> int | None:
        """The HTTP status to fail this REST call with, or None to serve it."""
        with self._lock:
            cfg = self._config
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
