"""Pure logic: which attribute is searched, how it is escaped, which phone formats are asked for."""

from __future__ import annotations

import itertools
import re

import pytest

from flexsf.search_terms import MAX_SEARCH_TERM, build_sosl, escape_sosl, first_search_term, is_email, plan_search


def test_first_present_attribute_in_the_plugins_order() -> None:
    assert first_search_term({"from": "+14155550100", "name": "Ada"}) == "Ada"
    assert first_search_term({"name": " ", "identity": "ada@example.com", "customerAddress": "x"}) == "ada@example.com"
    assert first_search_term({"customerAddress": "+1415"}) == "+1415"
    assert first_search_term({"name": 42}) is None
    assert first_search_term({}) is None


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("O'Brien", "O\\'Brien"),
        ("AT&T (US)", "AT\\&T \\(US\\)"),
        ("Smith-Jones", "Smith\\-Jones"),
        ('a\\b"c', 'a\\\\b\\"c'),
        ("?&|!{}[]()^~*:+-", "\\?\\&\\|\\!\\{\\}\\[\\]\\(\\)\\^\\~\\*\\:\\+\\-"),
        ("José Núñez", "José Núñez"),
    ],
)
def test_every_reserved_character_is_escaped(raw: str, escaped: str) -> None:
    assert escape_sosl(raw) == escaped


@pytest.mark.parametrize("raw", ["(415) 555-0100", "415.555.0100", "+1 415 555 0100", "tel:+14155550100"])
def test_phone_numbers_search_e164_and_the_national_form(raw: str) -> None:
    plan = plan_search(raw)
    assert plan is not None and plan.kind == "PHONE"
    assert plan.variants == ("+14155550100", "(415) 555-0100", "4155550100")
    assert plan.find_clause() == "FIND {\\+14155550100 OR \\(415\\) 555\\-0100 OR 4155550100}"


@pytest.mark.parametrize(
    ("raw", "region", "variants"),
    [
        # The trunk prefix is part of how the country writes the number, and of what SOSL matches.
        ("+442079460018", "US", ("+442079460018", "020 7946 0018", "02079460018")),
        ("020 7946 0018", "GB", ("+442079460018", "020 7946 0018", "02079460018")),
        ("whatsapp:+33123456789", "US", ("+33123456789", "01 23 45 67 89", "0123456789")),
        ("+61 2 9374 4000", "US", ("+61293744000", "(02) 9374 4000", "0293744000")),
    ],
)
def test_numbers_outside_north_america_keep_their_national_form(raw: str, region: str, variants: tuple) -> None:
    plan = plan_search(raw, region)
    assert plan is not None and plan.variants == variants


def test_names_emails_and_chat_identities() -> None:
    assert plan_search("Ada Lovelace").kind == "NAME"
    assert plan_search("ada@example.com").kind == "EMAIL"
    assert plan_search("client:ada@example.com").variants == ("ada@example.com",)
    assert plan_search("x") is None
    assert plan_search("12345").kind == "NAME"  # too short to be a phone number


def test_sosl_statement_shape() -> None:
    sosl = build_sosl(plan_search("O'Brien"), {"Contact": ["Id", "Name"], "Lead": ["Id", "Name"]}, 20)
    assert sosl == "FIND {O\\'Brien} IN NAME FIELDS RETURNING Contact(Id, Name), Lead(Id, Name) LIMIT 20"
    filtered = build_sosl(
        plan_search("Ada"), {"Contact": ["Id"], "Lead": ["Id", "Name"]}, 5, {"Lead": "IsConverted = false"}
    )
    assert (
        filtered == "FIND {Ada} IN NAME FIELDS RETURNING Contact(Id), Lead(Id, Name WHERE IsConverted = false) LIMIT 5"
    )


# ---- caller data of any length --------------------------------------------------------------------------------------

# What the email check replaced: backtracking from each `.` of a domain that fails at its end made it quadratic.
_OLD_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def test_the_email_check_accepts_exactly_what_the_old_pattern_did() -> None:
    # Every string of up to 6 characters over the characters that matter (an em space is whitespace to both).
    for length in range(1, 7):
        for chars in itertools.product("a@. \u2003", repeat=length):
            value = "".join(chars)
            assert is_email(value) == bool(_OLD_EMAIL.match(value)), repr(value)


def test_the_email_check_reads_100k_adversarial_characters() -> None:
    # The old pattern's worst cases: many dots after the @, then something that fails only at the very end.
    assert not is_email("a@" + "." * 100_000 + "@")
    assert not is_email("a@" + "b." * 50_000 + " ")
    assert is_email("a@" + "b." * 50_000 + "c")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("a@" + "." * 100_000 + "@", "EMAIL"),  # cut to `a@` and dots: an address as far as the check can tell
        ("a@" + "b." * 50_000 + " ", "EMAIL"),
        ("Ada " * 25_000, "NAME"),
        ("(" * 100_000, "NAME"),  # all phone punctuation, no digits
        ("1" * 100_000, "NAME"),  # too long to be a phone number
        ("whatsapp:" + "+1 415 555 0100 " * 6_250, "NAME"),
    ],
    ids=["dots-after-at", "labels-then-space", "repeated-name", "parentheses", "digits", "repeated-number"],
)
def test_a_100k_character_attribute_is_searched_by_its_first_256_characters(raw: str, kind: str) -> None:
    assert MAX_SEARCH_TERM == 256
    plan = plan_search(raw)
    expected = re.sub(r"^whatsapp:", "", raw[:MAX_SEARCH_TERM]).strip()
    assert plan is not None and plan.kind == kind
    assert plan.variants == (expected,) and len(expected) <= MAX_SEARCH_TERM


def test_the_cap_leaves_every_real_value_whole() -> None:
    # Salesforce's longest searched field (Account Name) holds 255 characters.
    name = "N" * 255
    assert plan_search(name).variants == (name,)
    assert plan_search(f"  {name}  ").variants == (name,)
