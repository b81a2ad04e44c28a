"""Salesforce activities: search for the caller, write the call activity. Blocking I/O on the worker's thread pool."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from temporalio import activity

from activities.activity_fields import ActivityFieldConfig, task_fields, update_fields
from activities.errors import salesforce_errors
from activities.interfaces import SalesforceSteps, implements
from activities.models import ActivityLogRequest, ActivityLogResult, SearchRequest, SearchResult
from activities.salesforce_connection import SalesforceConnection
from flexsf import metrics
from flexsf.models import RecordRef
from flexsf.salesforce_ids import object_type_for_id
from flexsf.search_terms import build_sosl, plan_search

# What a search returns per object, and which field names the record for the agent.
_RETURNING = {
    "Case": ["Id", "CaseNumber", "Subject"],
}
_DISPLAY_FIELD = {"Case": "CaseNumber"}
_PERSON_ACCOUNT_FIELDS = ["IsPersonAccount", "PersonContactId"]

log = logging.getLogger("flexsf.activities.salesforce")


def soql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
    ) -> None:
        self._sf = connection
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
        sosl = build_sosl(plan, self._search.returning(), self._search.limit)
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
        except Exception:
            metrics.activity_logged("failed")
            raise
        metrics.activity_logged("created" if result.created else "amended")
        log.info("Salesforce Task %s %s", result.activity_id, "created" if result.created else "amended")
        return result

    def _log_activity(self, req: ActivityLogRequest) -> ActivityLogResult:
        with salesforce_errors("log_activity"):
            related = self._resolve_person_account(req.related)
            fields = task_fields(req.model_copy(update={"related": related}), self._fields, self._owner_for(req))
            if req.activity_id:
                return self._amend(req.activity_id, fields)
            if self._fields.external_id_field:
                return self._upsert(req.task_sid, fields)
            return self._find_or_create(req.task_sid, fields)

    def _upsert(self, task_sid: str, fields: dict) -> ActivityLogResult:
        key = f"{self._fields.external_id_field}/{task_sid}"
        if activity.info().attempt > 1:
            # An earlier attempt may have committed before its answer was lost: amend, never re-create.
            field_name = self._fields.external_id_field
            existing = self._first_id(f"SELECT Id FROM Task WHERE {field_name} = {soql_literal(task_sid)} LIMIT 1")
            if existing:
                return self._amend(existing, fields)
        response = self._sf.call(lambda sf: sf.Task.upsert(key, fields, raw_response=True))
        body = response.json() if response.content else {}
        return ActivityLogResult(activity_id=body["id"], created=response.status_code == 201, fields=fields)

    def _find_or_create(self, task_sid: str, fields: dict) -> ActivityLogResult:
        """Without an external-id field, CallObject carries the call leg (or the task sid) as the key."""
        key = fields.setdefault("CallObject", task_sid)
        existing = self._first_id(f"SELECT Id FROM Task WHERE CallObject = {soql_literal(key)} LIMIT 1")
        if existing:
            return self._amend(existing, fields)
        created = self._sf.call(lambda sf: sf.Task.create(fields))
        return ActivityLogResult(activity_id=created["id"], created=True, fields=fields)

    def _amend(self, activity_id: str, fields: dict) -> ActivityLogResult:
        written = update_fields(fields)
        self._sf.call(lambda sf: sf.Task.update(activity_id, written))
        return ActivityLogResult(activity_id=activity_id, created=False, fields=written)

    def _first_id(self, soql: str) -> str | None:
        records = self._sf.call(lambda sf: sf.query(soql))["records"]
        return records[0]["Id"] if records else None

    def _resolve_person_account(self, record: RecordRef | None) -> RecordRef | None:
        if record is None or record.person_contact_id or not self._search.person_accounts:
            return record
        if (record.type or object_type_for_id(record.id)) != "Account":
            return record
        soql = f"SELECT IsPersonAccount, PersonContactId FROM Account WHERE Id = {soql_literal(record.id)}"
        rows = self._sf.call(lambda sf: sf.query(soql))["records"]
        if rows and rows[0].get("IsPersonAccount"):
            return record.model_copy(update={"person_contact_id": rows[0]["PersonContactId"]})
        return record

    def _owner_for(self, req: ActivityLogRequest) -> str | None:
        attrs = req.worker_attributes or {}
        if self._owner_mapping == "sfdcUserId":
            return attrs.get("sfdcUserId")
        email = attrs.get("email")
        if self._owner_mapping != "email" or not isinstance(email, str) or not email:
            return None
        with self._owners_lock:
            if email in self._owners:
                return self._owners[email]
        owner = self._first_id(f"SELECT Id FROM User WHERE Email = {soql_literal(email)} AND IsActive = true LIMIT 1")
        with self._owners_lock:
            self._owners[email] = owner
        return owner
