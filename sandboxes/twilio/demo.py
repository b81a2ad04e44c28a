"""The fixed cast of the sandbox: account, workspace, workflow, queue, channels and demo agents.

The sids are stable across starts so demo configuration can name them. The Salesforce sandbox seeds
agent users with the same emails (`DEMO_WORKERS[i].email`), which is how the product maps a Flex worker
to a Salesforce user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from flexsf.vocabulary import FLAG_NAMES
from sandboxes.twilio.sids import stable_sid

DEMO_ACCOUNT_SID = stable_sid("AC", "flexsf-sandbox/account")
DEMO_API_KEY_SID = stable_sid("SK", "flexsf-sandbox/api-key")
DEMO_WORKSPACE_SID = stable_sid("WS", "flexsf-sandbox/workspace")
DEMO_WORKSPACE_NAME = "Flex Task Assignment"
DEMO_WORKFLOW_SID = stable_sid("WW", "flexsf-sandbox/workflow")
DEMO_WORKFLOW_NAME = "Assign to Anyone"
DEMO_TASK_QUEUE_SID = stable_sid("WQ", "flexsf-sandbox/queue")
DEMO_TASK_QUEUE_NAME = "Everyone"
DEMO_FLEX_INSTANCE_SID = stable_sid("GO", "flexsf-sandbox/flex-instance")

# unique_name -> sid; the unique names are the ones Flex creates.
DEMO_TASK_CHANNELS: dict[str, str] = {
    name: stable_sid("TC", f"flexsf-sandbox/channel/{name}") for name in ("default", "voice", "chat", "sms", "email")
}

# friendly name -> sid
DEMO_ACTIVITIES: dict[str, str] = {
    name: stable_sid("WA", f"flexsf-sandbox/activity/{name}")
    for name in ("Available", "Unavailable", "Offline", "Break")
}

# The demo account turns every flag on.
SALESFORCE_FEATURE_FLAGS: dict[str, bool] = dict.fromkeys(FLAG_NAMES, True)


def flex_identity(email: str) -> str:
    """Flex SSO turns an email into a client identity by escaping `.` and `@` (`ada_2Elovelace_40example_2Ecom`)."""
    return email.replace(".", "_2E").replace("@", "_40")


@dataclass(frozen=True)
class DemoWorker:
    full_name: str
    email: str
    roles: tuple[str, ...] = ("agent",)

    @property
    def sid(self) -> str:
        return stable_sid("WK", f"flexsf-sandbox/worker/{self.email}")

    @property
    def identity(self) -> str:
        return flex_identity(self.email)

    @property
    def realm_user_id(self) -> str:
        return stable_sid("US", f"flexsf-sandbox/user/{self.email}")

    def attributes(self) -> dict[str, object]:
        # The shape Flex writes for SSO users; `email` is the key the product maps to a Salesforce user.
        return {
            "email": self.email,
            "full_name": self.full_name,
            "contact_uri": f"client:{self.identity}",
            "roles": list(self.roles),
            "routing": {"skills": [], "levels": {}},
            "disabled_skills": {"skills": [], "levels": {}},
        }

    def summary(self) -> dict[str, object]:
        return {
            "sid": self.sid,
            "name": self.full_name,
            "identity": self.identity,
            "email": self.email,
            "sfdc_user_email": self.email,
            "roles": list(self.roles),
        }


DEMO_WORKERS: tuple[DemoWorker, ...] = (
    DemoWorker("Ada Lovelace", "ada.lovelace@example.com"),
    DemoWorker("Grace Hopper", "grace.hopper@example.com"),
    DemoWorker("Alan Turing", "alan.turing@example.com"),
    DemoWorker("Katherine Johnson", "katherine.johnson@example.com", ("agent", "supervisor")),
)


def worker_attributes_json(worker: DemoWorker) -> str:
    return json.dumps(worker.attributes(), separators=(",", ":"))


# The Flex number outbound calls come from when the caller names none (a Twilio magic test number).
DEMO_CALLER_ID = "+15005550006"
