"""Twilio-shaped resource identifiers: a two-letter prefix and 32 lowercase hex digits."""

from __future__ import annotations

import hashlib
import secrets


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def stable_sid(prefix: str, seed: str) -> str:
    """The same sid on every start, so demo configuration (.env files, Salesforce seed data) can name it."""
    return prefix + hashlib.sha256(seed.encode()).hexdigest()[:32]
