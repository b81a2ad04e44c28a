"""The sobjects the sandbox knows, with the field metadata that validation, SOQL and describe share.

Only the fields this product (and a realistic demo) touches are modelled; everything else is an
unknown field, exactly as it would be for a profile without access to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from flexsf.salesforce_ids import KEY_PREFIXES


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    length: int = 0
    required: bool = False  # must be non-null after defaults are applied on create
    default: Any = None
    createable: bool = True
    updateable: bool = True
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    external_id: bool = False
    unique: bool = False
    custom: bool = False
    label: str = ""

    @property
    def indexed(self) -> bool:
        """Fields Salesforce indexes without being asked: what a query must filter on to stay selective.
        Apex Developer Guide, "Working with Very Large SOQL Queries" (standard and custom indexed fields)."""
        return (
            self.name in ("Id", "Name", "OwnerId", "CreatedDate", "SystemModstamp")
            or self.type == "reference"
            or self.external_id
            or self.unique
        )

    @property
    def relationship_name(self) -> str | None:
        if self.type != "reference":
            return None
        if self.name.endswith("__c"):
            return self.name[:-3] + "__r"
        return self.name[:-2] if self.name.endswith("Id") else None


@dataclass(frozen=True)
class CustomField:
    """A custom field declared in the sandbox's configuration (e.g. an external id on Task)."""

    sobject: str
    name: str
    type: str = "string"
    length: int = 255
    external_id: bool = False
    unique: bool = False
    label: str = ""

    @classmethod
    def parse(cls, spec: str) -> CustomField:
        """`Task.Foo__c`, `Task.Foo__c:external`, `Task.Foo__c:unique` (unique implies external id)."""
        target, _, flags = spec.partition(":")
        sobject, _, name = target.partition(".")
        if not sobject or not name.endswith("__c"):
            raise ValueError(f"custom field spec must look like Object.Name__c[:external|:unique], got {spec!r}")
        unique = "unique" in flags
        return cls(sobject, name, external_id=unique or "external" in flags, unique=unique)


FLEX_TASK_SID_FIELD = CustomField("Task", "Flex_Task_Sid__c", length=64, external_id=True, unique=True)
# A non-unique external id, so an upsert can hit several matches (HTTP 300) in the demo org.
LEGACY_ID_FIELD = CustomField("Contact", "Legacy_Id__c", length=40, external_id=True)
DEFAULT_CUSTOM_FIELDS: tuple[CustomField, ...] = (FLEX_TASK_SID_FIELD, LEGACY_ID_FIELD)


@dataclass
class SObject:
    name: str
    fields: dict[str, Field] = field(default_factory=dict)
    name_fields: tuple[str, ...] = ()  # what SOSL `IN NAME FIELDS` searches
    phone_fields: tuple[str, ...] = ()
    email_fields: tuple[str, ...] = ()
    _lower: dict[str, Field] = field(default_factory=dict, repr=False)

    @property
    def key_prefix(self) -> str:
        return KEY_PREFIXES[self.name]

    def add(self, *fields: Field) -> None:
        for f in fields:
            self.fields[f.name] = f
            self._lower[f.name.lower()] = f

    def field(self, name: str) -> Field | None:
        """Field names are case-insensitive in SOQL and in REST bodies."""
        return self._lower.get(name.lower())

    def remove(self, name: str) -> None:
        f = self.field(name)
        if f is not None:
            del self.fields[f.name]
            del self._lower[f.name.lower()]

    def relationship(self, name: str) -> Field | None:
        lowered = name.lower()
        for f in self.fields.values():
            rel = f.relationship_name
            if rel and rel.lower() == lowered:
                return f
        return None


def _s(name: str, length: int = 255, **kw: Any) -> Field:
    return Field(name, "string", length, **kw)


def _ro(name: str, type_: str = "string", length: int = 255, **kw: Any) -> Field:
    return Field(name, type_, length, createable=False, updateable=False, **kw)


def _phone(name: str) -> Field:
    return Field(name, "phone", 40)


def _email(name: str) -> Field:
    return Field(name, "email", 80)


def _ref(name: str, *targets: str, **kw: Any) -> Field:
    return Field(name, "reference", 18, reference_to=targets, **kw)


def _pick(name: str, values: tuple[str, ...], **kw: Any) -> Field:
    return Field(name, "picklist", 255, picklist=values, **kw)


def _system_fields(owned: bool = True) -> list[Field]:
    fields = [
        _ro("Id", "id", 18),
        _ro("IsDeleted", "boolean"),
        _ro("CreatedDate", "datetime"),
        _ro("CreatedById", "reference", 18, reference_to=("User",)),
        _ro("LastModifiedDate", "datetime"),
        _ro("LastModifiedById", "reference", 18, reference_to=("User",)),
        _ro("SystemModstamp", "datetime"),
    ]
    if owned:
        fields.append(_ref("OwnerId", "User", required=True))
    return fields


WHAT_TARGETS = ("Account", "Opportunity", "Case")


def build_schema(
    custom_fields: tuple[CustomField, ...] | list[CustomField] = DEFAULT_CUSTOM_FIELDS,
) -> dict[str, SObject]:
    user = SObject(
        "User",
        name_fields=("FirstName", "LastName", "Name"),
        phone_fields=("Phone", "MobilePhone"),
        email_fields=("Email",),
    )
    user.add(
        *_system_fields(owned=False),
        _s("FirstName", 40),
        _s("LastName", 80, required=True),
        _ro("Name", length=121),
        _s("Username", 80, required=True),
        _email("Email"),
        Field("IsActive", "boolean", default=True),
        _phone("Phone"),
        _phone("MobilePhone"),
        _s("Title", 80),
    )

    account = SObject(
        "Account",
        name_fields=("Name",),
        phone_fields=("Phone", "PersonMobilePhone", "PersonHomePhone"),
        email_fields=("PersonEmail",),
    )
    account.add(
        *_system_fields(),
        _s("Name", 255),
        _phone("Phone"),
        Field("Website", "url", 255),
        _s("Industry", 40),
        _pick("Type", ("Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other")),
        _s("AccountNumber", 40),
        _s("BillingCity", 40),
        _s("BillingCountry", 80),
        Field("Description", "textarea", 32000),
        _ro("IsPersonAccount", "boolean"),
        _ro("PersonContactId", "reference", 18, reference_to=("Contact",)),
        _s("FirstName", 40),
        _s("LastName", 80),
        _phone("PersonMobilePhone"),
        _phone("PersonHomePhone"),
        _email("PersonEmail"),
    )

    contact = SObject(
        "Contact",
        name_fields=("FirstName", "LastName", "Name"),
        phone_fields=("Phone", "MobilePhone", "HomePhone", "OtherPhone"),
        email_fields=("Email",),
    )
    contact.add(
        *_system_fields(),
        _s("FirstName", 40),
        _s("LastName", 80, required=True),
        _ro("Name", length=121),
        _s("Title", 128),
        _phone("Phone"),
        _phone("MobilePhone"),
        _phone("HomePhone"),
        _phone("OtherPhone"),
        _email("Email"),
        _ref("AccountId", "Account"),
        _ro("IsPersonAccount", "boolean"),
        Field("Description", "textarea", 32000),
    )

    lead = SObject(
        "Lead",
        name_fields=("FirstName", "LastName", "Name", "Company"),
        phone_fields=("Phone", "MobilePhone"),
        email_fields=("Email",),
    )
    lead.add(
        *_system_fields(),
        _s("FirstName", 40),
        _s("LastName", 80, required=True),
        _ro("Name", length=121),
        _s("Company", 255, required=True),
        _phone("Phone"),
        _phone("MobilePhone"),
        _email("Email"),
        _pick(
            "Status",
            ("Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"),
            required=True,
            default="Open - Not Contacted",
        ),
        _pick("LeadSource", ("Web", "Phone Inquiry", "Partner Referral", "Other")),
        _ro("IsConverted", "boolean"),
        _ro("ConvertedContactId", "reference", 18, reference_to=("Contact",)),
        _ro("ConvertedAccountId", "reference", 18, reference_to=("Account",)),
        _ro("ConvertedDate", "date"),
        Field("Description", "textarea", 32000),
    )

    case = SObject(
        "Case", name_fields=("SuppliedName",), phone_fields=("SuppliedPhone",), email_fields=("SuppliedEmail",)
    )
    case.add(
        *_system_fields(),
        _ro("CaseNumber", length=30),
        _s("Subject", 255),
        Field("Description", "textarea", 32000),
        _ref("ContactId", "Contact"),
        _ref("AccountId", "Account"),
        _phone("SuppliedPhone"),
        _s("SuppliedName", 80),
        _email("SuppliedEmail"),
        _pick("Status", ("New", "Working", "Escalated", "Closed"), required=True, default="New"),
        _pick("Priority", ("High", "Medium", "Low"), default="Medium"),
        _pick("Origin", ("Phone", "Email", "Web")),
        _ro("IsClosed", "boolean"),
    )

    opportunity = SObject("Opportunity", name_fields=("Name",))
    opportunity.add(
        *_system_fields(),
        _s("Name", 120, required=True),
        _ref("AccountId", "Account"),
        _pick(
            "StageName",
            ("Prospecting", "Qualification", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost"),
            required=True,
        ),
        Field("CloseDate", "date", required=True),
        Field("Amount", "currency"),
        Field("Description", "textarea", 32000),
    )

    task = SObject("Task", name_fields=("Subject",))
    task.add(
        *_system_fields(),
        _ref("WhoId", "Contact", "Lead"),
        _ref("WhatId", *WHAT_TARGETS),
        Field("Subject", "combobox", 255),
        _pick(
            "Status",
            ("Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"),
            required=True,
            default="Not Started",
        ),
        _pick("Priority", ("High", "Normal", "Low"), required=True, default="Normal"),
        Field("ActivityDate", "date"),
        # Object Reference for the Salesforce Platform, Task: TaskSubtype is "Create, Filter, Group, Nillable,
        # Restricted picklist" (no Update).
        _pick(
            "TaskSubtype",
            ("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"),
            restricted=True,
            updateable=False,
            default="Task",
        ),
        # Object Reference, Task: CallType is a restricted picklist of Inbound, Internal, Outbound in every org.
        _pick("CallType", ("Inbound", "Internal", "Outbound"), restricted=True),
        _s("CallDisposition", 255),
        _s("CallObject", 255),
        Field("CallDurationInSeconds", "int"),
        Field("Description", "textarea", 32000),
        # Unrestricted by default; an org can restrict it (`restrict_picklist`) or hide it from the integration user
        # (`hide_field`).
        _pick("Type", ("Call", "Email", "Meeting", "Other")),
        _ro("IsClosed", "boolean"),
    )

    schema = {o.name: o for o in (user, account, contact, lead, case, opportunity, task)}
    for custom in custom_fields:
        if custom.sobject not in schema:
            raise ValueError(f"custom field on unknown sobject {custom.sobject}")
        schema[custom.sobject].add(
            Field(
                custom.name,
                custom.type,
                custom.length,
                external_id=custom.external_id,
                unique=custom.unique,
                custom=True,
                label=custom.label,
            )
        )
    return schema


# ---- org settings some orgs have and others do not ----------------------------------------------------------------
def _split_spec(schema: dict[str, SObject], spec: str) -> tuple[SObject, Field]:
    sobject, _, name = spec.partition(".")
    obj = schema.get(sobject)
    f = obj.field(name) if obj else None
    if obj is None or f is None:
        raise ValueError(f"no field {spec!r}: use Object.Field")
    return obj, f


def restrict_picklist(schema: dict[str, SObject], spec: str, values: tuple[str, ...] | None = None) -> None:
    """`Task.Type`: the org ticked "Restrict picklist to the values defined in the value set", after which the API
    refuses other values too, 400 INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST (Metadata API Developer Guide, ValueSet:
    `restricted`; describe shows `restrictedPicklist`)."""
    obj, f = _split_spec(schema, spec)
    if f.type != "picklist":
        raise ValueError(f"{spec} is not a picklist")
    obj.add(replace(f, restricted=True, picklist=tuple(values) if values else f.picklist))


def hide_field(schema: dict[str, SObject], spec: str) -> None:
    """`Task.Type`: field-level security hides the field from the integration user, who then gets INVALID_FIELD
    ("No such column") for it. Salesforce Help, "Field-Level Security": a hidden field is invisible through the API."""
    obj, f = _split_spec(schema, spec)
    obj.remove(f.name)


def describe(obj: SObject) -> dict[str, Any]:
    """The part of `sobjects/{Type}/describe/` integrations actually read."""
    return {
        "name": obj.name,
        "label": obj.name,
        "keyPrefix": obj.key_prefix,
        "custom": False,
        "createable": obj.name != "User",
        "updateable": True,
        "deletable": obj.name != "User",
        "queryable": True,
        "searchable": True,
        "fields": [
            {
                "name": f.name,
                "label": f.label or f.name,
                "type": f.type,
                "length": f.length,
                "custom": f.custom,
                "externalId": f.external_id,
                "unique": f.unique,
                "idLookup": f.name == "Id" or f.external_id,
                "nillable": not f.required and f.type != "boolean",
                "createable": f.createable,
                "updateable": f.updateable,
                "defaultedOnCreate": f.default is not None,
                "restrictedPicklist": f.restricted,
                "picklistValues": [
                    {"active": True, "defaultValue": v == f.default, "label": v, "value": v} for v in f.picklist
                ],
                "referenceTo": list(f.reference_to),
                "relationshipName": f.relationship_name,
            }
            for f in obj.fields.values()
        ],
    }
