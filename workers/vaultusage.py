"""A vault's usage record: the bytes of its block files and a sequence number that grows with every
change, kept by the vault store itself so that what the dashboard shows can be exact.

The record is 56 bytes at the start of the vault's `usage` file (made by `safefs.open_lock`: 0600,
never through a link), read and written in place under an exclusive `flock` of that file. Every
block is linked into place and every block is removed while that lock is held, so the record
changes with the block files one for one. A change is announced in the record before it is made
(`begin`: the block and its size) and settled after it (`settle`: counted if the block's file is
there, for a link, or gone, for a removal), so a process killed half-way leaves the change to be
settled by whoever takes the lock next, from the file itself: no block is counted twice or missed.

The sequence never goes back: each change makes it the larger of one more and the wall clock in
nanoseconds, so a record made again from scratch (its file deleted) still orders after the old one.
Reports of the record (vault id, sequence, bytes) go into job results; the dashboard keeps the one
with the highest sequence.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator import safefs

RECORD = struct.Struct("<qqq32s")  # sequence, bytes, the pending change's delta and block digest


class UsageRecord:
    """The record, open and locked (see `locked`)."""

    def __init__(self, fd: int, present: Callable[[str], bool], measure: Callable[[], int]) -> None:
        self._fd = fd
        self._present = present
        data = os.pread(fd, RECORD.size, 0)
        if len(data) == RECORD.size:
            self.sequence, self.bytes, self._delta, digest = RECORD.unpack(data)
            self._digest = digest.hex()
        else:  # a new record, or a store older than records: counted once from its files
            self.sequence, self.bytes, self._delta, self._digest = 0, measure(), 0, ""
            self._write()

    def begin(self, delta: int, digest: str) -> None:
        """Announce a link (`delta` > 0) or a removal (< 0) of block `digest`, about to be made."""
        self._delta, self._digest = delta, digest
        os.pwrite(self._fd, self._packed(), 0)

    def settle(self) -> None:
        """Count the announced change if it happened (the block's file is there after a link, or gone
        after a removal), then clear it."""
        if not self._delta:
            return
        if self._present(self._digest) == (self._delta > 0):
            self.bytes += self._delta
        self._delta, self._digest = 0, ""
        self._write()

    def measured(self, stored: int) -> None:
        """Replace the count with a measurement taken while nothing can change the blocks."""
        self.bytes, self._delta, self._digest = stored, 0, ""
        self._write()

    def _write(self) -> None:
        self.sequence = max(self.sequence + 1, time.time_ns())
        os.pwrite(self._fd, self._packed(), 0)

    def _packed(self) -> bytes:
        return RECORD.pack(self.sequence, self.bytes, self._delta, bytes.fromhex(self._digest or "00" * 32))


@contextmanager
def locked(path: Path, present: Callable[[str], bool], measure: Callable[[], int]) -> Iterator[UsageRecord]:
    """The record at `path`, under its exclusive lock, with any change a killed process left settled."""
    fd = safefs.open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        record = UsageRecord(fd, present, measure)
        record.settle()
        yield record
    finally:
        os.close(fd)  # and the lock with it


def peek(path: Path) -> tuple[int, int] | None:
    """(sequence, bytes) as last written, without settling or writing anything; None without a record.
    A change announced and not yet settled is left out."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        data = os.pread(fd, RECORD.size, 0)
    finally:
        os.close(fd)
    if len(data) != RECORD.size:
        return None
    sequence, stored, _, _ = RECORD.unpack(data)
    return sequence, stored
