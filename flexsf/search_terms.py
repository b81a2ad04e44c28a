"""Turn a task attribute (a name, a phone number, an address) into one SOSL search.

Pure functions, unit-tested: the one place that knows SOSL's escaping rules and the phone formats an org holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

# Every character SOSL reserves inside FIND {…}; backslash first so escapes are not escaped again.
SOSL_RESERVED = "\\?&|!{}[]()^~*:\"'+-"
# Longer than any value Salesforce can hold in the fields searched (Name 255 at most, Email 80, Phone 40), so a
# genuine term is never cut; what is cut could not have matched anyway. Bounds every later step (regexes,
# phonenumbers, the SOSL sent) whatever a caller puts in a task attribute.
MAX_SEARCH_TERM = 256
# Flex prefixes chat/voice identities with a scheme (`client:alice`, `whatsapp:+1415…`).
_ADDRESS_SCHEME = re.compile(r"^(client|whatsapp|messenger|sms|tel|sip):", re.IGNORECASE)
SEARCH_ATTRIBUTE_ORDER = ("name", "from", "identity", "customerAddress")


def escape_sosl(term: str) -> str:
    return "".join("\\" + ch if ch in SOSL_RESERVED else ch for ch in term)


def first_search_term(attributes: dict) -> str | None:
    """The first present of `name`, `from`, `identity`, `customerAddress`, as the original plugin chose."""
    for key in SEARCH_ATTRIBUTE_ORDER:
        value = attributes.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class SearchPlan:
    kind: str  # "PHONE" | "EMAIL" | "NAME"
    variants: tuple[str, ...]

    def find_clause(self) -> str:
        return "FIND {" + " OR ".join(escape_sosl(v) for v in self.variants) + "}"


def phone_variants(value: str, region: str = "US") -> tuple[str, ...] | None:
    """The forms an org stores a phone number in, or None when the value is not one: E.164 (`+442079460018`), the
    national form as that country writes it, trunk prefix and spacing included (`020 7946 0018`, `(415) 555-0100`),
    and that form's bare digits (`02079460018`). SOSL matches the stored text, so the national significant number
    alone (`2079460018`) finds nothing outside North America."""
    if not re.fullmatch(r"[\d\s().+\-]{7,}", value) or sum(ch.isdigit() for ch in value) < 7:
        return None
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return tuple(dict.fromkeys([e164, national, re.sub(r"\D", "", national)]))


def is_email(value: str) -> bool:
    """`local@domain.tld`: one `@` with text before it, a `.` inside the domain, no whitespace.

    The same strings as `^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$`, checked with string scans that each read the value once:
    that regex backtracked from every `.` of a domain that then failed at its end (another `@`, a space), time
    quadratic in the length (4.7 s at 32k characters). Linear by construction, with or without MAX_SEARCH_TERM.
    """
    local, at, domain = value.partition("@")
    return bool(at and local) and "@" not in domain and "." in domain[1:-1] and not any(ch.isspace() for ch in value)


def plan_search(term: str, region: str = "US") -> SearchPlan | None:
    """The search for a term (None: nothing worth searching); only the first MAX_SEARCH_TERM characters count."""
    value = _ADDRESS_SCHEME.sub("", term.strip()[:MAX_SEARCH_TERM]).strip()
    if len(value) < 2:
        return None  # SOSL refuses terms shorter than two characters
    phones = phone_variants(value, region)
    if phones:
        return SearchPlan("PHONE", phones)
    if is_email(value):
        return SearchPlan("EMAIL", (value,))
    return SearchPlan("NAME", (value,))


def build_sosl(
    plan: SearchPlan, returning: dict[str, list[str]], limit: int, where: dict[str, str] | None = None
) -> str:
    """`where` filters an object's results (`{"Lead": "IsConverted = false"}`)."""
    filters = where or {}

    def spec(obj: str, fields: list[str]) -> str:
        condition = f" WHERE {filters[obj]}" if obj in filters else ""
        return f"{obj}({', '.join(fields)}{condition})"

    objects = ", ".join(spec(obj, fields) for obj, fields in returning.items())
    return f"{plan.find_clause()} IN {plan.kind} FIELDS RETURNING {objects} LIMIT {limit}"
