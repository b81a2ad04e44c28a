"""Record storage: SQLite (a file, or `:memory:`) as the durable copy, a dict per sobject as the read path.

One re-entrant lock guards both, and request handlers hold it across read-check-write sequences
(upserts, unique external ids) so concurrent requests cannot create duplicates.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flexsf.salesforce_ids import to_18

Record = dict[str, Any]
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Characters 4-5 of a real id are the pod/instance; a fixed pair makes ours look alike.
_POD = "8d"
# Sequence numbers below this are reserved for the well-known demo records (see demo.py).
FIRST_GENERATED_SEQ = 1000


def make_id(prefix: str, seq: int) -> str:
    digits = ""
    while seq:
        seq, rem = divmod(seq, 62)
        digits = _BASE62[rem] + digits
    return to_18(prefix + _POD + digits.rjust(10, "0"))


class Store:
    def __init__(self, path: str = ":memory:") -> None:
        self.lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, type TEXT NOT NULL, data TEXT NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self._by_type: dict[str, dict[str, Record]] = {}
        self._type_of: dict[str, str] = {}
        for record_id, sobject, data in self._db.execute("SELECT id, type, data FROM records ORDER BY rowid"):
            self._by_type.setdefault(sobject, {})[record_id] = json.loads(data)
            self._type_of[record_id] = sobject

    def close(self) -> None:
        with self.lock:
            self._db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One SQLite transaction for many writes (seeding); the lock is held throughout."""
        with self.lock:
            self._db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def is_empty(self) -> bool:
        with self.lock:
            return not self._type_of

    def next_seq(self, name: str, start: int = FIRST_GENERATED_SEQ) -> int:
        with self.lock:
            row = self._db.execute("SELECT value FROM sequences WHERE name = ?", (name,)).fetchone()
            value = row[0] + 1 if row else start
            self._db.execute("INSERT OR REPLACE INTO sequences (name, value) VALUES (?, ?)", (name, value))
            return value

    def new_id(self, prefix: str) -> str:
        return make_id(prefix, self.next_seq(f"id:{prefix}"))

    def put(self, sobject: str, record: Record) -> None:
        """Insert or replace a whole record (the caller has validated it)."""
        record_id = record["Id"]
        with self.lock:
            self._db.execute(
                "INSERT OR REPLACE INTO records (id, type, data) VALUES (?, ?, ?)",
                (record_id, sobject, json.dumps(record)),
            )
            self._by_type.setdefault(sobject, {})[record_id] = record
            self._type_of[record_id] = sobject

    def get(self, record_id: str) -> tuple[str, Record] | None:
        with self.lock:
            sobject = self._type_of.get(record_id)
            if sobject is None:
                return None
            return sobject, self._by_type[sobject][record_id]

    def all(self, sobject: str, include_deleted: bool = False) -> list[Record]:
        """Records in insertion order. Callers must treat them as read-only."""
        with self.lock:
            records = list(self._by_type.get(sobject, {}).values())
        if include_deleted:
            return records
        return [r for r in records if not r.get("IsDeleted")]
