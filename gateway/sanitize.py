"""Text from a request made safe for one log line: no control characters, bounded length.

A value a caller chose (even a verified one: a TaskRouter parameter carries what the caller typed) may hold a newline
that would forge a second log line in a terminal, an escape sequence that rewrites the terminal, or a megabyte. Each
control character (C0, DEL, C1, and the Unicode line and paragraph separators) and lone surrogate (which no UTF-8
stream can write) is shown as its escape (`\\n`, `\\x1b`, `\\u2028`, `\\ud800`), and anything past `limit` characters
is cut with `…`.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, limit: int = 64) -> str:
    """`value` as one printable line of at most `limit` characters (plus `…` when cut)."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    text = _CONTROL.sub(_escape, text[:limit])
    return text + "…" if cut else text
