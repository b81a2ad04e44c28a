"""Salesforce record ids: 15/18-character forms, the case-safe checksum and key prefixes.

Salesforce ids are case-sensitive in their 15-character form; the 18-character form appends a
3-character checksum that encodes which of the first 15 characters are upper case, so the id
survives case-insensitive systems (spreadsheets, some databases). We always store and emit 18.
"""

from __future__ import annotations

import re

_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")

KEY_PREFIXES: dict[str, str] = {
    "Account": "001",
    "Contact": "003",
    "User": "005",
    "Opportunity": "006",
    "Lead": "00Q",
    "Task": "00T",
    "Case": "500",
    "Organization": "00D",
}
_TYPES_BY_PREFIX: dict[str, str] = {prefix: sobject for sobject, prefix in KEY_PREFIXES.items()}


def _checksum(id15: str) -> str:
    suffix = []
    for chunk_start in range(0, 15, 5):
        chunk = id15[chunk_start : chunk_start + 5]
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix.append(_CHECKSUM_ALPHABET[bits])
    return "".join(suffix)


def to_18(record_id: str) -> str:
    """The 18-character form of a 15- or 18-character id; raises ValueError on anything else."""
    if not _ID_RE.match(record_id or ""):
        raise ValueError(f"not a Salesforce id: {record_id!r}")
    id15 = record_id[:15]
    full = id15 + _checksum(id15)
    if len(record_id) == 18 and record_id != full:
        raise ValueError(f"bad checksum in Salesforce id: {record_id!r}")
    return full


def is_valid_id(value: object) -> bool:
    """True for a 15-character id, or an 18-character id whose checksum matches."""
    if not isinstance(value, str):
        return False
    try:
        to_18(value)
    except ValueError:
        return False
    return True


def object_type_for_id(record_id: object) -> str | None:
    """The sobject type a (valid) id belongs to, from its key prefix; None when unknown or invalid."""
    if not is_valid_id(record_id):
        return None
    assert isinstance(record_id, str)
    return _TYPES_BY_PREFIX.get(record_id[:3])


def same_id(a: str | None, b: str | None) -> bool:
    """Compare ids regardless of 15/18-character form."""
    if not a or not b:
        return False
    return a[:15] == b[:15] and is_valid_id(a) and is_valid_id(b)
