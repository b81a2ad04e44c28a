"""A SOSL subset: `FIND {term} [IN ALL|NAME|PHONE|EMAIL FIELDS] [RETURNING Obj[(f, … [WHERE …] [ORDER BY …]
[LIMIT n])], …] [LIMIT n]`, plus the same search for `parameterizedSearch`.

Search terms. The reserved characters `? & | ! { } [ ] ( ) ^ ~ * : \\ " ' + -` must be escaped with a
backslash inside `FIND {…}`. Unescaped `*` (any run of characters) and `?` (one character) are
wildcards, as in real SOSL; any other unescaped reserved character is refused with 400
`MALFORMED_SEARCH`. That includes `"`: real SOSL also accepts balanced quotes for exact phrases,
which this sandbox does not. Words `AND` / `OR` between terms are operators; other words must all
match (implicit AND).

Matching, chosen to behave like Salesforce's search index for what this product searches:
- name fields: case- and accent-insensitive tokens; every search token must equal (or wildcard-match)
  a token of the record's name fields (`o\\'brien` finds "Liam O'Brien", `jose` finds "José Núñez");
- phone fields: the stored phone string is split into its runs of digits, as search tokenizes text;
  a term matches when its digit runs appear in that order, side by side (`(415) 555-0100` finds
  `415.555.0100` and `+1 415 555 0100`), or when all its digits equal all the stored digits
  (`4155550100`, the form the search() sample of the SOAP API Developer Guide searches with, finds
  `(415) 555-0100`).
  Nothing strips a country code or a trunk prefix: `2079460018` does not find `020 7946 0018`,
  `+14155550100` does not find `(415) 555-0100`. Terms with fewer than 7 digits or with letters never
  match a phone;
- email fields: the whole term equal to the address (case-insensitive), or all tokens among its parts;
- `IN ALL FIELDS` (the default) is any of the three. Results come in RETURNING order, then
  creation order (the real relevance ranking is not emulated).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from sandboxes.salesforce.errors import ApiError, invalid_type, malformed_search
from sandboxes.salesforce.records import Org
from sandboxes.salesforce.schema import SObject
from sandboxes.salesforce.soql import OrderItem, Parser, SelectItem, matches, render_selected, sort_records, tokenize
from sandboxes.salesforce.store import Record

RESERVED = set("?&|!{}[]()^~*:\\\"'+-")
WILDCARDS = {"*", "?"}
SCOPES = ("ALL", "NAME", "PHONE", "EMAIL")
DEFAULT_OBJECTS = ("Account", "Contact", "Lead", "Case", "Opportunity", "User")
DEFAULT_LIMIT = 2000
_MIN_PHONE_DIGITS = 7
_WORD_RE = re.compile(r"[^\W_]+")
_DIGIT_RUN = re.compile(r"\d+")


def fold(text: str) -> str:
    """Lower case without accents: `Zoë Ångström` → `zoe angstrom`."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


@dataclass
class Term:
    """One search expression: alternatives (OR) of word lists (AND)."""

    text: str  # unescaped, for email / phone comparison
    alternatives: list[list[re.Pattern[str]]]
    # The unescaped text of each OR alternative: `{\\+14155550100 OR 4155550100}` is two phone numbers.
    alternative_texts: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        return self.alternative_texts or [self.text]


@dataclass
class Returning:
    obj: SObject
    select: list[SelectItem]
    condition: Any = None
    order: list[OrderItem] = field(default_factory=list)
    limit: int | None = None


def parse_term(chars: list[tuple[str, bool]]) -> Term:
    """`chars` are (character, was_escaped) pairs from inside the braces."""
    words: list[list[tuple[str, bool]]] = [[]]
    for ch, escaped in chars:
        if ch.isspace() and not escaped:
            if words[-1]:
                words.append([])
        else:
            words[-1].append((ch, escaped))
    alternatives: list[list[re.Pattern[str]]] = [[]]
    texts: list[list[str]] = [[]]
    for word in (w for w in words if w):
        plain = "".join(ch for ch, _ in word)
        if plain in ("OR", "AND") and not any(e for _, e in word):
            if plain == "OR":
                alternatives.append([])
                texts.append([])
            continue
        alternatives[-1].extend(_word_patterns(word))
        texts[-1].append(plain)
    text = "".join(ch for ch, _ in chars).strip()
    if not any(alternatives) or len(text.replace("*", "").replace("?", "")) < 2:
        raise malformed_search("search term must be longer than one character")
    return Term(text, [alt for alt in alternatives if alt], [" ".join(t) for t in texts if t])


def _word_patterns(word: list[tuple[str, bool]]) -> list[re.Pattern[str]]:
    patterns: list[re.Pattern[str]] = []
    current: list[str] = []

    def flush() -> None:
        if any(part not in (".*", ".") for part in current):
            patterns.append(re.compile("".join(current)))
        current.clear()

    for ch, escaped in word:
        if not escaped and ch == "*":
            current.append(".*")
        elif not escaped and ch == "?":
            current.append(".")
        else:
            folded = fold(ch)
            if folded and _WORD_RE.fullmatch(folded):
                current.append(re.escape(folded))
            else:
                flush()
    flush()
    return patterns


def read_term(source: str, start: int, braces: bool) -> tuple[list[tuple[str, bool]], int]:
    """Scan a search term honouring backslash escapes; returns the characters and the end index."""
    chars: list[tuple[str, bool]] = []
    i = start
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            if i + 1 >= len(source):
                raise malformed_search("search term ends with a lone backslash")
            chars.append((source[i + 1], True))
            i += 2
            continue
        if braces and ch == "}":
            return chars, i + 1
        if ch in RESERVED and ch not in WILDCARDS:
            raise malformed_search(
                f"Invalid search: the reserved character '{ch}' must be escaped with a backslash. "
                "Reserved characters: ? & | ! { } [ ] ( ) ^ ~ * : \\ \" ' + -"
            )
        chars.append((ch, False))
        i += 1
    if braces:
        raise malformed_search("the search term must be enclosed in braces: FIND {term}")
    return chars, i


# ---- matching -----------------------------------------------------------------------------------
def _name_tokens(obj: SObject, record: Record) -> set[str]:
    tokens: set[str] = set()
    for name in obj.name_fields:
        value = record.get(name)
        if isinstance(value, str):
            tokens.update(_WORD_RE.findall(fold(value)))
    return tokens


def _tokens_match(patterns: list[re.Pattern[str]], tokens: set[str]) -> bool:
    return all(any(p.fullmatch(t) for t in tokens) for p in patterns)


def phone_matches(term: Term, obj: SObject, record: Record) -> bool:
    return any(_phone_matches(text, obj, record) for text in term.texts())


def _contains_run(runs: list[str], wanted: list[str]) -> bool:
    size = len(wanted)
    return any(runs[i : i + size] == wanted for i in range(len(runs) - size + 1))


def _phone_matches(text: str, obj: SObject, record: Record) -> bool:
    # Salesforce documents no more than "phone fields"; this is the strictest reading that still finds a number typed
    # without formatting. No last-ten-digits leniency: it let a UK number searched without its trunk prefix match.
    wanted = _DIGIT_RUN.findall(text)
    if len(digits(text)) < _MIN_PHONE_DIGITS or any(ch.isalpha() for ch in text):
        return False
    for name in obj.phone_fields:
        value = record.get(name)
        if not isinstance(value, str):
            continue
        runs = _DIGIT_RUN.findall(value)
        if "".join(runs) == "".join(wanted) or _contains_run(runs, wanted):
            return True
    return False


def email_matches(term: Term, obj: SObject, record: Record) -> bool:
    for name in obj.email_fields:
        value = record.get(name)
        if not isinstance(value, str):
            continue
        if any(value.lower() == text.lower() for text in term.texts()):
            return True
        tokens = set(_WORD_RE.findall(fold(value)))
        if any(_tokens_match(alt, tokens) for alt in term.alternatives):
            return True
    return False


def record_matches(term: Term, scope: str, obj: SObject, record: Record) -> bool:
    if scope in ("ALL", "NAME") and any(_tokens_match(alt, _name_tokens(obj, record)) for alt in term.alternatives):
        return True
    if scope in ("ALL", "PHONE") and phone_matches(term, obj, record):
        return True
    return scope in ("ALL", "EMAIL") and email_matches(term, obj, record)


def execute(
    org: Org, term: Term, scope: str, returning: list[Returning], limit: int | None, version: str
) -> dict[str, Any]:
    overall = DEFAULT_LIMIT if limit is None else limit
    results: list[dict[str, Any]] = []
    with org.store.lock:
        for spec in returning:
            found = [
                r
                for r in org.store.all(spec.obj.name)
                if record_matches(term, scope, spec.obj, r) and (spec.condition is None or matches(spec.condition, r))
            ]
            if spec.order:
                found = sort_records(found, spec.order)
            if spec.limit is not None:
                found = found[: spec.limit]
            results.extend(render_selected(org, spec.obj, r, spec.select, version) for r in found)
    return {"searchRecords": results[:overall]}


def default_returning(org: Org, names: tuple[str, ...] = DEFAULT_OBJECTS) -> list[Returning]:
    return [Returning(org.schema[n], [SelectItem("Id", lambda r: r.get("Id"))]) for n in names]


def select_items(org: Org, obj: SObject, names: list[str]) -> list[SelectItem]:
    parser = Parser(org, [], "")
    items = []
    for raw in names or ["Id"]:
        name, _, get = parser.resolve(obj, raw.strip())
        items.append(SelectItem(name, get))
    return items


def resolve_object(org: Org, name: str) -> SObject:
    obj = org.sobject(name)
    if obj is None:
        raise invalid_type(name)
    return obj


# ---- FIND {…} -----------------------------------------------------------------------------------
def run_search(org: Org, sosl: str, version: str) -> dict[str, Any]:
    m = re.match(r"\s*FIND\s*\{", sosl, re.IGNORECASE)
    if not m:
        raise malformed_search("the search term must be enclosed in braces: FIND {term}")
    chars, end = read_term(sosl, m.end(), braces=True)
    term = parse_term(chars)
    try:
        parser = Parser(org, tokenize(sosl[end:]), sosl)
        return _run_clauses(org, parser, term, version)
    except ApiError as exc:  # the clause grammar is SOQL's, but SOSL reports MALFORMED_SEARCH
        if exc.code == "MALFORMED_QUERY":
            raise malformed_search(exc.message) from None
        raise


def _run_clauses(org: Org, parser: Parser, term: Term, version: str) -> dict[str, Any]:
    scope = "ALL"
    if parser.at_kw("IN"):
        parser.next()
        scope = parser.next().text.upper()
        if scope not in SCOPES:
            raise malformed_search(f"unexpected token: '{scope}'")
        if parser.next().text.upper() != "FIELDS":
            raise malformed_search("expected FIELDS")
    returning: list[Returning] = []
    if parser.peek() is not None and parser.peek().text.upper() == "RETURNING":  # type: ignore[union-attr]
        parser.next()
        while True:
            returning.append(_parse_returning(org, parser))
            if parser.peek() is None or parser.peek().text != ",":  # type: ignore[union-attr]
                break
            parser.next()
    limit = None
    if parser.at_kw("LIMIT"):
        parser.next()
        limit = parser.parse_int()
    if parser.peek() is not None:
        raise malformed_search(f"unexpected token: '{parser.peek().text}'")  # type: ignore[union-attr]
    return execute(org, term, scope, returning or default_returning(org), limit, version)


def _parse_returning(org: Org, parser: Parser) -> Returning:
    obj = resolve_object(org, parser.next().text)
    spec = Returning(obj, select_items(org, obj, ["Id"]))
    tok = parser.peek()
    if tok is None or tok.text != "(":
        return spec
    parser.next()
    names = [parser.next().text]
    while parser.peek() is not None and parser.peek().text == ",":  # type: ignore[union-attr]
        parser.next()
        names.append(parser.next().text)
    spec.select = select_items(org, obj, names)
    if parser.at_kw("WHERE"):
        parser.next()
        spec.condition = parser.parse_condition(obj)
    if parser.at_kw("ORDER"):
        parser.next()
        parser.expect_kw("BY")
        spec.order = parser.parse_order_by(obj)
    if parser.at_kw("LIMIT"):
        parser.next()
        spec.limit = parser.parse_int()
    parser.expect_punct(")")
    return spec


# ---- parameterizedSearch ------------------------------------------------------------------------
def run_parameterized(org: Org, params: dict[str, Any], version: str) -> dict[str, Any]:
    """`params` is the POST body, or the GET query string already shaped like it (see rest.py)."""
    q = params.get("q")
    if not isinstance(q, str) or not q.strip():
        raise malformed_search("parameterizedSearch needs the parameter q")
    chars, _ = read_term(q, 0, braces=False)
    term = parse_term(chars)
    scope = str(params.get("in") or "ALL").upper()
    if scope not in SCOPES:
        raise malformed_search(f"invalid value for in: {scope}")
    default_fields = params.get("fields") or ["Id"]
    default_limit = params.get("defaultLimit")
    returning = []
    for spec in params.get("sobjects") or [{"name": n} for n in DEFAULT_OBJECTS]:
        obj = resolve_object(org, str(spec.get("name", "")))
        limit = spec.get("limit", default_limit)
        returning.append(
            Returning(
                obj,
                select_items(org, obj, list(spec.get("fields") or default_fields)),
                limit=int(limit) if limit is not None else None,
            )
        )
    overall = params.get("overallLimit")
    return execute(org, term, scope, returning, int(overall) if overall is not None else None, version)
