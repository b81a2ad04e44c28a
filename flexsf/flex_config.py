"""Flex's `salesforce_integration` flags, read from the Flex Configuration API and cached per worker process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from twilio.rest import Client

from flexsf.models import FALLBACK_FLAGS, FeatureFlags
from flexsf.settings import FeatureOverrides


def flags_from_ui_attributes(ui_attributes: dict | None) -> FeatureFlags:
    features = ((ui_attributes or {}).get("custom_data") or {}).get("features") or {}
    raw = features.get("salesforce_integration") or {}
    return FeatureFlags(**{k: bool(v) for k, v in raw.items() if k in FeatureFlags.model_fields})


def apply_overrides(flags: FeatureFlags, overrides: FeatureOverrides) -> FeatureFlags:
    return flags.model_copy(update=overrides.model_dump(exclude_none=True))


class FlexConfigCache:
    """Keeps the last Flex configuration for `ttl_s`, so a burst of new tasks costs one Twilio call."""

    def __init__(
        self,
        client: Client,
        overrides: FeatureOverrides | None = None,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._overrides = overrides or FeatureOverrides()
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, FeatureFlags] | None = None

    def flags(self) -> FeatureFlags:
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self._ttl_s:
                config = self._client.flex_api.v1.configuration().fetch()
                self._cached = (now, flags_from_ui_attributes(config.ui_attributes))
            return apply_overrides(self._cached[1], self._overrides)

    def last_known(self) -> tuple[FeatureFlags, bool]:
        """The flags to use when Flex cannot be asked, and whether they came from Flex: the last configuration this
        process read, however old (an admin's choice is likelier still right than any default), else
        `FALLBACK_FLAGS`. The worker's `FLEXSF_FEATURES__*` overrides apply to both."""
        with self._lock:
            cached = self._cached
        flags = cached[1] if cached is not None else FALLBACK_FLAGS
        return apply_overrides(flags, self._overrides), cached is not None
