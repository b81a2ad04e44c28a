"""Salesforce activities: search for the caller, write the call activity. Blocking I/O on the worker's thread pool."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction

from simple_salesforce.exceptions import SalesforceError, SalesforceMalformedRequest
from simple_salesforce.format import format_external_id, format_soql
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.activity_fields import CREATE_ONLY_FIELDS, ActivityFieldConfig, task_fields, update_fields
from activities.errors import (
    SALESFORCE_ERROR_CLASSES,
    SALESFORCE_RELATION_GONE,
    salesforce_error_code,
    salesforce_errors,
    salesforce_errors_of,
)
from activities.interfaces import SalesforceSteps, implements
from activities.models import ActivityLogRequest, ActivityLogResult, SearchRequest, SearchResult
from activities.salesforce_connection import SalesforceConnection
from flexsf import metrics
from flexsf.models import RecordRef
from flexsf.salesforce_ids import object_type_for_id, to_18
from flexsf.search_terms import build_sosl, plan_search
from flexsf.vocabulary import SALESFORCE_API_BUDGET

# What a search returns per object, and which field names the record for the agent.
_RETURNING = {
    "Case": ["Id", "CaseNumber", "Subject"],
}
_DISPLAY_FIELD = {"Case": "CaseNumber"}
_PERSON_ACCOUNT_FIELDS = ["IsPersonAccount", "PersonContactId"]
# A converted lead stays in the org, read-only, and search finds it for users allowed to see converted leads; the
# caller is the contact it became.
_SEARCH_FILTERS = {"Lead": "IsConverted = false"}
_UNWRITABLE_FIELDS = re.compile(r"Unable to create/update fields: ([\w, ]+)")
# The lookups a call activity can do without: unrelated, it is still the record that the call happened; without an
# owner, Salesforce makes the integration user its owner.
_RELATIONS = frozenset({"WhoId", "WhatId"})
_INACTIVE_OWNER = "INACTIVE_OWNER_OR_USER"

log = logging.getLogger("flexsf.activities.salesforce")


@dataclass
class SearchConfig:
    objects: list[str] = field(default_factory=lambda: ["Contact", "Lead", "Account"])
    limit: int = 20
    person_accounts: bool = False
    region: str = "US"

    def returning(self) -> dict[str, list[str]]:
        fields = {obj: list(_RETURNING.get(obj, ["Id", "Name"])) for obj in self.objects}
        if self.person_accounts and "Account" in fields:
            fields["Account"] += _PERSON_ACCOUNT_FIELDS
        return fields

    def filters(self) -> dict[str, str]:
        return {obj: cond for obj, cond in _SEARCH_FILTERS.items() if obj in self.objects}


def lookback_days(finished_at: datetime, now: datetime) -> int:
    """`n` of `CreatedDate = LAST_N_DAYS:n` that reaches a Task written any time since the Flex task ended: a day more
    for the integration user's time zone and for clocks that disagree, so a live call searches three days, a relog a
    week later ten."""
    return max((now - finished_at).days, 0) + 2


def refused_create_only(exc: SalesforceError, sent: dict) -> bool:
    """Salesforce's answer to a write that carried a create-only field to a record that already exists."""
    errors = [e for e in exc.content if isinstance(e, dict)] if isinstance(exc.content, list) else []
    refused: set[str] = set()
    for error in errors:
        if error.get("errorCode") != "INVALID_FIELD_FOR_INSERT_UPDATE":
            return False
        named = error.get("fields") or _UNWRITABLE_FIELDS.findall(error.get("message") or "")
        refused.update(part.strip() for name in named for part in name.split(","))
    return bool(refused) and refused <= (CREATE_ONLY_FIELDS & sent.keys())


def gone_fields(exc: SalesforceError) -> dict[str, str]:
    """The lookups Salesforce refused as gone, each with its errorCode; empty when anything else was refused too, or a
    refusal does not say which lookup (then the write is not guessed at)."""
    gone: dict[str, str] = {}
    for error in salesforce_errors_of(exc):
        code = error.get("errorCode") or ""
        if SALESFORCE_ERROR_CLASSES.get(code) != SALESFORCE_RELATION_GONE:
            return {}
        # The inactive-owner answer names the user in its message, not in `fields`.
        named = ["OwnerId"] if code == _INACTIVE_OWNER else [f for f in error.get("fields") or [] if f in _RELATIONS]
        if not named:
            return {}
        gone.update(dict.fromkeys(named, code))
    return gone


@dataclass(frozen=True)
class ApiBudget:
    """The share of the org's daily API requests that logs may use; the rest is kept for screen pops, which an agent
    waits for (a log is durable and can wait). Never past the limit itself, whatever the share."""

    share: float = 0.9

    def over(self, used: int, limit: int) -> bool:
        # Exact: 4,500 of 5,000 is at 0.9, though 0.9 * 5000 in floating point need not be 4500.
        ratio = Fraction(str(self.share))
        return used >= limit or used * ratio.denominator >= ratio.numerator * limit

    def held(self, used: int, limit: int) -> ApplicationError:
        percent = used * 100 // limit if limit > 0 else 100
        if used >= limit:
            why = f"{percent} %, the limit: Salesforce refuses more"
        else:
            why = f"{percent} %, at or above the {self.share * 100:g} % kept for searches"
        return ApplicationError(
            f"the org has used {used:,} of its {limit:,} daily API requests ({why}): the log waits",
            used,
            limit,
            self.share,
            type=SALESFORCE_API_BUDGET,
            non_retryable=True,
        )


def record_from_search(raw: dict) -> RecordRef:
    kind = raw.get("attributes", {}).get("type") or object_type_for_id(raw["Id"])
    person_contact = raw.get("PersonContactId") if raw.get("IsPersonAccount") else None
    return RecordRef(
        id=raw["Id"], type=kind, name=raw.get(_DISPLAY_FIELD.get(kind, "Name")), person_contact_id=person_contact
    )


def without_person_contacts(records: list[RecordRef]) -> list[RecordRef]:
    """A person account is found twice (as Account and as its Contact); the agent should see one person."""
    person_contacts = {r.person_contact_id for r in records if r.person_contact_id}
    return [r for r in records if r.id not in person_contacts]


class SalesforceActivities(SalesforceSteps):
    def __init__(
        self,
        connection: SalesforceConnection,
        search: SearchConfig | None = None,
        fields: ActivityFieldConfig | None = None,
        owner_mapping: str = "email",
        api_budget_share: float = 0.9,
    ) -> None:
        self._sf = connection
        self._budget = ApiBudget(api_budget_share)
        self._search = search or SearchConfig()
        self._fields = fields or ActivityFieldConfig()
        self._owner_mapping = owner_mapping
        self._owners: dict[str, str | None] = {}
        self._owners_lock = threading.Lock()

    @implements(SalesforceSteps.search_salesforce)
    def search_salesforce(self, req: SearchRequest) -> SearchResult:
        metrics.note_attempt("salesforce")
        plan = plan_search(req.term, self._search.region)
        if plan is None:
            return SearchResult()
        sosl = build_sosl(plan, self._search.returning(), self._search.limit, self._search.filters())
        with salesforce_errors("search_salesforce"):
            raw = self._sf.call(lambda sf: sf.search(sosl))
        records = [record_from_search(r) for r in (raw or {}).get("searchRecords", [])]
        return SearchResult(records=without_person_contacts(records))

    @implements(SalesforceSteps.log_activity)
    def log_activity(self, req: ActivityLogRequest) -> ActivityLogResult:
        """Create or amend the one Salesforce Task of this Flex task, safe to repeat."""
        metrics.note_attempt("salesforce")
        try:
            result = self._log_activity(req)
        except ApplicationError as exc:
            if exc.type == SALESFORCE_API_BUDGET:
                metrics.activity_log_held()
                log.warning("Salesforce Task not written: %s", exc.message)
            else:
                metrics.activity_logged("failed")
            raise
        except Exception:
            metrics.activity_logged("failed")
            raise
        metrics.activity_logged("created" if result.created else "amended")
        log.info("Salesforce Task %s %s", result.activity_id, "created" if result.created else "amended")
        return result

    def _log_activity(self, req: ActivityLogRequest) -> ActivityLogResult:
        with salesforce_errors("log_activity"):
            self._hold_if_over_budget()  # before any call: a log held back spends none of what is left
            req = req.model_copy(update={"related": self._resolve_person_account(req.related)})
            try:
                return self._write_what_stands(req)
            except SalesforceMalformedRequest as exc:
                became = self._contact_the_lead_became(req.related, exc)
                if became is None:
                    raise
            # The refused write changed nothing; the person is now that contact.
            return self._write_what_stands(req.model_copy(update={"related": RecordRef(id=became, type="Contact")}))

    def _write_what_stands(self, req: ActivityLogRequest) -> ActivityLogResult:
        """A record deleted since the pop, or an owner deactivated since, costs the log that one lookup, not the log:
        the refused write changed nothing, so it is written again without what Salesforce said is gone."""
        gone: dict[str, str] = {}
        reasons: list[str] = []
        while True:
            try:
                result = self._write(req, frozenset(gone))
                break
            except SalesforceMalformedRequest as exc:
                more = {name: code for name, code in gone_fields(exc).items() if name not in gone}
                if not more:
                    raise
                reasons += [f"{e.get('errorCode')}: {e.get('message')}" for e in salesforce_errors_of(exc)]
            gone.update(more)
        if not gone:
            return result
        for name, code in gone.items():
            metrics.activity_log_field_dropped(name, code)
        log.warning("Salesforce Task %s written without %s: %s", result.activity_id, ", ".join(gone), reasons)
        return result.model_copy(update={"dropped": list(gone), "reason": "; ".join(reasons)})

    def _write(self, req: ActivityLogRequest, drop: frozenset[str] = frozenset()) -> ActivityLogResult:
        owner, unmapped = self._owner_for(req)
        fields = task_fields(req, self._fields, owner)
        for name in drop:
            fields.pop(name, None)
        if req.activity_id:
            result = self._amend(req.activity_id, fields)
        elif self._fields.external_id_field:
            result = self._upsert(req.task_sid, fields)
        else:
            result = self._find_or_create(req, fields)
        if unmapped is None:
            return result
        if result.created:
            metrics.activity_log_owner_unmapped(self._owner_mapping)
            log.warning("Salesforce Task %s is owned by the integration user: %s", result.activity_id, unmapped)
        return result.model_copy(update={"owner_unmapped": unmapped})

    def _hold_if_over_budget(self) -> None:
        """Raise the non-retryable SalesforceApiBudgetLow when the org's usage is at or above the budget; the
        workflow then waits (stage waiting_for_api_budget) and asks again. Checked before the log's first call and
        again before each write (the log's own reads bring new readings). Searches are never held. With no reading
        yet (a new worker), the write goes: its answer brings one, and Salesforce itself refuses past the limit."""
        usage = self._sf.fresh_api_usage(self._budget.over)
        if usage is not None and self._budget.over(*usage):
            raise self._budget.held(*usage)

    def _contact_the_lead_became(self, related: RecordRef | None, exc: SalesforceError) -> str | None:
        """A lead converted since it was chosen (during the call, as sales teams do) can no longer be referenced."""
        if related is None or salesforce_error_code(exc) != "CANNOT_UPDATE_CONVERTED_LEAD":
            return None
        soql = format_soql("SELECT ConvertedContactId FROM Lead WHERE Id = {} AND IsConverted = true", related.id)
        rows = self._sf.call(lambda sf: sf.query(soql))["records"]
        return rows[0]["ConvertedContactId"] if rows else None

    def _upsert(self, task_sid: str, fields: dict) -> ActivityLogResult:
        """Create-only fields (TaskSubtype) may only reach Salesforce in a write that creates the Task."""
        if activity.info().attempt > 1:
            # An earlier attempt may have committed before its answer was lost: amend, never re-create.
            existing = self._task_by_external_id(task_sid)
            if existing:
                return self._amend(existing, fields)
        try:
            return self._upsert_once(task_sid, fields)
        except SalesforceMalformedRequest as exc:
            if not refused_create_only(exc, fields):
                raise
        # The Task exists after all: an earlier attempt's write landed after the look-up, or this is a relog (a new
        # activity, attempt 1) after a failed log whose write had committed. Refused whole, so write it as an update.
        return self._upsert_once(task_sid, update_fields(fields))

    def _upsert_once(self, task_sid: str, fields: dict) -> ActivityLogResult:
        key = format_external_id(self._fields.external_id_field or "", task_sid)
        self._hold_if_over_budget()
        response = self._sf.call(lambda sf: sf.Task.upsert(key, fields, raw_response=True))
        body = response.json() if response.content else {}
        # 201 created; 200 updated; before API 46.0 an update answers 204 with no body, so its id has to be asked for.
        activity_id = body.get("id") or self._task_by_external_id(task_sid)
        if activity_id is None:
            raise RuntimeError(
                f"Salesforce answered {response.status_code} to the upsert of {key} but holds no such Task"
            )
        return ActivityLogResult(activity_id=activity_id, created=response.status_code == 201, fields=fields)

    def _task_by_external_id(self, task_sid: str) -> str | None:
        field_name = self._fields.external_id_field
        return self._first_id(format_soql("SELECT Id FROM Task WHERE {:literal} = {} LIMIT 1", field_name, task_sid))

    def _find_or_create(self, req: ActivityLogRequest, fields: dict) -> ActivityLogResult:
        """Without an external-id field, CallObject carries the call leg (or the task sid) as the key."""
        key = fields.setdefault("CallObject", req.task_sid)
        # CallObject has no index: in an org with millions of Tasks the look-up alone would time out. CreatedDate is
        # indexed on every object and no one can edit it (ActivityDate is the user's due date), so it bounds the scan.
        days = lookback_days(req.finished_at, datetime.now(UTC))
        existing = self._first_id(
            format_soql("SELECT Id FROM Task WHERE CallObject = {} AND CreatedDate = LAST_N_DAYS:{} LIMIT 1", key, days)
        )
        if existing:
            return self._amend(existing, fields)
        self._hold_if_over_budget()
        created = self._sf.call(lambda sf: sf.Task.create(fields))
        return ActivityLogResult(activity_id=created["id"], created=True, fields=fields)

    def _amend(self, activity_id: str, fields: dict) -> ActivityLogResult:
        written = update_fields(fields)
        self._hold_if_over_budget()
        self._sf.call(lambda sf: sf.Task.update(activity_id, written))  # 204, no body
        return ActivityLogResult(activity_id=activity_id, created=False, fields=written)

    def _first_id(self, soql: str) -> str | None:
        records = self._sf.call(lambda sf: sf.query(soql))["records"]
        return records[0]["Id"] if records else None

    def _resolve_person_account(self, record: RecordRef | None) -> RecordRef | None:
        if record is None or record.person_contact_id or not self._search.person_accounts:
            return record
        if (record.type or object_type_for_id(record.id)) != "Account":
            return record
        soql = format_soql("SELECT IsPersonAccount, PersonContactId FROM Account WHERE Id = {}", record.id)
        rows = self._sf.call(lambda sf: sf.query(soql))["records"]
        if rows and rows[0].get("IsPersonAccount"):
            return record.model_copy(update={"person_contact_id": rows[0]["PersonContactId"]})
        return record

    def _owner_for(self, req: ActivityLogRequest) -> tuple[str | None, str | None]:
        """The Salesforce user who owns the log, and why there is none when the worker who accepted the task maps to
        nobody (Salesforce then makes the integration user the owner). The reason names the mapping, never the
        worker's email or id. No worker (nobody accepted the task) or the `none` mapping is no one to map."""
        if self._owner_mapping == "none" or not (req.worker_sid or req.worker_attributes):
            return None, None
        attrs = req.worker_attributes or {}
        if self._owner_mapping == "sfdcUserId":
            user_id = attrs.get("sfdcUserId")
            if object_type_for_id(user_id) != "User":
                # Worker attributes are edited by hand: what is not a user id would only make the log fail.
                why = "is not a Salesforce user id" if user_id else "is missing"
                return None, f"FLEXSF_OWNER_MAPPING=sfdcUserId: the worker's sfdcUserId attribute {why}"
            return to_18(user_id), None
        email = attrs.get("email")
        if not isinstance(email, str) or not email.strip():
            return None, "FLEXSF_OWNER_MAPPING=email: the worker has no email attribute"
        with self._owners_lock:
            known = email in self._owners
            owner = self._owners.get(email)
        if not known:
            soql = format_soql("SELECT Id FROM User WHERE Email = {} AND IsActive = true LIMIT 1", email)
            owner = self._first_id(soql)
            with self._owners_lock:
                self._owners[email] = owner
        if owner is None:
            return None, "FLEXSF_OWNER_MAPPING=email: no active Salesforce user has the worker's email"
        return owner, None
