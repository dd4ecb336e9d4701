"""The witness: signed heads of the audit hash chain, appended outside the database
(BACKUP_AUDIT_WITNESS, a directory; an object-lock bucket would do the same job), so that whoever can
write the event store and the read store, but not the witness and not the audit key, cannot roll the
history back, rebuild the chain over a changed history, or cut it short without `audit verify`
naming it.

The chain follower appends a head at least every HEAD_EVERY events and, while events come, every
HEAD_SECONDS: one file per head, named by its position and hash, written once (created exclusively,
made durable, then read-only) and never rewritten. A head holds the chain's position and hash there,
the first notification id the audit key sealed (`authenticated_from`: every event from there on must
carry a valid seal), when it was written, and its signature (HMAC-SHA256 with the audit key)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator import safefs
from orchestrator.write import sealing

log = logging.getLogger(__name__)

HEAD_EVERY = 100  # events
HEAD_SECONDS = 60.0
NAME = re.compile(r"head-(\d{12})-([0-9a-f]{16})\.json")
READ_ONLY = 0o400


class Head(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    position: int
    chain_hash: str
    authenticated_from: int  # the first sealed notification id; 0: none sealed yet
    written_at: datetime
    signature: str = ""

    def message(self) -> bytes:
        """What the signature covers: every field but itself, as canonical JSON."""
        return json.dumps(
            self.model_dump(mode="json", exclude={"signature"}), sort_keys=True, separators=(",", ":")
        ).encode()

    @property
    def file_name(self) -> str:
        return f"head-{self.position:012d}-{self.chain_hash[:16]}.json"


@dataclass
class Read:
    """The witness as `audit verify` reads it: its heads by position, and what is wrong with any file."""

    heads: list[Head] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file name, what is wrong)

    @property
    def newest(self) -> Head | None:
        return self.heads[-1] if self.heads else None


class Witness:
    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self.key = key
        self.last_position = 0
        self.last_time = 0.0  # time.monotonic() of the last head appended

    def due(self, position: int, *, idle: bool = False) -> bool:
        """Whether the chain at `position` gets a head now: HEAD_EVERY events after the last head,
        or (`idle`: no event is waiting) HEAD_SECONDS after it."""
        if position <= self.last_position:
            return False
        if position - self.last_position >= HEAD_EVERY:
            return True
        return idle and time.monotonic() - self.last_time >= HEAD_SECONDS

    def append(self, position: int, chain_hash: str, authenticated_from: int) -> Head:
        """Write the signed head for the chain at `position` (once: a head of the same position and
        hash written by another follower is left as it is)."""
        head = Head(
            position=position,
            chain_hash=chain_hash,
            authenticated_from=authenticated_from,
            written_at=datetime.now(UTC),
        )
        head = head.model_copy(update={"signature": sealing.sign(self.key, head.message())})
        directory = safefs.make_dirs(self.directory, link_ok=True)
        path = directory / head.file_name
        try:
            fd = safefs.create(path)
        except FileExistsError:
            log.info("the witness holds a head at %d already", position)
        else:
            try:
                os.write(fd, head.model_dump_json().encode())
                os.fchmod(fd, READ_ONLY)
                os.fsync(fd)
            finally:
                os.close(fd)
            _sync_dir(directory)
        self.last_position, self.last_time = position, time.monotonic()
        return head

    def read(self) -> Read:
        """Every head, checked against its signature and its file name, by position."""
        found = Read()
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.iterdir()):
            named = NAME.fullmatch(path.name)
            if named is None:
                found.problems.append((path.name, "is not a head's file name (head-<position>-<hash>.json)"))
                continue
            try:
                head = Head.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                found.problems.append((path.name, f"does not read as a head ({type(exc).__name__})"))
                continue
            if not sealing.signed_by(self.key, head.message(), head.signature):
                found.problems.append((path.name, "its signature is not the audit key's: it was not written by us"))
            elif head.file_name != path.name:
                found.problems.append((path.name, "its name does not match the position and hash it holds"))
            else:
                found.heads.append(head)
        found.heads.sort(key=lambda h: (h.position, h.written_at))
        return found

    def newest(self) -> Head | None:
        """The newest head by its file name, read and checked alone (a witness of a year holds many)."""
        if not self.directory.is_dir():
            return None
        names = sorted((p.name for p in self.directory.iterdir() if NAME.fullmatch(p.name)), reverse=True)
        for name in names:
            try:
                head = Head.model_validate_json((self.directory / name).read_bytes())
            except (OSError, ValidationError):
                continue
            if sealing.signed_by(self.key, head.message(), head.signature) and head.file_name == name:
                return head
        return None

    def resume(self) -> Head | None:
        """Start from the newest head already written (a restarted follower writes no head twice)."""
        newest = self.newest()
        if newest is not None:
            self.last_position = newest.position
            self.last_time = time.monotonic()
        return newest


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
