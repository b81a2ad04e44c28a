"""Payload encryption: an AES-GCM `PayloadCodec`, so caller names, phone numbers and notes never reach Temporal's
history in plaintext.

Keys come from `FLEXSF_ENCRYPTION_KEYS`, or from the file `FLEXSF_ENCRYPTION_KEYS_FILE` names (same format; the compose
stack's setup step creates it with one fresh key: `python -m flexsf.codec create-key-file PATH`): comma-separated
`keyid:base64key` pairs of 32-byte (AES-256) keys. The first is the current key (every new payload is encrypted with
it); all of them decrypt. Rotating = prepending a new key and keeping the old ones for as long as histories written
with them exist. Each encrypted payload carries its key id in the `encryption-key-id` metadata, so the key that wrote
it is found again.

Messages here name key ids and positions, never key material; a decryption error names the payload's key id only,
never which ids are configured (the codec server answers callers with it).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


def read_key_file(path: Path | str) -> EncryptionKeys:
    """The keys in `path` (FLEXSF_ENCRYPTION_KEYS' format; line breaks count as commas). Errors name the file and the
    entry, never a key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EncryptionKeyError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EncryptionKeyError(
            f"{path} cannot be read: {getattr(exc, 'strerror', None) or type(exc).__name__}"
        ) from None
    try:
        return parse_keys(text.replace("\n", ","))
    except EncryptionKeyError as exc:
        raise EncryptionKeyError(f"{path}: {exc}") from None


def create_key_file(path: Path | str, key_id: str | None = None) -> bool:
    """Write one fresh key to `path` (owner-only) unless a file is there already; True when it wrote one.

    An existing file is left as it is, but must hold valid keys. The new file appears whole or not at all (written
    beside it, then linked into place, which fails if another writer got there first)."""
    path = Path(path)
    if path.exists():
        read_key_file(path)
        return False
    key_id = key_id or time.strftime("k%Y%m%d", time.gmtime())
    if not _KEY_ID.match(key_id):
        raise EncryptionKeyError("a key id is 1-64 letters, digits, '.', '_' or '-'")
    fd, staged = tempfile.mkstemp(dir=path.parent, prefix=".keys-")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"{key_id}:{generate_key()}\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(staged, path)
        except FileExistsError:
            read_key_file(path)
            return False
    finally:
        os.unlink(staged)
    return True


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
                # Which ids are configured is not the caller's business: name only the payload's own (shortened).
                raise PayloadDecryptionError(
                    f"payload encrypted with unknown key id {key_id[:64]!r}"
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


USAGE = "usage: python -m flexsf.codec create-key-file PATH"


def main(argv: list[str] | None = None) -> int:
    """`python -m flexsf.codec create-key-file PATH`: the compose stack's setup step. Prints whether it created the
    file, never a key."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "create-key-file":
        print(USAGE, file=sys.stderr)
        return 2
    try:
        created = create_key_file(args[1])
    except (EncryptionKeyError, OSError) as exc:
        print(f"flexsf: encryption key file: {exc}", file=sys.stderr)
        return 1
    print(f"{args[1]}: {'created with one new key' if created else 'exists, keys valid; left as it is'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
