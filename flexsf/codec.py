"""Payload encryption: an AES-GCM `PayloadCodec`, so caller names, phone numbers and notes never reach Temporal's
history in plaintext.

Keys come from `FLEXSF_ENCRYPTION_KEYS`: comma-separated `keyid:base64key` pairs of 32-byte (AES-256) keys. The first
is the current key (every new payload is encrypted with it); all of them decrypt. Rotating = prepending a new key and
keeping the old ones for as long as histories written with them exist. Each encrypted payload carries its key id in
the `encryption-key-id` metadata, so the key that wrote it is found again.

Messages here name key ids and positions, never key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class EncryptionKeyError(ValueError):
    """`FLEXSF_ENCRYPTION_KEYS` is malformed; the message names the entry, never its key."""


class PayloadDecryptionError(ValueError):
    """A payload could not be decrypted: an unknown key id, or data that does not authenticate under its key."""


@dataclass(frozen=True, repr=False)
class EncryptionKeys:
    """The configured keys in order; `current_id` encrypts, every id decrypts. Never shows key material in a repr."""

    keys: dict[str, bytes]

    @property
    def current_id(self) -> str:
        return next(iter(self.keys))

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    def __repr__(self) -> str:
        return f"EncryptionKeys(ids={self.ids})"


def parse_keys(text: str) -> EncryptionKeys:
    """`"k2:<base64>,k1:<base64>"` → keys, the first one current; `EncryptionKeyError` never echoes a key."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        raise EncryptionKeyError("no key given; expected comma-separated keyid:base64key pairs")
    keys: dict[str, bytes] = {}
    for position, entry in enumerate(entries, start=1):
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not key_id or not encoded:
            raise EncryptionKeyError(f"entry {position} is not keyid:base64key")
        if not _KEY_ID.match(key_id):
            raise EncryptionKeyError(f"entry {position}: a key id is 1-64 letters, digits, '.', '_' or '-'")
        if key_id in keys:
            raise EncryptionKeyError(f"key id {key_id!r} appears twice")
        try:
            # Standard or URL-safe alphabet, padding required; anything else is refused rather than guessed at.
            key = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(f"key {key_id!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise EncryptionKeyError(f"key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
        keys[key_id] = key
    return EncryptionKeys(keys)


def generate_key() -> str:
    """A fresh random key, base64 (what goes after `keyid:` in FLEXSF_ENCRYPTION_KEYS)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


class AesGcmCodec(PayloadCodec):
    """Encrypts each whole payload (data and metadata) with AES-256-GCM under the current key.

    Layout of the encrypted data: 12-byte random nonce + ciphertext + 16-byte tag. Payloads that are not
    `binary/encrypted` pass through decode unchanged, so histories written before encryption was turned on stay
    readable.
    """

    def __init__(self, keys: EncryptionKeys) -> None:
        self._current_id = keys.current_id
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.keys.items()}

    @property
    def current_key_id(self) -> str:
        return self._current_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.encode_sync(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decode_sync(payloads)

    def encode_sync(self, payloads: Iterable[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._current_id]
        out = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: self._current_id.encode()},
                    data=nonce + cipher.encrypt(nonce, payload.SerializeToString(), None),
                )
            )
        return out

    def decode_sync(self, payloads: Iterable[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                out.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")
            cipher = self._ciphers.get(key_id)
            if cipher is None:
                raise PayloadDecryptionError(
                    f"payload encrypted with unknown key id {key_id!r}; FLEXSF_ENCRYPTION_KEYS has "
                    f"{', '.join(repr(k) for k in self._ciphers)}"
                    if key_id
                    else "encrypted payload has no encryption-key-id metadata"
                )
            data = payload.data
            try:
                plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
            except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
                raise PayloadDecryptionError(
                    f"payload does not decrypt with key {key_id!r} (corrupted, or a different key under that id)"
                ) from None
            decoded = Payload()
            decoded.ParseFromString(plain)
            out.append(decoded)
        return out
