"""The no-match pop (flexsf/no_match_pop.py): the setting's forms, and the Open CTI screenPop each kind of term gets."""

from __future__ import annotations

import pytest

from flexsf.no_match_pop import NoMatchPop
from flexsf.settings import ConfigurationError, load_settings


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("new_record:Contact", NoMatchPop("new_record", "Contact")),
        (" NEW_RECORD : Invoice__c ", NoMatchPop("new_record", "Invoice__c")),
        ("search", NoMatchPop("search")),
        ("None", NoMatchPop("none")),
    ],
)
def test_the_setting_reads_new_record_search_or_none(text: str, parsed: NoMatchPop):
    assert NoMatchPop.parse(text) == parsed
    assert NoMatchPop.parse(str(parsed)) == parsed


@pytest.mark.parametrize("text", ["new_record", "new_record:", "new_record:Contact Lead", "new_record:1x", "pop", ""])
def test_anything_else_is_refused_with_the_forms_it_takes(text: str):
    with pytest.raises(ValueError, match="new_record"):
        NoMatchPop.parse(text)


def test_settings_default_to_a_new_contact_and_name_a_bad_value_without_echoing_it():
    assert load_settings().flexsf_search_no_match_pop == "new_record:Contact"
    assert load_settings(flexsf_search_no_match_pop="new_record: Lead").flexsf_search_no_match_pop == "new_record:Lead"
    with pytest.raises(ConfigurationError, match="FLEXSF_SEARCH_NO_MATCH_POP") as refused:
        load_settings(flexsf_search_no_match_pop="popup-everything")
    assert "popup-everything" not in str(refused.value)


@pytest.mark.parametrize(
    ("entity", "term", "values"),
    [
        ("Contact", "+1 (808) 555-0142", {"Phone": "+18085550142"}),
        ("Contact", "020 7946 0999", {"Phone": "+442079460999"}),  # a national number, read in the default region
        ("Lead", "ada@example.org", {"Email": "ada@example.org"}),
        ("Lead", "Ada Lovelace", {"LastName": "Ada Lovelace"}),
        ("Contact", "whatsapp:+18085550142", {"Phone": "+18085550142"}),
        ("Account", "Globex Ltd", {"Name": "Globex Ltd"}),
        ("Account", "ada@example.org", {}),  # an Account has no e-mail field
        ("Case", "+18085550142", {"SuppliedPhone": "+18085550142"}),
        ("Invoice__c", "Ada Lovelace", {}),  # the org's own object: its fields are unknown here
    ],
)
def test_the_new_record_modal_is_prefilled_by_the_kind_of_term(entity: str, term: str, values: dict):
    region = "GB" if term.startswith("020") else "US"
    assert NoMatchPop("new_record", entity).screen_pop(term, region) == {
        "type": "NEW_RECORD_MODAL",
        "params": {"entityName": entity, "defaultFieldValues": values},
    }


def test_search_pops_the_search_page_when_the_term_is_long_enough_for_it():
    assert NoMatchPop("search").screen_pop("Ada Lovelace") == {
        "type": "SEARCH",
        "params": {"searchString": "Ada Lovelace"},
    }
    assert NoMatchPop("search").screen_pop("Al") is None  # Open CTI's SEARCH takes 3 characters or more


def test_nothing_is_popped_for_none_or_without_a_search():
    assert NoMatchPop("none").screen_pop("+18085550142") is None
    assert NoMatchPop("new_record", "Contact").screen_pop(None) is None
