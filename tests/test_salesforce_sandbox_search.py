"""SOQL and SOSL (including parameterizedSearch) through simple-salesforce against the demo org."""

from __future__ import annotations

import pytest
from simple_salesforce import Salesforce, SalesforceMalformedRequest
from simple_salesforce.format import format_soql

from flexsf.salesforce_client import connect, make_session
from sandboxes.salesforce import SalesforceSandbox
from sandboxes.salesforce.demo import (
    ACCENTED_CONTACTS,
    APOSTROPHE_CONTACT,
    CONVERTED_LEAD,
    DEMO_LEAD,
    DUPLICATE_NAME,
    DUPLICATE_NAME_CONTACTS,
    HYPHEN_CONTACT,
    PERSON_ACCOUNT,
    RESERVED_CHARS_ACCOUNT,
    SHARED_PHONE_RECORDS,
    UK_CONTACT,
    UK_CONTACT_E164,
    UNIQUE_PHONE_ACCOUNT,
    UNIQUE_PHONE_CONTACT,
)

RETURNING_PEOPLE = "RETURNING Contact(Id, Name), Lead(Id, Name), Account(Id, Name)"


def _ids(result: dict) -> set[str]:
    return {r["Id"] for r in result["searchRecords"]}


def _error(caught: pytest.ExceptionInfo) -> dict:
    assert caught.value.status == 400
    return caught.value.content[0]


# ---- SOQL ---------------------------------------------------------------------------------------
def test_query_shape_and_relationship(sf: Salesforce) -> None:
    result = sf.query(f"SELECT Id, Name, Phone, Account.Name FROM Contact WHERE Id = '{UNIQUE_PHONE_CONTACT.id[:15]}'")
    assert result["totalSize"] == 1 and result["done"] is True
    record = result["records"][0]
    assert record["attributes"] == {
        "type": "Contact",
        "url": f"/services/data/v62.0/sobjects/Contact/{UNIQUE_PHONE_CONTACT.id}",
    }
    assert record["Name"] == UNIQUE_PHONE_CONTACT.name
    assert record["Account"]["Name"] == UNIQUE_PHONE_ACCOUNT.name


def test_query_where_order_limit(sf: Salesforce) -> None:
    result = sf.query(
        "select id, name from contact where (LastName = 'smith' or LastName LIKE 'Kim%') "
        "and FirstName in ('John', 'Grace', 'Daniel') and FirstName != 'Nobody' order by Name desc limit 4"
    )
    names = [r["Name"] for r in result["records"]]
    assert names == ["John Smith", "John Smith", "John Smith", "Grace Kim"]
    assert list(result["records"][0]) == ["attributes", "Id", "Name"]  # canonical field names
    assert sf.query(f"SELECT COUNT() FROM Contact WHERE Name = '{DUPLICATE_NAME}'")["totalSize"] == 3


def test_query_escapes_quotes(sf: Salesforce) -> None:
    result = sf.query(r"SELECT Id FROM Contact WHERE Name = 'Liam O\'Brien'")
    assert [r["Id"] for r in result["records"]] == [APOSTROPHE_CONTACT.id]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id, Phone FROM Task", "INVALID_FIELD"),
        ("SELECT Id FROM Contact WHERE Nope__c = 'x'", "INVALID_FIELD"),
        ("SELECT Id FROM Widget__c", "INVALID_TYPE"),
        ("SELECT Id FROM Contact WHERE", "MALFORMED_QUERY"),
        ("SELECT Id Contact", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact LIMIT many", "MALFORMED_QUERY"),
        ("SELECT Id FROM Contact WHERE Name = 'a\\qb'", "MALFORMED_QUERY"),  # not an escape sequence
    ],
)
def test_query_errors(sf: Salesforce, soql: str, code: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query(soql)
    assert _error(caught)["errorCode"] == code


def test_values_quoted_by_simple_salesforce_round_trip(sf: Salesforce) -> None:
    last = 'Quote\'s "double" back\\slash\ttab\nline'
    created = sf.Contact.create({"LastName": last})["id"]
    found = sf.query(format_soql("SELECT Id, LastName FROM Contact WHERE LastName = {}", last))["records"]
    assert [(r["Id"], r["LastName"]) for r in found] == [(created, last)]


def test_query_dates_and_date_literals(sf: Salesforce, clean_salesforce_sandbox: SalesforceSandbox) -> None:
    task = sf.Task.create({"Subject": "dated", "ActivityDate": "2024-05-01"})["id"]

    def found(sf: Salesforce, where: str) -> bool:
        return sf.query(f"SELECT Id FROM Task WHERE Id = '{task}' AND {where}")["totalSize"] == 1

    # Each check holds on either side of a midnight passing during the test.
    assert found(sf, "CreatedDate = LAST_N_DAYS:1") and found(sf, "CreatedDate > 2024-05-01T00:00:00Z")
    assert not found(sf, "CreatedDate > TOMORROW") and not found(sf, "CreatedDate = NEXT_N_DAYS:3")
    assert found(sf, "ActivityDate = 2024-05-01") and found(sf, "ActivityDate < LAST_N_DAYS:30")
    assert not found(sf, "ActivityDate = LAST_N_DAYS:30")

    clean_salesforce_sandbox.advance_clock(3 * 86400)
    creds = clean_salesforce_sandbox.credentials()
    later = connect(creds, make_session(creds.ca_bundle))  # the old token expired with the clock
    assert not found(later, "CreatedDate = LAST_N_DAYS:1") and found(later, "CreatedDate = LAST_N_DAYS:5")
    assert found(later, "CreatedDate < TODAY") and not found(later, "CreatedDate = YESTERDAY")


@pytest.mark.parametrize(
    "where",
    [
        "CreatedDate >= '2024-01-01T00:00:00Z'",  # quoted
        "CreatedDate >= 2024-01-01",  # a date on a dateTime field
        "ActivityDate = 2024-01-01T00:00:00Z",  # a dateTime on a date field
        "CallObject = LAST_N_DAYS:3",
        "Subject = TODAY",
    ],
)
def test_date_values_must_fit_the_field(sf: Salesforce, where: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query(f"SELECT Id FROM Task WHERE {where}")
    assert _error(caught)["errorCode"] == "INVALID_FIELD"
    assert "value of filter criterion" in _error(caught)["message"]


# ---- SOSL ---------------------------------------------------------------------------------------
# Stored as "(415) 555-0100", "415.555.0100" (contacts) and "+1 415 555 0100" (lead).
DANIEL, GRACE, SAM = SHARED_PHONE_RECORDS


@pytest.mark.parametrize(
    ("term", "found"),
    [
        (r"\(415\) 555\-0100", {DANIEL, GRACE, SAM}),  # the national form's digit runs, in order
        ("415.555.0100", {DANIEL, GRACE, SAM}),
        ("4155550100", {DANIEL, GRACE}),  # all the digits of a nationally written number
        (r"\+14155550100", {SAM}),  # all the digits of a number written with its country code
        (r"\+1 415 555 0100", {SAM}),
        (r"\+14155550100 OR \(415\) 555\-0100", {DANIEL, GRACE, SAM}),
    ],
)
def test_phone_search_matches_digit_runs_or_all_digits(sf: Salesforce, term: str, found: set) -> None:
    result = sf.search(f"FIND {{{term}}} IN PHONE FIELDS {RETURNING_PEOPLE}")
    assert _ids(result) == {r.id for r in found}


def test_phone_search_strips_neither_country_code_nor_trunk_prefix(sf: Salesforce) -> None:
    """SOSL matches the phone string as stored: no last-ten-digits normalization."""
    assert _ids(sf.search(f"FIND {{2079460018}} IN PHONE FIELDS {RETURNING_PEOPLE}")) == set()
    assert _ids(sf.search(f"FIND {{\\{UK_CONTACT_E164}}} IN PHONE FIELDS {RETURNING_PEOPLE}")) == set()
    assert _ids(sf.search(f"FIND {{020 7946 0018}} IN PHONE FIELDS {RETURNING_PEOPLE}")) == {UK_CONTACT.id}
    assert _ids(sf.search(f"FIND {{02079460018}} IN PHONE FIELDS {RETURNING_PEOPLE}")) == {UK_CONTACT.id}
    assert _ids(sf.search(f"FIND {{\\+1 628 555 0147}} IN PHONE FIELDS {RETURNING_PEOPLE}")) == set()


def test_unique_phones(sf: Salesforce) -> None:
    contact = sf.search(r"FIND {\(628\) 555\-0147} IN PHONE FIELDS RETURNING Contact(Id), Account(Id)")
    assert _ids(contact) == {UNIQUE_PHONE_CONTACT.id}
    account = sf.search("FIND {2125550188} IN PHONE FIELDS RETURNING Account(Id, Name, Phone)")
    assert [r["Name"] for r in account["searchRecords"]] == [UNIQUE_PHONE_ACCOUNT.name]
    person = sf.search(r"FIND {\+16285550162} IN PHONE FIELDS RETURNING Account(Id, IsPersonAccount), Contact(Id)")
    assert _ids(person) >= {PERSON_ACCOUNT.id}


def test_converted_leads_are_found_unless_filtered(sf: Salesforce) -> None:
    unfiltered = sf.search(r"FIND {\(628\) 555\-0147} IN PHONE FIELDS " + RETURNING_PEOPLE)
    assert _ids(unfiltered) == {UNIQUE_PHONE_CONTACT.id, CONVERTED_LEAD.id}
    by_name = sf.search(f"FIND {{{CONVERTED_LEAD.name}}} IN NAME FIELDS RETURNING Lead(Id, IsConverted)")
    assert by_name["searchRecords"][0]["IsConverted"] is True
    filtered = sf.search(
        r"FIND {\(628\) 555\-0147} IN PHONE FIELDS "
        "RETURNING Contact(Id, Name), Lead(Id, Name WHERE IsConverted = false), Account(Id, Name)"
    )
    assert _ids(filtered) == {UNIQUE_PHONE_CONTACT.id}
    lead = sf.Lead.get(CONVERTED_LEAD.id)
    assert (lead["Status"], lead["ConvertedContactId"], lead["ConvertedAccountId"]) == (
        "Closed - Converted",
        UNIQUE_PHONE_CONTACT.id,
        UNIQUE_PHONE_ACCOUNT.id,
    )


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        (r"O\'Brien", APOSTROPHE_CONTACT),
        (r"AT\&T \(US\)", RESERVED_CHARS_ACCOUNT),
        (r"Smith\-Jones", HYPHEN_CONTACT),
        ("jose nunez", ACCENTED_CONTACTS[0]),
        ("Zoë Ångström", ACCENTED_CONTACTS[1]),
    ],
)
def test_name_search_with_escaped_reserved_characters(sf: Salesforce, term: str, expected) -> None:
    result = sf.search(f"FIND {{{term}}} IN NAME FIELDS {RETURNING_PEOPLE}")
    assert _ids(result) == {expected.id}


@pytest.mark.parametrize("term", ["O'Brien", "AT&T", "Smith-Jones", "+1 415 555 0100", "(415)", "a:b", 'say "hi"'])
def test_unescaped_reserved_character_is_malformed_search(sf: Salesforce, term: str) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.search(f"FIND {{{term}}} IN ALL FIELDS RETURNING Contact(Id)")
    assert _error(caught)["errorCode"] == "MALFORMED_SEARCH"


def test_quick_search_does_not_escape(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest):
        sf.quick_search("O'Brien")
    assert APOSTROPHE_CONTACT.id in _ids(sf.quick_search(r"O\'Brien"))


def test_duplicate_names_and_wildcards(sf: Salesforce) -> None:
    result = sf.search(f"FIND {{{DUPLICATE_NAME}}} IN NAME FIELDS RETURNING Contact(Id, Phone)")
    assert _ids(result) == {r.id for r in DUPLICATE_NAME_CONTACTS}
    wildcard = sf.search("FIND {Smi* Jon?s} IN NAME FIELDS RETURNING Contact(Id)")
    assert HYPHEN_CONTACT.id in _ids(wildcard)
    either = sf.search("FIND {Nunez OR Angstrom} IN NAME FIELDS RETURNING Contact(Id)")
    assert _ids(either) == {r.id for r in ACCENTED_CONTACTS}


def test_all_fields_email_and_limits(sf: Salesforce) -> None:
    by_email = sf.search("FIND {olivia.chen@initech.example} RETURNING Lead(Id, Email), Contact(Id)")
    assert _ids(by_email) == {DEMO_LEAD.id}
    limited = sf.search(f"FIND {{{DUPLICATE_NAME}}} RETURNING Contact(Id ORDER BY Phone LIMIT 2)")
    assert len(limited["searchRecords"]) == 2
    overall = sf.search(r"FIND {415\-555\-0100} RETURNING Contact(Id), Lead(Id) LIMIT 1")
    assert len(overall["searchRecords"]) == 1
    no_returning = sf.search("FIND {Globex}")
    assert no_returning["searchRecords"][0] == {
        "attributes": {"type": "Account", "url": f"/services/data/v62.0/sobjects/Account/{UNIQUE_PHONE_ACCOUNT.id}"},
        "Id": UNIQUE_PHONE_ACCOUNT.id,
    }


def test_search_errors(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.search("FIND {Globex} RETURNING Widget__c(Id)")
    assert _error(caught)["errorCode"] == "INVALID_TYPE"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.search("FIND {Globex} RETURNING Task(Id, Phone)")
    assert _error(caught)["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.search("FIND Globex")
    assert _error(caught)["errorCode"] == "MALFORMED_SEARCH"


def test_parameterized_search_get_and_post(sf: Salesforce) -> None:
    get = sf.restful(
        "parameterizedSearch/",
        params={
            "q": r"\(415\) 555\-0100",
            "in": "PHONE",
            "sobject": ["Contact", "Lead"],
            "Contact.fields": "Id,Name",
            "Lead.fields": "Id,Name,Company",
        },
    )
    assert _ids(get) == {r.id for r in SHARED_PHONE_RECORDS}
    post = sf.restful(
        "parameterizedSearch/",
        method="POST",
        json={
            "q": "415.555.0100",
            "in": "PHONE",
            "overallLimit": 20,
            "sobjects": [{"name": "Contact", "fields": ["Id", "Name"], "limit": 1}, {"name": "Lead", "fields": ["Id"]}],
        },
    )
    assert len(post["searchRecords"]) == 2
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.restful("parameterizedSearch/", params={"q": "AT&T"})
    assert _error(caught)["errorCode"] == "MALFORMED_SEARCH"


def test_or_between_phone_formats_matches_either(sf) -> None:
    from sandboxes.salesforce import demo

    found = sf.search("FIND {\\+16285550147 OR 6285550147} IN PHONE FIELDS RETURNING Contact(Id)")["searchRecords"]
    assert [r["Id"] for r in found] == [demo.UNIQUE_PHONE_CONTACT.id]
    none = sf.search("FIND {\\+19995550147 OR 9995550147} IN PHONE FIELDS RETURNING Contact(Id)")["searchRecords"]
    assert none == []
