"""What the agent's Salesforce opens when the screen-pop search finds nobody.

A softphone layout's "No matching records" setting, decided on the server (`FLEXSF_SEARCH_NO_MATCH_POP`) and carried
out by the agent bridge as one Open CTI `screenPop`: the new-record modal of an object with the caller's phone
number, e-mail address or name filled in, Salesforce's search page, or nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from flexsf.search_terms import plan_search

# An object's API name: `Contact`, `Invoice__c`, `ns__Invoice__c` (Salesforce's limit is 40 characters before the
# suffix; a longer one cannot exist, so it is refused rather than sent).
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")
# Open CTI's SEARCH pop refuses shorter strings ("The string must be at least 3 characters", screenPop()'s reference).
SEARCH_MIN_LENGTH = 3
# Where the caller's details go in a new record, by the kind of term the search used: Salesforce's standard fields.
# Case takes the web-to-case fields. Another object gets nothing filled in: its fields are the org's own, and a name
# Salesforce does not know could fail the pop.
PREFILL_FIELDS: dict[str, dict[str, str]] = {
    "Contact": {"PHONE": "Phone", "EMAIL": "Email", "NAME": "LastName"},
    "Lead": {"PHONE": "Phone", "EMAIL": "Email", "NAME": "LastName"},
    "Account": {"PHONE": "Phone", "NAME": "Name"},
    "Case": {"PHONE": "SuppliedPhone", "EMAIL": "SuppliedEmail", "NAME": "SuppliedName"},
}


@dataclass(frozen=True)
class NoMatchPop:
    action: Literal["new_record", "search", "none"]
    entity: str | None = None

    @classmethod
    def parse(cls, text: str) -> NoMatchPop:
        """`new_record:<Object API name>`, `search` or `none` (ValueError names what is wrong)."""
        value = text.strip()
        kind, _, entity = value.partition(":")
        kind = kind.strip().lower()
        if kind in ("search", "none") and not entity:
            return cls(kind)  # type: ignore[arg-type]
        if kind == "new_record":
            entity = entity.strip()
            if not _API_NAME.fullmatch(entity):
                raise ValueError("new_record needs an object's API name, such as new_record:Contact")
            return cls("new_record", entity)
        raise ValueError("must be new_record:<Object>, such as new_record:Contact, or search, or none")

    def __str__(self) -> str:
        return f"new_record:{self.entity}" if self.action == "new_record" else self.action

    def screen_pop(self, search_term: str | None, region: str = "US") -> dict[str, Any] | None:
        """The arguments of Open CTI `screenPop` (`{"type": …, "params": …}`) for a search that found no record, or
        None when nothing is to be popped. `NEW_RECORD_MODAL` carries `defaultFieldValues` in `params`, as screenPop()'s
        reference for Lightning (API 67.0) lists it: `params: {entityName, defaultFieldValues}`."""
        if self.action == "none" or search_term is None:
            return None
        plan = plan_search(search_term, region)
        if self.action == "search":
            term = plan.variants[0] if plan is not None else search_term.strip()
            return {"type": "SEARCH", "params": {"searchString": term}} if len(term) >= SEARCH_MIN_LENGTH else None
        values: dict[str, str] = {}
        field = PREFILL_FIELDS.get(self.entity or "", {}).get(plan.kind) if plan is not None else None
        if field is not None and plan is not None:
            values[field] = plan.variants[0]  # a phone number as E.164; an address or a name as the caller gave it
        return {"type": "NEW_RECORD_MODAL", "params": {"entityName": self.entity, "defaultFieldValues": values}}
