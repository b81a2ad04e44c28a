"""The demo org: a deterministic few hundred records, and the well-known ones tests and demos rely on.

Well-known records have fixed ids (sequence numbers below 1000); everything else is generated from
a fixed random seed, so two runs seed identical orgs. Phone numbers use the fictional 555-01xx
range. Deliberate traps: duplicate names, a phone shared by several records in different formats,
reserved SOSL characters and non-ASCII letters in names, person accounts, a converted lead that
shares a contact's number and name, a UK number stored in its national form.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from flexsf.salesforce_ids import KEY_PREFIXES
from sandboxes.salesforce.records import Org
from sandboxes.salesforce.store import make_id

ORG_ID = make_id(KEY_PREFIXES["Organization"], 1)
SEED = 20240501


@dataclass(frozen=True)
class DemoRecord:
    sobject: str
    id: str
    name: str
    phone: str | None = None
    email: str | None = None


def _rid(sobject: str, n: int) -> str:
    return make_id(KEY_PREFIXES[sobject], n)


INTEGRATION_USER_ID = _rid("User", 1)
# The Twilio sandbox's demo workers carry the same emails: that is how a Flex worker maps to a Salesforce user.
AGENT_USERS = (
    DemoRecord("User", _rid("User", 2), "Ada Lovelace", email="ada.lovelace@example.com"),
    DemoRecord("User", _rid("User", 3), "Grace Hopper", email="grace.hopper@example.com"),
    DemoRecord("User", _rid("User", 4), "Alan Turing", email="alan.turing@example.com"),
    DemoRecord("User", _rid("User", 5), "Katherine Johnson", email="katherine.johnson@example.com"),
)

# Exactly one live record has this number (in any field or format); the lead she was converted from keeps it too.
UNIQUE_PHONE_CONTACT = DemoRecord(
    "Contact", _rid("Contact", 1), "Maria Garcia", phone="(628) 555-0147", email="maria.garcia@example.com"
)
# Search returns a converted lead (indexed before its conversion) to users with "View and Edit Converted Leads", as the
# integration user here: Salesforce Help, "Let Users View and Edit Converted Leads". Filter on IsConverted.
CONVERTED_LEAD = DemoRecord(
    "Lead",
    _rid("Lead", 3),
    UNIQUE_PHONE_CONTACT.name,
    phone=UNIQUE_PHONE_CONTACT.phone,
    email=UNIQUE_PHONE_CONTACT.email,
)
# A London number stored as the UK writes it, trunk prefix and all (Ofcom's drama range 020 7946 0xxx).
UK_CONTACT = DemoRecord("Contact", _rid("Contact", 21), "Oliver Bennett", phone="020 7946 0018")
UK_CONTACT_E164 = "+442079460018"
# One number, three records, three formats.
SHARED_PHONE = "+14155550100"
SHARED_PHONE_RECORDS = (
    DemoRecord("Contact", _rid("Contact", 2), "Daniel Kim", phone="(415) 555-0100"),
    DemoRecord("Contact", _rid("Contact", 3), "Grace Kim", phone="415.555.0100"),
    DemoRecord("Lead", _rid("Lead", 1), "Sam Kim", phone="+1 415 555 0100"),
)
UNIQUE_PHONE_ACCOUNT = DemoRecord("Account", _rid("Account", 1), "Globex Corporation", phone="212-555-0188")
RESERVED_CHARS_ACCOUNT = DemoRecord("Account", _rid("Account", 2), "AT&T (US)", phone="+1 (214) 555-0111")
APOSTROPHE_CONTACT = DemoRecord("Contact", _rid("Contact", 4), "Liam O'Brien", phone="+1 312 555 0133")
HYPHEN_CONTACT = DemoRecord("Contact", _rid("Contact", 5), "Ana Smith-Jones", phone="312-555-0134")
ACCENTED_CONTACTS = (
    DemoRecord("Contact", _rid("Contact", 6), "José Núñez", phone="646.555.0151"),
    DemoRecord("Contact", _rid("Contact", 7), "Zoë Ångström", phone="+1 646 555 0152"),
)
DUPLICATE_NAME = "John Smith"
DUPLICATE_NAME_CONTACTS = tuple(
    DemoRecord("Contact", _rid("Contact", 8 + i), DUPLICATE_NAME, phone=phone)
    for i, phone in enumerate(("(718) 555-0161", "718.555.0162", "+1 718 555 0163"))
)
PERSON_ACCOUNT = DemoRecord(
    "Account", _rid("Account", 3), "Priya Patel", phone="+1 628 555 0162", email="priya.patel@example.com"
)
PERSON_ACCOUNT_CONTACT_ID = _rid("Contact", 20)
DEMO_LEAD = DemoRecord(
    "Lead", _rid("Lead", 2), "Olivia Chen", phone="(646) 555-0175", email="olivia.chen@initech.example"
)
DEMO_CASE = DemoRecord("Case", _rid("Case", 1), "Router keeps dropping the connection")
# Contact.Legacy_Id__c is a non-unique external id; this value is on two contacts (upsert → 300).
DUPLICATE_LEGACY_ID = "LEGACY-0042"

_FIRST_NAMES = (
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "Michael",
    "Jennifer",
    "William",
    "Linda",
    "David",
    "Elizabeth",
    "Richard",
    "Barbara",
    "Joseph",
    "Susan",
    "Thomas",
    "Jessica",
    "Charles",
    "Sarah",
    "Christopher",
    "Karen",
    "Renée",
    "François",
    "Björn",
    "Chloé",
    "Mateo",
    "Aisha",
    "Wei",
    "Yuki",
    "Fatima",
    "Noah",
)
_LAST_NAMES = (
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "O'Connor",
    "D'Angelo",
    "Müller",
    "Nguyen-Tran",
    "García",
    "Østergaard",
)
_COMPANY_WORDS = (
    "Acme",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Cyberdyne",
    "Wonka",
    "Tyrell",
    "Massive Dynamic",
    "Pied Piper",
    "Oscorp",
    "Dunder Mifflin",
)
_COMPANY_SUFFIXES = ("Inc.", "LLC", "Corp", "Group", "& Sons", "Holdings")
_AREA_CODES = ("206", "303", "305", "404", "503", "512", "617", "702", "919", "971")
_FORMATS = ("({a}) {p}-{l}", "{a}.{p}.{l}", "+1 {a} {p} {l}", "{a}-{p}-{l}", "+1{a}{p}{l}", "{a}{p}{l}")
_CASE_SUBJECTS = (
    "Cannot log in to the portal",
    "Invoice shows the wrong amount",
    "Delivery is late",
    "Router keeps rebooting",
    "Request to change billing address",
    "Refund not received",
)


def ensure_integration_user(org: Org, username: str) -> str:
    """The API user every token belongs to; exists even without the demo seed."""
    if org.store.get(INTEGRATION_USER_ID) is None:
        _put_user(org, INTEGRATION_USER_ID, "Integration", "User", username, "integration@flexsf-demo.example.com")
    return INTEGRATION_USER_ID


def _put_user(org: Org, user_id: str, first: str, last: str, username: str, email: str) -> None:
    now = org.clock.iso()
    record: dict[str, Any] = {f: None for f in org.schema["User"].fields}
    record.update(
        Id=user_id,
        FirstName=first,
        LastName=last,
        Name=f"{first} {last}",
        Username=username,
        Email=email,
        IsActive=True,
        IsDeleted=False,
        CreatedDate=now,
        LastModifiedDate=now,
        SystemModstamp=now,
        CreatedById=INTEGRATION_USER_ID,
        LastModifiedById=INTEGRATION_USER_ID,
    )
    org.store.put("User", record)


def _split(name: str) -> tuple[str, str]:
    first, _, last = name.partition(" ")
    return first, last


def seed(org: Org) -> None:
    with org.store.batch():
        _seed_well_known(org)
        _seed_generated(org, random.Random(SEED))


def _seed_well_known(org: Org) -> None:
    s = org.schema
    me = INTEGRATION_USER_ID
    for agent in AGENT_USERS:
        first, last = _split(agent.name)
        _put_user(org, agent.id, first, last, agent.email or "", agent.email or "")

    def contact(rec: DemoRecord, **extra: Any) -> None:
        first, last = _split(rec.name)
        org.create(
            s["Contact"],
            {"FirstName": first, "LastName": last, "Phone": rec.phone, "Email": rec.email, **extra},
            me,
            record_id=rec.id,
        )

    org.create(
        s["Account"],
        {
            "Name": UNIQUE_PHONE_ACCOUNT.name,
            "Phone": UNIQUE_PHONE_ACCOUNT.phone,
            "Industry": "Manufacturing",
            "Type": "Customer - Direct",
        },
        me,
        record_id=UNIQUE_PHONE_ACCOUNT.id,
    )
    org.create(
        s["Account"],
        {"Name": RESERVED_CHARS_ACCOUNT.name, "Phone": RESERVED_CHARS_ACCOUNT.phone, "Industry": "Telecommunications"},
        me,
        record_id=RESERVED_CHARS_ACCOUNT.id,
    )
    first, last = _split(PERSON_ACCOUNT.name)
    org.create(
        s["Account"],
        {
            "FirstName": first,
            "LastName": last,
            "PersonMobilePhone": PERSON_ACCOUNT.phone,
            "PersonEmail": PERSON_ACCOUNT.email,
        },
        me,
        record_id=PERSON_ACCOUNT.id,
        person_contact_id=PERSON_ACCOUNT_CONTACT_ID,
    )
    contact(UNIQUE_PHONE_CONTACT, AccountId=UNIQUE_PHONE_ACCOUNT.id)
    for rec in SHARED_PHONE_RECORDS[:2]:
        contact(rec)
    for rec in (APOSTROPHE_CONTACT, HYPHEN_CONTACT, *ACCENTED_CONTACTS, UK_CONTACT):
        contact(rec)
    for i, rec in enumerate(DUPLICATE_NAME_CONTACTS):
        contact(
            rec, **({"Legacy_Id__c": DUPLICATE_LEGACY_ID} if i < 2 and "Legacy_Id__c" in s["Contact"].fields else {})
        )
    sam = SHARED_PHONE_RECORDS[2]
    first, last = _split(sam.name)
    org.create(
        s["Lead"],
        {"FirstName": first, "LastName": last, "Company": "Kim Family Bakery", "Phone": sam.phone},
        me,
        record_id=sam.id,
    )
    first, last = _split(DEMO_LEAD.name)
    org.create(
        s["Lead"],
        {
            "FirstName": first,
            "LastName": last,
            "Company": "Initech",
            "Phone": DEMO_LEAD.phone,
            "Email": DEMO_LEAD.email,
        },
        me,
        record_id=DEMO_LEAD.id,
    )
    first, last = _split(CONVERTED_LEAD.name)
    org.create(
        s["Lead"],
        {
            "FirstName": first,
            "LastName": last,
            "Company": UNIQUE_PHONE_ACCOUNT.name,
            "Phone": CONVERTED_LEAD.phone,
            "Email": CONVERTED_LEAD.email,
        },
        me,
        record_id=CONVERTED_LEAD.id,
    )
    org.convert_lead(CONVERTED_LEAD.id, UNIQUE_PHONE_CONTACT.id, UNIQUE_PHONE_ACCOUNT.id, me)
    org.create(
        s["Case"],
        {
            "Subject": DEMO_CASE.name,
            "ContactId": UNIQUE_PHONE_CONTACT.id,
            "AccountId": UNIQUE_PHONE_ACCOUNT.id,
            "Origin": "Phone",
            "Status": "Working",
            "SuppliedPhone": UNIQUE_PHONE_CONTACT.phone,
        },
        me,
        record_id=DEMO_CASE.id,
    )


def _seed_generated(org: Org, rnd: random.Random) -> None:
    s = org.schema
    me = INTEGRATION_USER_ID
    owners = [INTEGRATION_USER_ID, *(a.id for a in AGENT_USERS)]
    numbers = [(a, f"{line:04d}") for a in _AREA_CODES for line in range(100, 200)]
    rnd.shuffle(numbers)

    def phone() -> str:
        area, line = numbers.pop()
        return rnd.choice(_FORMATS).format(a=area, p="555", l=line)

    accounts = []
    for i in range(60):
        name = f"{rnd.choice(_COMPANY_WORDS)} {rnd.choice(_COMPANY_SUFFIXES)}"
        accounts.append(
            org.create(
                s["Account"],
                {
                    "Name": name,
                    "Phone": phone(),
                    "Type": rnd.choice(("Prospect", "Customer - Direct", "Partner")),
                    "BillingCity": rnd.choice(("Seattle", "Denver", "Miami", "Atlanta", "Austin", "Boston")),
                    "AccountNumber": f"AC-{i + 1:05d}",
                    "OwnerId": rnd.choice(owners),
                },
                me,
            )
        )
    for _ in range(5):
        first, last = rnd.choice(_FIRST_NAMES), rnd.choice(_LAST_NAMES)
        org.create(
            s["Account"],
            {
                "FirstName": first,
                "LastName": last,
                "PersonMobilePhone": phone(),
                "PersonEmail": f"{first}.{last}@example.net".lower().replace("'", ""),
            },
            me,
        )
    contacts = []
    for _ in range(200):
        first, last = rnd.choice(_FIRST_NAMES), rnd.choice(_LAST_NAMES)
        account = rnd.choice(accounts)
        # A third of contacts give their company's main line as Phone: shared numbers, like real orgs.
        main_line = account["Phone"] if rnd.random() < 0.33 else phone()
        email = f"{first}.{last}@{account['Name'].split()[0].lower()}.example".lower().replace("'", "")
        contacts.append(
            org.create(
                s["Contact"],
                {
                    "FirstName": first,
                    "LastName": last,
                    "Phone": main_line,
                    "MobilePhone": phone() if rnd.random() < 0.5 else None,
                    "Email": email,
                    "AccountId": account["Id"],
                    "OwnerId": rnd.choice(owners),
                },
                me,
            )
        )
    for _ in range(50):
        first, last = rnd.choice(_FIRST_NAMES), rnd.choice(_LAST_NAMES)
        org.create(
            s["Lead"],
            {
                "FirstName": first,
                "LastName": last,
                "Company": f"{rnd.choice(_COMPANY_WORDS)} {rnd.choice(_COMPANY_SUFFIXES)}",
                "Phone": phone(),
                "Status": rnd.choice(("Open - Not Contacted", "Working - Contacted")),
                "LeadSource": "Phone Inquiry",
            },
            me,
        )
    for _ in range(25):
        who = rnd.choice(contacts)
        org.create(
            s["Case"],
            {
                "Subject": rnd.choice(_CASE_SUBJECTS),
                "ContactId": who["Id"],
                "AccountId": who["AccountId"],
                "Status": rnd.choice(("New", "Working", "Escalated", "Closed")),
                "Origin": "Phone",
                "SuppliedPhone": who["Phone"],
                "SuppliedName": who["Name"],
            },
            me,
        )
    for i in range(20):
        account = rnd.choice(accounts)
        org.create(
            s["Opportunity"],
            {
                "Name": f"{account['Name']} renewal {i + 1}",
                "AccountId": account["Id"],
                "StageName": rnd.choice(("Prospecting", "Qualification", "Negotiation/Review")),
                "CloseDate": f"2025-{rnd.randint(1, 12):02d}-15",
                "Amount": rnd.randint(5, 200) * 1000,
            },
            me,
        )
    for _ in range(30):
        who = rnd.choice(contacts)
        org.create(
            s["Task"],
            {
                "WhoId": who["Id"],
                "WhatId": who["AccountId"],
                "Subject": "Call",
                "Status": "Completed",
                "TaskSubtype": "Call",
                "Type": "Call",
                "CallType": rnd.choice(("Inbound", "Outbound")),
                "CallDurationInSeconds": rnd.randint(20, 900),
                "ActivityDate": "2024-04-30",
                "OwnerId": rnd.choice(owners),
            },
            me,
        )
