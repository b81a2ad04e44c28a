"""Pure id logic: the published 15→18 vectors, validation and key prefixes."""

from __future__ import annotations

import pytest

from flexsf.salesforce_ids import KEY_PREFIXES, is_valid_id, object_type_for_id, same_id, to_18


@pytest.mark.parametrize(
    ("id15", "id18"),
    [("001M000000qfPyS", "001M000000qfPySIAU"), ("a0RE000000IJmcN", "a0RE000000IJmcNMAT")],
)
def test_published_vectors(id15: str, id18: str) -> None:
    assert to_18(id15) == id18
    assert to_18(id18) == id18


def test_validation() -> None:
    assert is_valid_id("001M000000qfPyS")
    assert is_valid_id("001M000000qfPySIAU")
    assert not is_valid_id("001M000000qfPySIAA")  # wrong checksum
    assert not is_valid_id("001M000000qfPy")  # too short
    assert not is_valid_id("001M000000qfP-S")
    assert not is_valid_id(None)
    with pytest.raises(ValueError):
        to_18("001M000000qfPySXXX")


def test_checksum_encodes_case() -> None:
    # Same letters, different case: different ids, different checksums.
    assert to_18("003000000000abc") != to_18("003000000000ABC")


def test_key_prefixes_and_types() -> None:
    assert KEY_PREFIXES["Task"] == "00T"
    assert KEY_PREFIXES["Lead"] == "00Q"
    assert KEY_PREFIXES["Case"] == "500"
    assert object_type_for_id("001M000000qfPyS") == "Account"
    assert object_type_for_id("a0RE000000IJmcN") is None
    assert object_type_for_id("garbage") is None


def test_same_id_across_forms() -> None:
    assert same_id("001M000000qfPyS", "001M000000qfPySIAU")
    assert not same_id("001M000000qfPyS", None)
