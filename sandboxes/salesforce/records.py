"""Record operations with Salesforce's validation rules: create, read, update, upsert, delete.

Every public method expects the caller to hold `store.lock` when it must be atomic with other
reads (the REST layer does), and raises `ApiError` with the status and code Salesforce uses.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from flexsf.salesforce_ids import is_valid_id, object_type_for_id, to_18
from sandboxes.salesforce.clock import Clock
from sandboxes.salesforce.errors import ApiError, not_found
from sandboxes.salesforce.schema import Field, SObject
from sandboxes.salesforce.store import Record, Store

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PERSON_ACCOUNT_FIELDS = {"FirstName", "LastName", "PersonMobilePhone", "PersonHomePhone", "PersonEmail"}
# Person-account fields mirrored onto the person contact.
_PERSON_CONTACT_MAP = {
    "FirstName": "FirstName",
    "LastName": "LastName",
    "Phone": "Phone",
    "PersonMobilePhone": "MobilePhone",
    "PersonHomePhone": "HomePhone",
    "PersonEmail": "Email",
    "OwnerId": "OwnerId",
}


def _json_error(f: Field, value: Any, java_type: str) -> ApiError:
    return ApiError(
        400,
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {java_type} from {type(value).__name__} value {value!r} for field {f.name}",
    )


def sobject_url(version: str, sobject: str, record_id: str) -> str:
    return f"/services/data/v{version}/sobjects/{sobject}/{record_id}"


class Org:
    def __init__(self, schema: dict[str, SObject], store: Store, clock: Clock) -> None:
        self.schema = schema
        self.store = store
        self.clock = clock
        self.integration_user_id: str | None = None
        # Objects with enough rows that Salesforce's optimizer times out a query not filtered on an index (opt-in: a
        # large org; see soql.py).
        self.large_objects: set[str] = set()

    # ---- lookups -------------------------------------------------------------------------
    def sobject(self, name: str) -> SObject | None:
        for obj in self.schema.values():
            if obj.name.lower() == name.lower():
                return obj
        return None

    def get_live(self, obj: SObject, raw_id: str) -> Record:
        """The record behind an id in a URL, with Salesforce's 400/404 distinctions."""
        record_id = self.parse_url_id(obj, raw_id)
        found = self.store.get(record_id)
        if found is None or found[0] != obj.name:
            raise not_found()
        if found[1].get("IsDeleted"):
            raise ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return found[1]

    def parse_url_id(self, obj: SObject, raw_id: str) -> str:
        if not is_valid_id(raw_id):
            if len(raw_id) in (15, 18) and raw_id.isalnum():
                raise ApiError(400, "MALFORMED_ID", f"{obj.name} ID: id value of incorrect type: {raw_id}")
            raise not_found(f"Provided external ID field does not exist or is not accessible: {raw_id}")
        if not raw_id.startswith(obj.key_prefix):
            raise ApiError(400, "MALFORMED_ID", f"{obj.name} ID: id value of incorrect type: {raw_id}")
        return to_18(raw_id)

    def find_by_field(self, obj: SObject, f: Field, value: str) -> list[Record]:
        if f.name == "Id":
            try:
                wanted = to_18(value)
            except ValueError:
                return []
            return [r for r in self.store.all(obj.name) if r["Id"] == wanted]
        lowered = value.lower()
        return [r for r in self.store.all(obj.name) if isinstance(r.get(f.name), str) and r[f.name].lower() == lowered]

    # ---- writes ----------------------------------------------------------------------------
    def create(
        self,
        obj: SObject,
        body: dict[str, Any],
        user_id: str,
        extra: dict[str, Any] | None = None,
        record_id: str | None = None,
        person_contact_id: str | None = None,
    ) -> Record:
        """`record_id` / `person_contact_id` let the demo seed give well-known records fixed ids."""
        if obj.name == "User":
            raise ApiError(400, "INSUFFICIENT_ACCESS", "insufficient access rights on object: User")
        values = self._coerce(obj, body, creating=True)
        values.update(extra or {})
        now = self.clock.iso()
        record: Record = {f: None for f in obj.fields}
        for f in obj.fields.values():
            if f.default is not None:
                record[f.name] = f.default
        record.update(values)
        record.update(
            Id=record_id or self.store.new_id(obj.key_prefix),
            IsDeleted=False,
            CreatedDate=now,
            LastModifiedDate=now,
            SystemModstamp=now,
            CreatedById=user_id,
            LastModifiedById=user_id,
        )
        if "OwnerId" in obj.fields and not record.get("OwnerId"):
            record["OwnerId"] = user_id
        if obj.name == "Case":
            record["CaseNumber"] = f"{self.store.next_seq('CaseNumber', 1001):08d}"
        person = obj.name == "Account" and bool(_PERSON_ACCOUNT_FIELDS & values.keys())
        self._derive(obj, record, person=person)
        self._check_required(obj, record)
        self._check_unique(obj, record)
        if person:
            contact = self.create(
                self.schema["Contact"],
                self._person_contact_values(record),
                user_id,
                extra={"AccountId": record["Id"], "IsPersonAccount": True},
                record_id=person_contact_id,
            )
            record["PersonContactId"] = contact["Id"]
        self.store.put(obj.name, record)
        return record

    def update(self, obj: SObject, record: Record, body: dict[str, Any], user_id: str) -> Record:
        values = self._coerce(obj, body, creating=False)
        updated = dict(record)
        updated.update(values)
        now = self.clock.iso()
        updated.update(LastModifiedDate=now, SystemModstamp=now, LastModifiedById=user_id)
        self._derive(obj, updated, person=bool(record.get("IsPersonAccount")))
        self._check_required(obj, updated)
        self._check_unique(obj, updated)
        if updated.get("PersonContactId"):
            contact_obj = self.schema["Contact"]
            contact = self.store.get(updated["PersonContactId"])
            if contact:
                mirrored = {k: v for k, v in self._person_contact_values(updated).items()}
                merged = dict(contact[1], **mirrored, LastModifiedDate=now, SystemModstamp=now)
                self._derive(contact_obj, merged, person=False)
                self.store.put("Contact", merged)
        self.store.put(obj.name, updated)
        return updated

    def convert_lead(self, lead_id: str, contact_id: str, account_id: str, user_id: str) -> Record:
        """What lead conversion leaves behind: the lead stays, read-only, pointing at what it became."""
        found = self.store.get(lead_id)
        if found is None or found[0] != "Lead":
            raise ValueError(f"no lead {lead_id}")
        now = self.clock.iso()
        converted = dict(
            found[1],
            IsConverted=True,
            Status="Closed - Converted",
            ConvertedContactId=contact_id,
            ConvertedAccountId=account_id,
            ConvertedDate=now[:10],
            LastModifiedDate=now,
            SystemModstamp=now,
            LastModifiedById=user_id,
        )
        self.store.put("Lead", converted)
        # The lead's activities move to the contact it became (Salesforce Help, "Convert Leads").
        for task in self.store.all("Task"):
            if task.get("WhoId") == lead_id:
                self.store.put("Task", dict(task, WhoId=contact_id, LastModifiedDate=now, SystemModstamp=now))
        return converted

    def delete(self, obj: SObject, record: Record, user_id: str) -> None:
        now = self.clock.iso()
        self.store.put(obj.name, dict(record, IsDeleted=True, LastModifiedDate=now, LastModifiedById=user_id))
        if record.get("PersonContactId"):
            contact = self.store.get(record["PersonContactId"])
            if contact:
                self.store.put("Contact", dict(contact[1], IsDeleted=True, LastModifiedDate=now))

    def upsert(
        self, obj: SObject, field_name: str, value: str, body: dict[str, Any], user_id: str
    ) -> tuple[str, Record | list[Record]]:
        """('created'|'updated', record) or ('multiple', matches)."""
        f = self.external_id_field(obj, field_name)
        if f.name in body or any(k.lower() == f.name.lower() for k in body):
            sent = next(v for k, v in body.items() if k.lower() == f.name.lower())
            if f.name == "Id" or str(sent).lower() != value.lower():
                raise ApiError(
                    400,
                    "INVALID_FIELD",
                    f"The value of the external ID field {f.name} in the request body does not match "
                    "the value in the URL",
                    [f.name],
                )
        matches = self.find_by_field(obj, f, value)
        if len(matches) > 1:
            return "multiple", matches
        if matches:
            # An upsert that matches is an update, with an update's field rules: a create-only field (TaskSubtype) is
            # refused even when it repeats the stored value (REST API Developer Guide, "Insert or Update (Upsert) a
            # Record Using an External ID"; the field is Create-only in the Object Reference).
            return "updated", self.update(obj, matches[0], body, user_id)
        if f.name == "Id":
            raise not_found()
        return "created", self.create(obj, body, user_id, extra={f.name: self._coerce_value(f, value)})

    def external_id_field(self, obj: SObject, field_name: str) -> Field:
        f = obj.field(field_name)
        if f is None or not (f.external_id or f.name == "Id"):
            raise not_found(f"Provided external ID field does not exist or is not accessible: {field_name}")
        return f

    # ---- validation ------------------------------------------------------------------------
    def _coerce(self, obj: SObject, body: dict[str, Any], creating: bool) -> dict[str, Any]:
        values: dict[str, Any] = {}
        read_only: list[str] = []
        for key, value in body.items():
            if key == "attributes":
                continue
            f = obj.field(key)
            if f is None:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{key}' on sobject of type {obj.name}", [key])
            if not (f.createable if creating else f.updateable) or self._person_only_mismatch(obj, f, body, creating):
                read_only.append(f.name)
                continue
            values[f.name] = self._coerce_value(f, value)
        if values.get("OwnerId"):
            self._check_owner_active(obj, values["OwnerId"])
        if read_only:
            raise ApiError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(read_only)}. Please check the security settings of "
                "this field and verify that it is read/write for your profile or permission set.",
                read_only,
            )
        return values

    @staticmethod
    def _person_only_mismatch(obj: SObject, f: Field, body: dict[str, Any], creating: bool) -> bool:
        """Business accounts have a writable Name; person accounts have First/LastName instead."""
        if obj.name != "Account" or not creating:
            return False
        is_person = any(obj.field(k) and obj.field(k).name in _PERSON_ACCOUNT_FIELDS for k in body)  # type: ignore[union-attr]
        return f.name == "Name" and is_person

    def _coerce_value(self, f: Field, value: Any) -> Any:
        if value is None or (value == "" and f.type in ("reference", "date", "datetime", "int", "double", "currency")):
            return None
        kind = f.type
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _json_error(f, value, "boolean")
            return value
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise _json_error(f, value, "int")
            try:
                number = float(value)
            except ValueError:
                raise _json_error(f, value, "int") from None
            if number != int(number):
                raise _json_error(f, value, "int")
            return int(number)
        if kind in ("double", "currency"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _json_error(f, value, "double")
            return value
        if kind == "date":
            try:
                return date.fromisoformat(str(value)[:10]).isoformat()
            except ValueError:
                raise _json_error(f, value, "java.util.Date") from None
        if kind == "datetime":
            try:
                datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                raise _json_error(f, value, "java.util.Calendar") from None
            return str(value)
        if kind == "reference":
            return self._check_reference(f, value)
        if isinstance(value, (dict, list)) or isinstance(value, bool):
            raise _json_error(f, value, "String")
        text = str(value)
        if f.length and len(text) > f.length:
            raise ApiError(
                400,
                "STRING_TOO_LONG",
                f"{f.label or f.name}: data value too large: {text[:40]}... (max length={f.length})",
                [f.name],
            )
        if kind == "picklist" and f.restricted and text not in f.picklist:
            raise ApiError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{f.label or f.name}: bad value for restricted picklist field: {text}",
                [f.name],
            )
        if kind == "email" and text and not _EMAIL_RE.match(text):
            raise ApiError(400, "INVALID_EMAIL_ADDRESS", f"{f.name}: invalid email address: {text}", [f.name])
        return text

    def _check_reference(self, f: Field, value: Any) -> str:
        if not isinstance(value, str) or not is_valid_id(value):
            raise ApiError(400, "MALFORMED_ID", f"{f.name}: id value of incorrect type: {value}", [f.name])
        target = object_type_for_id(value)
        if target not in f.reference_to:
            raise ApiError(400, "FIELD_INTEGRITY_EXCEPTION", f"{f.name}: id value of incorrect type: {value}", [f.name])
        record_id = to_18(value)
        found = self.store.get(record_id)
        if found is None:
            raise ApiError(400, "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", [f.name])
        if found[1].get("IsDeleted"):
            # SOAP API Developer Guide, StatusCode ENTITY_IS_DELETED: "You can't refer to an object that has been
            # deleted." The fields list naming the lookup is our assumption (the guide shows no example).
            raise ApiError(400, "ENTITY_IS_DELETED", "entity is deleted", [f.name])
        if found[0] == "Lead" and found[1].get("IsConverted"):
            # Salesforce Help 000384333: once converted, a lead's id can no longer be referenced.
            raise ApiError(400, "CANNOT_UPDATE_CONVERTED_LEAD", "cannot reference converted lead", [f.name])
        return record_id

    def _check_owner_active(self, obj: SObject, owner_id: str) -> None:
        """SOAP API Developer Guide, StatusCode INACTIVE_OWNER_OR_USER: the owner is an inactive user. Strict where
        unsure: refused on update as on create, fields left empty as the message names the user."""
        found = self.store.get(owner_id)
        if found is not None and found[0] == "User" and found[1].get("IsActive") is False:
            raise ApiError(
                400,
                "INACTIVE_OWNER_OR_USER",
                f"operation performed with inactive user [{owner_id}] as owner of {obj.name.lower()}",
                [],
            )

    def _derive(self, obj: SObject, record: Record, person: bool) -> None:
        if obj.name in ("Contact", "Lead", "User") or (obj.name == "Account" and person):
            record["Name"] = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p) or None
        if obj.name == "Account":
            record["IsPersonAccount"] = person
        if obj.name == "Contact" and record.get("IsPersonAccount") is None:
            record["IsPersonAccount"] = False
        if obj.name == "Task":
            record["IsClosed"] = record.get("Status") == "Completed"
        if obj.name == "Case":
            record["IsClosed"] = record.get("Status") == "Closed"
        if obj.name == "Lead" and record.get("IsConverted") is None:
            record["IsConverted"] = False

    def _check_required(self, obj: SObject, record: Record) -> None:
        required = [f.name for f in obj.fields.values() if f.required and record.get(f.name) in (None, "")]
        if obj.name == "Account":
            needed = "LastName" if record.get("IsPersonAccount") else "Name"
            if not record.get(needed):
                required.append(needed)
        if required:
            raise ApiError(
                400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(required)}]", required
            )

    def _check_unique(self, obj: SObject, record: Record) -> None:
        for f in obj.fields.values():
            value = record.get(f.name)
            if not f.unique or not isinstance(value, str):
                continue
            for other in self.find_by_field(obj, f, value):
                if other["Id"] != record["Id"]:
                    raise ApiError(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {f.name} duplicates value on record with id: {other['Id']}",
                        [f.name],
                    )

    @staticmethod
    def _person_contact_values(account: Record) -> dict[str, Any]:
        return {
            target: account.get(source)
            for source, target in _PERSON_CONTACT_MAP.items()
            if account.get(source) is not None
        }


def render(obj: SObject, record: Record, version: str, fields: list[str] | None = None) -> dict[str, Any]:
    """A record as the REST API returns it: `attributes` first, then fields in describe order."""
    out: dict[str, Any] = {"attributes": {"type": obj.name, "url": sobject_url(version, obj.name, record["Id"])}}
    for name in fields or list(obj.fields):
        out[name] = record.get(name)
    return out
