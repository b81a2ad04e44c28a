"""The Flex Configuration resource (`GET|POST /v1/Configuration` on flex-api), held in memory."""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from sandboxes.twilio import demo
from sandboxes.twilio.errors import bad_request
from sandboxes.twilio.server import Request, Response, Route, route
from sandboxes.twilio.timefmt import iso


def default_ui_attributes() -> dict[str, Any]:
    return {
        "colorTheme": {"baseName": "FlexLight"},
        "custom_data": {"features": {"salesforce_integration": dict(demo.SALESFORCE_FEATURE_FLAGS)}},
    }


class FlexConfiguration:
    def __init__(self, account_sid: str) -> None:
        self._account_sid = account_sid
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        now = time.time()
        with self._lock:
            self._created = now
            self._updated = now
            self._fields: dict[str, Any] = {
                "ui_attributes": default_ui_attributes(),
                "attributes": {},
                "ui_language": "en",
                "ui_version": "2.9.0",
                "service_version": "1.0",
                "crm_enabled": False,
                "crm_type": None,
                "crm_callback_url": None,
                "crm_fallback_url": None,
                "crm_attributes": None,
                "public_attributes": {},
                "plugin_service_enabled": True,
                "plugin_service_attributes": {},
                "integrations": [],
                "outbound_call_flows": {
                    "default": {
                        "enabled": True,
                        "workflow_sid": demo.DEMO_WORKFLOW_SID,
                        "queue_sid": demo.DEMO_TASK_QUEUE_SID,
                    }
                },
                "call_recording_enabled": False,
                "call_recording_webhook_url": None,
                "ui_dependencies": {},
                "markdown": {},
                "notifications": {},
                "queue_stats_configuration": {},
            }

    def render(self, base_url: str) -> dict[str, Any]:
        with self._lock:
            body = copy.deepcopy(self._fields)
            created, updated = self._created, self._updated
        return {
            "account_sid": self._account_sid,
            "date_created": iso(created),
            "date_updated": iso(updated),
            "status": "ok",
            "taskrouter_workspace_sid": demo.DEMO_WORKSPACE_SID,
            "taskrouter_target_workflow_sid": demo.DEMO_WORKFLOW_SID,
            "taskrouter_target_taskqueue_sid": demo.DEMO_TASK_QUEUE_SID,
            "taskrouter_offline_activity_sid": demo.DEMO_ACTIVITIES["Offline"],
            "taskrouter_taskqueues": [{"targettable": True, "sid": demo.DEMO_TASK_QUEUE_SID}],
            "taskrouter_skills": [],
            "taskrouter_worker_channels": {},
            "taskrouter_worker_attributes": {},
            "flex_instance_sid": demo.DEMO_FLEX_INSTANCE_SID,
            "runtime_domain": None,
            "url": f"{base_url}/v1/Configuration",
            **body,
        }

    def update(self, body: Any) -> None:
        """Top-level fields are replaced; `ui_attributes` is merged one level deep, as Flex does.

        Callers that change a nested key (custom_data.features...) must send the whole top-level key.
        """
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object")
        if body.get("account_sid") != self._account_sid:
            raise bad_request("account_sid is required and must match the account")
        with self._lock:
            for key, value in body.items():
                if key == "account_sid":
                    continue
                if key == "ui_attributes":
                    if not isinstance(value, dict):
                        raise bad_request("ui_attributes must be a JSON object")
                    self._fields["ui_attributes"] = {**self._fields["ui_attributes"], **value}
                else:
                    self._fields[key] = value
            self._updated = time.time()


def routes(config: FlexConfiguration, base_url: Callable[[], str]) -> list[Route]:
    def fetch(req: Request, match: re.Match[str]) -> Response:
        return Response(200, config.render(base_url()))

    def update(req: Request, match: re.Match[str]) -> Response:
        config.update(req.json)
        return Response(200, config.render(base_url()))

    return [
        route("GET", "/v1/Configuration", "configuration_fetch", fetch),
        route("POST", "/v1/Configuration", "configuration_update", update),
    ]
