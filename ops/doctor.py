"""`flexsf doctor`: the first command a Salesforce admin runs against a real org and Flex account.

Each check reads what the product will depend on, with the configured settings and the same clients the worker and
gateway build, and says in one row whether it holds and, when it does not, what to change. Reading only: the doctor
writes nothing to Salesforce, TaskRouter or Temporal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from flexsf.settings import ConfigurationError, Settings
from flexsf.vocabulary import FLAG_NAMES, HANDLED_EVENTS, RESERVATION_ACCEPTED, TASK_CANCELED, TASK_COMPLETED

# Task fields the activity log writes, and how: a field the integration user cannot create fails every log.
LOGGED_FIELDS = (
    "Subject",
    "Status",
    "Priority",
    "ActivityDate",
    "WhoId",
    "WhatId",
    "OwnerId",
    "Description",
    "CallType",
    "Type",
    "CallObject",
    "CallDisposition",
    "CallDurationInSeconds",
    "TaskSubtype",
)
AMENDED_FIELDS = ("Subject", "Description", "CallDisposition", "WhoId", "WhatId")
# Without these the workflow cannot pop, log, or know a task ended; the rest of HANDLED_EVENTS make it faster.
REQUIRED_EVENTS = (RESERVATION_ACCEPTED, TASK_COMPLETED, TASK_CANCELED)
WEBHOOK_PATH = "/taskrouter/events"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def add(self, name: str, ok: bool, detail: str = "", fix: str = "") -> bool:
        self.checks.append(Check(name, ok, detail, "" if ok else fix))
        return ok

    def as_json(self) -> str:
        return json.dumps({"ok": self.ok, "checks": [asdict(c) for c in self.checks]})


def _guard(report: Report, name: str, fix: str, fn: Callable[[], Any]) -> Any:
    """Run one read; a failure becomes a failed row (with the reason, never a secret) instead of a traceback."""
    try:
        return fn()
    except Exception as exc:  # every vendor error type ends here: the row names it
        report.add(name, False, f"{type(exc).__name__}: {str(exc)[:300]}", fix)
        return None


# ---- Salesforce ----------------------------------------------------------------------------------------------------


def _flow_reason(grant: str) -> str:
    from flexsf.salesforce_client import CLIENT_CREDENTIALS_GRANT, JWT_BEARER_GRANT

    return {
        JWT_BEARER_GRANT: "JWT bearer: SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE are set",
        "password": "username-password: SALESFORCE_USERNAME and SALESFORCE_PASSWORD are set",
        CLIENT_CREDENTIALS_GRANT: "client credentials: only SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET are set",
    }.get(grant, grant)


def check_salesforce(settings: Settings, report: Report) -> None:
    from flexsf.salesforce_client import connect, make_session
    from worker import salesforce_credentials

    creds = _guard(
        report,
        "Salesforce login",
        "set SALESFORCE_CLIENT_ID and the credentials of one flow (docs/installing.md)",
        lambda: salesforce_credentials(settings),
    )
    if creds is None:
        return
    flow = _flow_reason(creds.grant_type)
    sf = _guard(
        report,
        "Salesforce login",
        f"check the connected app and the settings of the flow used ({flow}); "
        "client credentials need your My Domain token URL",
        lambda: connect(creds, make_session(creds.ca_bundle)),
    )
    if sf is None:
        return
    report.add("Salesforce login", True, f"{flow}; instance {sf.sf_instance}")

    versions = _guard(
        report, "Salesforce API version", "check the instance URL the token endpoint returned", lambda: _versions(sf)
    )
    if versions is not None:
        known = [v.get("version") for v in versions]
        report.add(
            "Salesforce API version",
            settings.salesforce_api_version in known,
            f"v{settings.salesforce_api_version} (org serves {', '.join(known[-3:])}…)",
            f"set SALESFORCE_API_VERSION to one the org serves, e.g. {known[-1] if known else '62.0'}",
        )

    describe = _guard(
        report, "Task fields", "give the integration user access to the Task object", lambda: sf.Task.describe()
    )
    if describe is not None:
        _check_task_fields(settings, describe, report)
    for obj in settings.flexsf_search_objects:
        info = _guard(
            report,
            f"search {obj}",
            f"remove {obj} from FLEXSF_SEARCH_OBJECTS or give the integration user read access to it",
            lambda obj=obj: getattr(sf, obj).describe(),
        )
        if info is not None:
            report.add(
                f"search {obj}",
                bool(info.get("searchable")),
                "searchable" if info.get("searchable") else "not searchable",
                f"make {obj} searchable for the integration user, or remove it from FLEXSF_SEARCH_OBJECTS",
            )
    limits = _guard(report, "Salesforce API usage", "", lambda: sf.limits())
    if limits is not None:
        daily = limits.get("DailyApiRequests", {})
        top, left = daily.get("Max", 0), daily.get("Remaining", 0)
        used = top - left
        share = used / top if top else 1.0
        report.add(
            "Salesforce API usage",
            share < 0.9,
            f"{used} of {top} daily API requests used ({share:.0%})",
            "the org is near its daily API limit: raise it or move load elsewhere before going live",
        )
    _check_owner_mapping(settings, sf, report)


def _versions(sf) -> list[dict]:
    # `GET /services/data/` lists the versions the org serves; it sits above the versioned base URL.
    answer = sf.session.get(f"https://{sf.sf_instance}/services/data/", headers=sf.headers, timeout=10)
    answer.raise_for_status()
    return answer.json()


def _check_task_fields(settings: Settings, describe: dict, report: Report) -> None:
    fields = {f["name"]: f for f in describe.get("fields", [])}
    # Type is only written when FLEXSF_ACTIVITY_TYPE names one.
    wanted = [name for name in LOGGED_FIELDS if name != "Type" or settings.flexsf_activity_type] + [
        f for f in (settings.flexsf_activity_topics_field, settings.flexsf_activity_sentiment_field) if f
    ]
    missing = [name for name in wanted if name not in fields]
    not_createable = [name for name in wanted if name in fields and not fields[name].get("createable")]
    report.add(
        "Task fields",
        not missing and not not_createable,
        f"{len(wanted) - len(missing) - len(not_createable)} of {len(wanted)} writable"
        + (f"; missing: {', '.join(missing)}" if missing else "")
        + (f"; not createable: {', '.join(not_createable)}" if not_createable else ""),
        "grant the integration user's profile or permission set edit access to these Task fields",
    )
    # Notes or a selection after the log amend the same Task: these must be updateable too.
    frozen = [name for name in AMENDED_FIELDS if name in fields and not fields[name].get("updateable")]
    report.add(
        "Task fields amendable",
        not frozen,
        "notes and late selections can amend the Task" if not frozen else f"not updateable: {', '.join(frozen)}",
        "grant the integration user edit access to these Task fields",
    )
    call_type = fields.get("CallType", {})
    values = {v.get("value") for v in call_type.get("picklistValues", []) if v.get("active", True)}
    report.add(
        "Task CallType values",
        {"Inbound", "Outbound"} <= values,
        ", ".join(sorted(values)) or "none",
        "activate the standard CallType values Inbound and Outbound",
    )
    type_field = fields.get("Type", {})
    type_values = {v.get("value") for v in type_field.get("picklistValues", []) if v.get("active", True)}
    wanted_type = settings.flexsf_activity_type
    restricted = bool(type_field.get("restrictedPicklist"))
    report.add(
        "Task Type value",
        not wanted_type or not restricted or wanted_type in type_values,
        (f"sends {wanted_type!r}" if wanted_type else "Type is not sent (FLEXSF_ACTIVITY_TYPE blank)")
        + (f"; restricted to {', '.join(sorted(type_values))}" if restricted else ""),
        f"add {wanted_type} to the Task Type picklist, set FLEXSF_ACTIVITY_TYPE to one of its values, or blank",
    )
    external = settings.flexsf_activity_external_id_field
    if external:
        spec = fields.get(external)
        ok = bool(spec and spec.get("externalId") and spec.get("unique"))
        detail = "missing" if spec is None else f"externalId={spec.get('externalId')}, unique={spec.get('unique')}"
        report.add(
            f"external id {external}",
            ok,
            detail,
            f"create the Task field {external} as Text, External ID and Unique (docs/installing.md), or "
            "unset FLEXSF_ACTIVITY_EXTERNAL_ID_FIELD",
        )


def _check_owner_mapping(settings: Settings, sf, report: Report) -> None:
    if settings.flexsf_owner_mapping != "email" or not settings.twilio_workspace_sid:
        report.add("owner mapping", True, f"FLEXSF_OWNER_MAPPING={settings.flexsf_owner_mapping}: not checked here")
        return
    from simple_salesforce.format import format_soql

    from flexsf.twilio_client import twilio_client_from

    workers = _guard(
        report,
        "owner mapping",
        "check the Twilio credentials",
        lambda: list(
            twilio_client_from(settings).taskrouter.v1.workspaces(settings.twilio_workspace_sid).workers.list()
        ),
    )
    if workers is None:
        return
    emails = {}
    for w in workers:
        email = (json.loads(w.attributes or "{}") or {}).get("email")
        emails[w.friendly_name] = email if isinstance(email, str) and email else None
    known = [e for e in emails.values() if e]
    active: set[str] = set()
    for chunk in _chunks(sorted(set(known)), 100):
        rows = sf.query_all(format_soql("SELECT Email FROM User WHERE IsActive = true AND Email IN {}", chunk))
        active |= {r["Email"].lower() for r in rows["records"] if r.get("Email")}
    unmapped = sorted(name for name, email in emails.items() if not email or email.lower() not in active)
    report.add(
        "owner mapping",
        not unmapped,
        f"{len(emails) - len(unmapped)} of {len(emails)} workers map to an active Salesforce user"
        + (f"; not: {', '.join(unmapped[:10])}" if unmapped else ""),
        "give each worker an `email` attribute equal to its active Salesforce user's email (their logs "
        "otherwise belong to the integration user)",
    )


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---- Twilio --------------------------------------------------------------------------------------------------------


def check_twilio(settings: Settings, report: Report) -> None:
    from flexsf.flex_config import flags_from_ui_attributes
    from flexsf.twilio_client import twilio_client_from

    client = _guard(
        report,
        "Twilio credentials",
        "set TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN or an API key",
        lambda: twilio_client_from(settings),
    )
    if client is None:
        return
    if not settings.twilio_workspace_sid:
        report.add("TaskRouter workspace", False, "TWILIO_WORKSPACE_SID is not set", "set TWILIO_WORKSPACE_SID")
        return
    workspace = _guard(
        report,
        "TaskRouter workspace",
        "check TWILIO_WORKSPACE_SID and the credentials' account",
        lambda: client.taskrouter.v1.workspaces(settings.twilio_workspace_sid).fetch(),
    )
    if workspace is None:
        return
    report.add("TaskRouter workspace", True, f"{workspace.friendly_name} ({workspace.sid})")
    base = (settings.flexsf_public_base_url or "").rstrip("/")
    expected = base + WEBHOOK_PATH if base else None
    actual = workspace.event_callback_url
    report.add(
        "event callback URL",
        bool(expected) and actual == expected,
        f"workspace: {actual or 'unset'}; gateway: {expected or 'FLEXSF_PUBLIC_BASE_URL unset'}",
        f"set the workspace's Event Callback URL to {expected}"
        if expected
        else "set FLEXSF_PUBLIC_BASE_URL to the gateway's public URL, and the workspace's callback to it + "
        f"{WEBHOOK_PATH}",
    )
    events = {e.strip() for e in (workspace.events_filter or "").split(",") if e.strip()}
    lacking = sorted(set(REQUIRED_EVENTS) - events) if events else []
    slower = sorted(HANDLED_EVENTS - events - set(REQUIRED_EVENTS)) if events else []
    report.add(
        "events filter",
        not lacking,
        "all events"
        if not events
        else f"{len(events)} event types"
        + (f"; lacks {', '.join(lacking)}" if lacking else "")
        + (f"; recovers without {', '.join(slower)} by reconciliation" if slower else ""),
        f"add {', '.join(lacking)} to the workspace's Events Filter (or clear the filter)",
    )
    _check_etag(client, settings, report)
    config = _guard(
        report,
        "Flex configuration",
        "give the credentials read access to the Flex configuration",
        lambda: client.flex_api.v1.configuration().fetch(),
    )
    if config is not None:
        flags = flags_from_ui_attributes(config.ui_attributes)
        on = [name for name in FLAG_NAMES if getattr(flags, name)]
        report.add(
            "Flex configuration",
            flags.enabled,
            "salesforce_integration: " + (", ".join(on) or "all off"),
            "turn on ui_attributes.custom_data.features.salesforce_integration.enabled in the Flex "
            "configuration (docs/agent-side.md)",
        )


def _check_etag(client, settings: Settings, report: Report) -> None:
    """What only a live account shows: how its front end spells the ETag header (or whether it sends one). The product
    reads it in any case and never writes attributes without it, so only a missing ETag fails."""
    from flexsf.twilio_client import response_header

    tasks = client.taskrouter.v1.workspaces(settings.twilio_workspace_sid).tasks
    sample = _guard(report, "TaskRouter ETag", "check the credentials' access to tasks", lambda: tasks.list(limit=1))
    if sample is None:
        return
    if not sample:
        report.add("TaskRouter ETag", True, "no task to look at yet: run again once the workspace has one")
        return
    fetched = _guard(report, "TaskRouter ETag", "", lambda: tasks(sample[0].sid).fetch_with_http_info())
    if fetched is None:
        return
    names = [name for name in (fetched.headers or {}) if name.lower() == "etag"]
    report.add(
        "TaskRouter ETag",
        response_header(fetched.headers, "ETag") is not None,
        f"sent as {names[0]!r}" if names else "no ETag on a task fetch",
        "a proxy between the worker and Twilio drops the ETag header: the worker will not write sfdcObjectId "
        "without it (let ETag and If-Match through)",
    )


# ---- Temporal ------------------------------------------------------------------------------------------------------


async def check_temporal(settings: Settings, report: Report, client=None) -> None:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    from flexsf.search_attributes import missing_search_attributes
    from flexsf.temporal_client import connect

    try:
        client = client or await connect(settings)
    except Exception as exc:  # the SDK's connect failure is a RuntimeError with the transport's reason
        report.add("Temporal reachable", False, str(exc)[:300], "check TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and TLS")
        return
    report.add("Temporal reachable", True, f"namespace {client.namespace}")
    try:
        missing = await missing_search_attributes(client)
        report.add(
            "search attributes",
            not missing,
            "all registered" if not missing else f"missing: {', '.join(missing)}",
            "run `flexsf search-attributes --create` (self-hosted) or add them on Temporal Cloud (docs/operating.md)",
        )
    except Exception as exc:  # some deployments do not let this key list them
        report.add("search attributes", False, str(exc)[:300], "check them with the operator's credentials")
    try:
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=settings.flexsf_task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        pollers = len(answer.pollers)
        report.add(
            "worker polling",
            pollers > 0,
            f"{pollers} poller(s) on {settings.flexsf_task_queue}",
            f"start `flexsf worker` with FLEXSF_TASK_QUEUE={settings.flexsf_task_queue}",
        )
    except Exception as exc:
        report.add("worker polling", False, str(exc)[:300], "check the task queue name and the namespace")


# ---- all of it -----------------------------------------------------------------------------------------------------


async def diagnose(settings: Settings, temporal_client=None) -> Report:
    """Every check, Salesforce and Twilio on threads (their clients block), Temporal on the loop."""
    report = Report()
    await asyncio.to_thread(check_salesforce, settings, report)
    await asyncio.to_thread(check_twilio, settings, report)
    await check_temporal(settings, report, temporal_client)
    return report


def diagnose_settings_error(exc: ConfigurationError) -> Report:
    report = Report()
    report.add("settings", False, str(exc), "fix the setting named above (docs/configuration.md)")
    return report
