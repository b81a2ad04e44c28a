"""A SOQL subset: `SELECT f, Rel.f | COUNT() FROM Obj [WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …]
[LIMIT n] [OFFSET n]`, where cond combines `= != <> < <= > >= LIKE IN NOT IN` with AND / OR / NOT and parentheses.

Like Salesforce, names are case-insensitive, `=` and LIKE on text ignore case, and ids compare
equal in their 15- and 18-character forms. Date and dateTime fields take unquoted `YYYY-MM-DD` and
`YYYY-MM-DDThh:mm:ssZ` values (each only on its own type) and the date literals TODAY, YESTERDAY,
TOMORROW and LAST_N_DAYS:n / NEXT_N_DAYS:n, evaluated in UTC (Salesforce uses the user's time zone).
Subqueries, aggregates other than COUNT(), other date literals and `nextRecordsUrl` paging are not supported.

In an org whose `large_objects` name the queried object, a query with no filter on an indexed field
is refused with QUERY_TIMEOUT, as a large org's optimizer would time it out (only the shape is
judged, not the real optimizer's 10–30 % selectivity thresholds).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sandboxes.salesforce.errors import ApiError, invalid_field, invalid_type, malformed_query, no_such_column
from sandboxes.salesforce.records import Org, sobject_url
from sandboxes.salesforce.schema import Field, SObject
from sandboxes.salesforce.store import Record

_TOKEN_RE = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<dateliteral>(?i:LAST_N_DAYS|NEXT_N_DAYS):\d+\b)
    | (?P<op><>|!=|<=|>=|=|<|>)
    | (?P<punct>[(),])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "LIMIT",
    "OFFSET",
    "NULL",
    "TRUE",
    "FALSE",
    "COUNT",
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
# SOQL and SOSL Reference, "Quoted String Escape Sequences": a backslash before anything else is an error (\_ and \%
# are for LIKE patterns).
_ESCAPABLE = set("nNtTrRbBfF\"'\\_%")


@dataclass
class Token:
    kind: str
    text: str
    value: Any = None

    def is_kw(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.upper() in words


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise malformed_query(f"unexpected token: '{text[pos:].split()[0] if text[pos:].split() else text[pos:]}'")
        pos = m.end()
        kind = m.lastgroup or ""
        raw = m.group(kind)
        value: Any = raw
        if kind == "string":
            bad = next((e for e in re.findall(r"\\(.)", raw[1:-1], re.DOTALL) if e not in _ESCAPABLE), None)
            if bad is not None:
                raise malformed_query(f"Illegal character sequence '\\{bad}' in string literal: {raw}")
            value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1).lower(), e.group(1)), raw[1:-1])
        elif kind == "number":
            value = float(raw) if "." in raw else int(raw)
        elif kind == "dateliteral":
            name, _, n = raw.partition(":")
            value = (name.upper(), int(n))
        tokens.append(Token(kind, raw, value))
    return tokens


# ---- conditions ---------------------------------------------------------------------------------
Getter = Callable[[Record], Any]


@dataclass
class Comparison:
    field: Field
    get: Getter
    op: str
    value: Any


@dataclass(frozen=True)
class DateRange:
    """A date literal: the days [first, last] it covers."""

    first: date
    last: date


# SOQL and SOSL Reference, "Date Formats and Date Literals in WHERE": LAST_N_DAYS:1 is yesterday and today.
def date_literal(name: str, n: int, today: date) -> DateRange:
    day = timedelta(days=1)
    fixed = {"TODAY": (today, today), "YESTERDAY": (today - day, today - day), "TOMORROW": (today + day, today + day)}
    if name in fixed:
        return DateRange(*fixed[name])
    if name == "LAST_N_DAYS":
        return DateRange(today - n * day, today)
    return DateRange(today + day, today + n * day)  # NEXT_N_DAYS


_DATE_LITERAL_WORDS = ("TODAY", "YESTERDAY", "TOMORROW")


@dataclass
class BoolOp:
    op: str  # AND | OR | NOT
    parts: list[Any]


@dataclass
class OrderItem:
    get: Getter
    descending: bool
    nulls_first: bool


class Parser:
    """Recursive descent over tokens; shared with SOSL's RETURNING clauses."""

    def __init__(self, org: Org, tokens: list[Token], source: str) -> None:
        self.org = org
        self.tokens = tokens
        self.pos = 0
        self.source = source

    # token helpers
    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise malformed_query("unexpected end of query")
        self.pos += 1
        return tok

    def expect_kw(self, *words: str) -> Token:
        tok = self.next()
        if not tok.is_kw(*words):
            raise malformed_query(f"unexpected token: '{tok.text}'")
        return tok

    def expect_punct(self, char: str) -> None:
        tok = self.next()
        if tok.text != char:
            raise malformed_query(f"unexpected token: '{tok.text}'")

    def at_kw(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.is_kw(*words)

    # fields
    def resolve(self, obj: SObject, name: str) -> tuple[str, Field, Getter]:
        """Canonical name, field and value getter for `Field` or `Relationship.Field`."""
        if "." not in name:
            f = obj.field(name)
            if f is None:
                raise no_such_column(name, obj.name)
            return f.name, f, lambda r, n=f.name: r.get(n)
        rel_name, _, target_name = name.partition(".")
        ref = obj.relationship(rel_name)
        if ref is None or "." in target_name:
            raise no_such_column(name, obj.name)
        targets = [self.org.schema[t] for t in ref.reference_to]
        target_fields = [t.field(target_name) for t in targets if t.field(target_name)]
        if not target_fields:
            raise no_such_column(name, obj.name)
        target_field = target_fields[0]
        store = self.org.store

        def get(record: Record) -> Any:
            linked = record.get(ref.name)
            found = store.get(linked) if linked else None
            return found[1].get(target_field.name) if found else None

        return f"{ref.relationship_name}.{target_field.name}", target_field, get

    def parse_value(self, f: Field | None = None) -> Any:
        tok = self.next()
        if f is not None:
            _check_value_type(f, tok)
        if tok.kind == "dateliteral":
            return date_literal(*tok.value, self.org.clock.now().date())
        if tok.is_kw(*_DATE_LITERAL_WORDS):
            return date_literal(tok.text.upper(), 0, self.org.clock.now().date())
        if tok.kind in ("string", "number", "date", "datetime"):
            return tok.value
        if tok.is_kw("NULL"):
            return None
        if tok.is_kw("TRUE", "FALSE"):
            return tok.text.upper() == "TRUE"
        raise malformed_query(f"unexpected token: '{tok.text}'")

    def parse_condition(self, obj: SObject) -> Any:
        parts = [self.parse_and(obj)]
        while self.at_kw("OR"):
            self.next()
            parts.append(self.parse_and(obj))
        return parts[0] if len(parts) == 1 else BoolOp("OR", parts)

    def parse_and(self, obj: SObject) -> Any:
        parts = [self.parse_unary(obj)]
        while self.at_kw("AND"):
            self.next()
            parts.append(self.parse_unary(obj))
        return parts[0] if len(parts) == 1 else BoolOp("AND", parts)

    def parse_unary(self, obj: SObject) -> Any:
        if self.at_kw("NOT"):
            self.next()
            return BoolOp("NOT", [self.parse_unary(obj)])
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.next()
            inner = self.parse_condition(obj)
            self.expect_punct(")")
            return inner
        return self.parse_comparison(obj)

    def parse_comparison(self, obj: SObject) -> Comparison:
        tok = self.next()
        if tok.kind != "ident" or tok.text.upper() in _KEYWORDS:
            raise malformed_query(f"unexpected token: '{tok.text}'")
        _, f, get = self.resolve(obj, tok.text)
        op_tok = self.next()
        if op_tok.kind == "op":
            return Comparison(f, get, "!=" if op_tok.text == "<>" else op_tok.text, self.parse_value(f))
        if op_tok.is_kw("LIKE"):
            value = self.parse_value()
            if not isinstance(value, str) or f.type in _SOQL_TYPE_NAMES:
                raise malformed_query("LIKE needs a string")
            return Comparison(f, get, "LIKE", value)
        negate = False
        if op_tok.is_kw("NOT"):
            negate = True
            op_tok = self.next()
        if op_tok.is_kw("IN"):
            self.expect_punct("(")
            values = [self.parse_value(f)]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.next()
                values.append(self.parse_value(f))
            self.expect_punct(")")
            return Comparison(f, get, "NOT IN" if negate else "IN", values)
        raise malformed_query(f"unexpected token: '{op_tok.text}'")

    def parse_order_by(self, obj: SObject) -> list[OrderItem]:
        items = []
        while True:
            tok = self.next()
            _, _, get = self.resolve(obj, tok.text)
            descending = False
            if self.at_kw("ASC", "DESC"):
                descending = self.next().text.upper() == "DESC"
            nulls_first = not descending
            if self.at_kw("NULLS"):
                self.next()
                nulls_first = self.expect_kw("FIRST", "LAST").text.upper() == "FIRST"
            items.append(OrderItem(get, descending, nulls_first))
            if self.peek() is None or self.peek().text != ",":  # type: ignore[union-attr]
                return items
            self.next()

    def parse_int(self) -> int:
        tok = self.next()
        if tok.kind != "number" or not isinstance(tok.value, int) or tok.value < 0:
            raise malformed_query(f"unexpected token: '{tok.text}'")
        return tok.value


_SOQL_TYPE_NAMES = {"date": "date", "datetime": "dateTime"}


def _check_value_type(f: Field, tok: Token) -> None:
    """SOQL and SOSL Reference, "Date Formats and Date Literals in WHERE": a date value filters date fields only, a
    dateTime value dateTime fields only, never quoted; date literals only on either."""
    if tok.is_kw("NULL"):
        return
    is_literal = tok.kind == "dateliteral" or tok.is_kw(*_DATE_LITERAL_WORDS)
    if f.type in _SOQL_TYPE_NAMES:
        if is_literal or tok.kind == f.type:
            return
        raise invalid_field(
            f"value of filter criterion for field '{f.name}' must be of type {_SOQL_TYPE_NAMES[f.type]} and should "
            "not be enclosed in quotes"
        )
    if is_literal or tok.kind in ("date", "datetime"):
        kind = "string" if f.type not in ("int", "double", "currency", "boolean") else f.type
        raise invalid_field(
            f"value of filter criterion for field '{f.name}' must be of type {kind} and should be enclosed in quotes"
        )


# ---- evaluation ---------------------------------------------------------------------------------
def _as_time(f: Field, value: Any) -> Any:
    """Date and dateTime values as comparable Python objects (stored values keep Salesforce's text form)."""
    if not isinstance(value, str):
        return value
    if f.type == "date":
        return date.fromisoformat(value[:10])
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _range_bounds(f: Field, r: DateRange) -> tuple[Any, Any]:
    if f.type == "date":
        return r.first, r.last
    return datetime.combine(r.first, time.min, UTC), datetime.combine(r.last + timedelta(days=1), time.min, UTC)


def _compare_range(f: Field, op: str, actual: Any, r: DateRange) -> bool:
    """A date literal is a range: `=` inside it, `>` after its end, `<` before its start."""
    if actual is None:
        return op == "!="
    low, high = _range_bounds(f, r)
    # dateTime ranges are half-open at midnight after the last day; date ranges include their last day.
    before_end = actual <= high if f.type == "date" else actual < high
    inside = low <= actual and before_end
    return {
        "=": inside,
        "!=": not inside,
        "<": actual < low,
        ">=": actual >= low,
        ">": not before_end,
        "<=": before_end,
    }[op]


def _norm(f: Field, value: Any) -> Any:
    if isinstance(value, str):
        if f.type in ("id", "reference") and len(value) in (15, 18):
            return value[:15]
        return value.lower()
    return value


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def matches(cond: Any, record: Record) -> bool:
    if isinstance(cond, BoolOp):
        if cond.op == "AND":
            return all(matches(p, record) for p in cond.parts)
        if cond.op == "OR":
            return any(matches(p, record) for p in cond.parts)
        return not matches(cond.parts[0], record)
    actual = cond.get(record)
    op = cond.op
    if cond.field.type in _SOQL_TYPE_NAMES:
        actual = _as_time(cond.field, actual)
        if isinstance(cond.value, DateRange):
            return _compare_range(cond.field, op, actual, cond.value)
        if op in ("IN", "NOT IN"):
            found = any(
                _compare_range(cond.field, "=", actual, v)
                if isinstance(v, DateRange)
                else actual == _as_time(cond.field, v)
                for v in cond.value
            )
            return found if op == "IN" else not found
        return _compare(op, actual, _as_time(cond.field, cond.value))
    if op == "LIKE":
        return isinstance(actual, str) and _like(cond.value).fullmatch(actual) is not None
    if op in ("IN", "NOT IN"):
        found = _norm(cond.field, actual) in {_norm(cond.field, v) for v in cond.value}
        return found if op == "IN" else not found
    return _compare(op, _norm(cond.field, actual), _norm(cond.field, cond.value))


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if left is None or right is None:
        return False
    try:
        return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
    except TypeError:
        return False


def sort_records(records: list[Record], order: list[OrderItem]) -> list[Record]:
    for item in reversed(order):
        present = [r for r in records if item.get(r) is not None]
        missing = [r for r in records if item.get(r) is None]
        present.sort(key=lambda r: v.lower() if isinstance(v := item.get(r), str) else v, reverse=item.descending)
        records = missing + present if item.nulls_first else present + missing
    return records


# ---- selectivity --------------------------------------------------------------------------------
def uses_index(cond: Any) -> bool:
    """Whether a filter can be answered from an index: a positive comparison on an indexed field, in an AND with
    anything, or in every branch of an OR (Apex Developer Guide, "Working with Very Large SOQL Queries")."""
    if cond is None:
        return False
    if isinstance(cond, BoolOp):
        if cond.op == "AND":
            return any(uses_index(p) for p in cond.parts)
        if cond.op == "OR":
            return all(uses_index(p) for p in cond.parts)
        return False
    if not cond.field.indexed or cond.op in ("!=", "NOT IN") or cond.value is None:
        return False
    return not (cond.op == "LIKE" and cond.value.startswith("%"))


def check_selective(org: Org, obj: SObject, condition: Any) -> None:
    if obj.name in org.large_objects and not uses_index(condition):
        # The exact text of the real timeout is unverified; the code is what clients see on a long-running query.
        raise ApiError(400, "QUERY_TIMEOUT", "Your query request was running for too long.")


# ---- the query endpoint -------------------------------------------------------------------------
@dataclass
class SelectItem:
    name: str  # canonical, possibly `Rel.Field`
    get: Getter


def run_query(org: Org, soql: str, version: str, include_deleted: bool = False) -> dict[str, Any]:
    parser = Parser(org, tokenize(soql), soql)
    parser.expect_kw("SELECT")
    raw_fields: list[str] = []
    count_only = False
    if parser.at_kw("COUNT"):
        parser.next()
        parser.expect_punct("(")
        parser.expect_punct(")")
        count_only = True
    else:
        while True:
            tok = parser.next()
            if tok.kind != "ident" or tok.text.upper() in _KEYWORDS:
                raise malformed_query(f"unexpected token: '{tok.text}'")
            raw_fields.append(tok.text)
            if parser.peek() is None or parser.peek().text != ",":  # type: ignore[union-attr]
                break
            parser.next()
    parser.expect_kw("FROM")
    obj_tok = parser.next()
    obj = org.sobject(obj_tok.text)
    if obj is None:
        raise invalid_type(obj_tok.text)
    select = []
    for raw in raw_fields:
        name, _, get = parser.resolve(obj, raw)
        select.append(SelectItem(name, get))
    condition = None
    order: list[OrderItem] = []
    limit: int | None = None
    offset = 0
    if parser.at_kw("WHERE"):
        parser.next()
        condition = parser.parse_condition(obj)
    if parser.at_kw("ORDER"):
        parser.next()
        parser.expect_kw("BY")
        order = parser.parse_order_by(obj)
    if parser.at_kw("LIMIT"):
        parser.next()
        limit = parser.parse_int()
    if parser.at_kw("OFFSET"):
        parser.next()
        offset = parser.parse_int()
    if parser.peek() is not None:
        raise malformed_query(f"unexpected token: '{parser.peek().text}'")  # type: ignore[union-attr]
    check_selective(org, obj, condition)

    with org.store.lock:
        records = [r for r in org.store.all(obj.name, include_deleted) if condition is None or matches(condition, r)]
        if order:
            records = sort_records(records, order)
        records = records[offset:]
        if limit is not None:
            records = records[:limit]
        if count_only:
            return {"totalSize": len(records), "done": True, "records": []}
        return {
            "totalSize": len(records),
            "done": True,
            "records": [render_selected(org, obj, r, select, version) for r in records],
        }


def render_selected(org: Org, obj: SObject, record: Record, select: list[SelectItem], version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"attributes": {"type": obj.name, "url": sobject_url(version, obj.name, record["Id"])}}
    for item in select:
        if "." not in item.name:
            out[item.name] = item.get(record)
            continue
        rel, _, target_field = item.name.partition(".")
        ref = obj.relationship(rel)
        linked_id = record.get(ref.name) if ref else None
        found = org.store.get(linked_id) if linked_id else None
        if found is None:
            out[rel] = None
            continue
        nested = out.get(rel) or {"attributes": {"type": found[0], "url": sobject_url(version, found[0], linked_id)}}
        nested[target_field] = found[1].get(target_field)
        out[rel] = nested
    return out
