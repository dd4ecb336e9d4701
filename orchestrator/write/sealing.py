"""Sealing stored events with the audit key (BACKUP_AUDIT_KEY): each event's stored JSON is
preceded by MARK and an HMAC-SHA256 over its originator, version, topic and JSON, so that an event
written by anyone without the key (a row inserted with SQL, or one changed in place) is recognised,
and a sealed event cannot be moved to another originator, version or type. The seal goes inside the
event cipher's encryption, when the store has one. JSON starts with `{`, so a sealed state and an
unsealed one (written before the key was set) are told apart without doubt.

The witness heads (projections/witness.py) are signed with the same key."""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum
from uuid import UUID

MARK = b"BKA1"
MAC_SIZE = hashlib.sha256().digest_size
HEADER = len(MARK) + MAC_SIZE


class Seal(str, Enum):
    VALID = "valid"
    MISSING = "missing"  # stored without a seal
    FORGED = "forged"  # a seal that the key did not make for this event


def _mac(key: bytes, originator_id: UUID | str, version: int, topic: str, payload: bytes) -> bytes:
    head = f"{UUID(str(originator_id))}:{version}:{topic}:".encode()
    return hmac.new(key, head + payload, hashlib.sha256).digest()


def seal(key: bytes, originator_id: UUID, version: int, topic: str, payload: bytes) -> bytes:
    return MARK + _mac(key, originator_id, version, topic, payload) + payload


def unsealed(data: bytes) -> bytes:
    """The event's JSON, with its seal (if any) taken off."""
    return data[HEADER:] if data[: len(MARK)] == MARK else data


def check(key: bytes, originator_id: UUID | str, version: int, topic: str, data: bytes) -> Seal:
    """Whether `data` (a state as stored, decrypted and decompressed) carries this event's seal."""
    if data[: len(MARK)] != MARK or len(data) < HEADER:
        return Seal.MISSING
    try:
        expected = _mac(key, originator_id, version, topic, data[HEADER:])
    except ValueError:  # an originator that is not a UUID: not one the key sealed
        return Seal.FORGED
    return Seal.VALID if hmac.compare_digest(expected, data[len(MARK) : HEADER]) else Seal.FORGED


def sign(key: bytes, message: bytes) -> str:
    """A hex HMAC-SHA256 of `message` (a witness head's canonical JSON)."""
    return hmac.new(key, b"witness:" + message, hashlib.sha256).hexdigest()


def signed_by(key: bytes, message: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(key, message), signature)
