"""A SOQL subset: `SELECT f, Rel.f | COUNT() FROM Obj [WHERE cond] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], …]
[LIMIT n] [OFFSET n]`, where cond combines `= != <> < <= > >= LIKE IN NOT IN` with AND / OR / NOT and parentheses.

Like Salesforce, names are case-insensitive, `=` and LIKE on text ignore case, and ids compare
equal in their 15- and 18-character forms. Subqueries, aggregates other than COUNT(), date
literals such as TODAY, and `nextRecordsUrl` paging are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandboxes.salesforce.errors import invalid_type, malformed_query, no_such_column
from sandboxes.salesforce.records import Org, sobject_url
from sandboxes.salesforce.schema import Field, SObject
from sandboxes.salesforce.store import Record

_TOKEN_RE = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>-?\d+(?:\.\d+)?)
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
            value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(1)), raw[1:-1])
        elif kind == "number":
            value = float(raw) if "." in raw else int(raw)
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

    def parse_value(self) -> Any:
        tok = self.next()
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
            return Comparison(f, get, "!=" if op_tok.text == "<>" else op_tok.text, self.parse_value())
        if op_tok.is_kw("LIKE"):
            value = self.parse_value()
            if not isinstance(value, str):
                raise malformed_query("LIKE needs a string")
            return Comparison(f, get, "LIKE", value)
        negate = False
        if op_tok.is_kw("NOT"):
            negate = True
            op_tok = self.next()
        if op_tok.is_kw("IN"):
            self.expect_punct("(")
            values = [self.parse_value()]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.next()
                values.append(self.parse_value())
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


# ---- evaluation ---------------------------------------------------------------------------------
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
    if op == "LIKE":
        return isinstance(actual, str) and _like(cond.value).fullmatch(actual) is not None
    if op in ("IN", "NOT IN"):
        found = _norm(cond.field, actual) in {_norm(cond.field, v) for v in cond.value}
        return found if op == "IN" else not found
    left, right = _norm(cond.field, actual), _norm(cond.field, cond.value)
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
