"""Whether TaskRouter knows a task, for the one agent route that may start a task's workflow.

The pop's long-poll starts the task's workflow (update-with-start) when it reaches Temporal before any TaskRouter
callback did. Without this check any signed-in agent could start a workflow for any well-formed sid; with it, only
for a task TaskRouter has (GET /v1/Workspaces/{ws}/Tasks/{sid}: 404 for one it does not,
twilio.com/docs/taskrouter/api/task#fetch-a-task-resource). One call, and only when no workflow exists yet: the
workflow normally starts at `task.created`, long before the agent accepts.
"""

from __future__ import annotations

import asyncio

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client


class TaskRouterUnavailable(Exception):
    """TaskRouter could not say (a 5xx, a timeout, a refused credential): ask again later."""


class TaskRouterTasks:
    def __init__(self, client: Client, workspace_sid: str) -> None:
        self._client = client
        self._workspace_sid = workspace_sid

    async def exists(self, task_sid: str) -> bool:
        return await asyncio.to_thread(self._exists, task_sid)

    def _exists(self, task_sid: str) -> bool:
        try:
            self._client.taskrouter.v1.workspaces(self._workspace_sid).tasks(task_sid).fetch()
        except TwilioRestException as exc:
            if exc.status == 404:
                return False
            raise TaskRouterUnavailable(f"TaskRouter answered {exc.status}") from None
        except (TwilioException, OSError) as exc:
            raise TaskRouterUnavailable(type(exc).__name__) from None
        return True
