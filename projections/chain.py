"""The audit chain's follower: a hash chain over the stored event history, written as events arrive.

Each stored event (as stored: encrypted when the event store is) gets a content hash over its
originator, version, topic and state, and a chain hash over the previous chain hash, its
notification id and its content hash. The follower appends them to `audit_chain` in the read store
(beside the read models, one transaction with its position) and records an `AuditCheckpoint` event
every CHECKPOINT_EVERY events. Checking the chain against the history is `orchestrator/audit/verify.py`'s.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from orchestrator.write import commands as c
from projections.follower import BATCH, Follower
from projections.store import ReadStore
from projections.stored_rows import content_hash, identity, read_rows

log = logging.getLogger(__name__)

GENESIS = "0" * 64
CHECKPOINT_EVERY = 1000
AUDITOR = "system:audit"
TABLE = (
    "CREATE TABLE IF NOT EXISTS {t} (notification_id BIGINT PRIMARY KEY, originator_id TEXT NOT NULL, "
    "originator_version BIGINT NOT NULL, topic TEXT NOT NULL, event_hash TEXT NOT NULL, chain_hash TEXT NOT NULL)"
)


def chain_hash(previous: str, notification_id: int, content: str) -> str:
    return hashlib.sha256(f"{previous}:{notification_id}:{content}".encode()).hexdigest()


def ensure_table(store: ReadStore) -> None:
    store.create_tables(TABLE.format(t=store.t("audit_chain")))


class ChainFollower(Follower):
    name = "audit_chain"

    def __init__(self, app: Any, store: ReadStore) -> None:
        super().__init__(app, store)
        self.orchestrator = app
        self.halted = False
        ensure_table(store)

    def process(self, event: Any, notification_id: int) -> None:  # pragma: no cover - run_once works on raw rows
        raise NotImplementedError

    def run_once(self, head: int | None = None) -> int:
        span = self.behind(head)
        if span is None:
            return 0
        position, head = span
        table = self.store.t("audit_chain")
        last = self.store.fetch(f"SELECT * FROM {table} ORDER BY notification_id DESC LIMIT 1")
        reached = int(last[0]["notification_id"]) if last else 0
        if reached > position:  # another process chained meanwhile (its rows and position commit together)
            position = self.store.position(self.name)
        if not self._continues(last[0] if last else None, reached, position):
            return 0
        batch = read_rows(self.app, position + 1, head, BATCH)
        if not batch:
            return 0
        end = batch[-1].notification_id
        with self.store.transaction() as tx:
            if not self.store.advance(tx, self.name, end):
                return 0
            previous = last[0]["chain_hash"] if last else GENESIS
            for row in batch:
                content = content_hash(row)
                previous = chain_hash(previous, row.notification_id, content)
                tx.execute(
                    f"INSERT INTO {table} (notification_id, originator_id, originator_version, topic, "
                    "event_hash, chain_hash) VALUES (?, ?, ?, ?, ?, ?)",
                    (row.notification_id, *identity(row), content, previous),
                )
        self.known_position = end
        self._checkpoint(position, end, previous)
        return len(batch)

    def _continues(self, last: dict[str, Any] | None, reached: int, position: int) -> bool:
        """The chain goes on only from where it stopped, over the history as it was chained: its
        table's last row (at `reached`) is at the follower's position and that event is stored as it
        was. Else the chain stops (and says so) rather than extend a tampered history or chain."""
        if reached != position:
            return self._halt(f"the chain table ends at notification {reached} but the chain had reached {position}")
        if last is None:
            return True
        found = read_rows(self.app, reached, reached, 1)
        if found and found[0].notification_id == reached and content_hash(found[0]) == last["event_hash"]:
            return True
        return self._halt(f"the stored history changed at notification {reached} after it was chained")

    def _halt(self, why: str) -> bool:
        if not self.halted:
            log.error("%s; the audit chain stops here: run `backupctl audit verify`", why)
        self.halted = True
        return False

    def _checkpoint(self, before: int, after: int, head_hash: str) -> None:
        """One checkpoint per CHECKPOINT_EVERY events, at the batch end that crossed the mark."""
        if after // CHECKPOINT_EVERY > before // CHECKPOINT_EVERY:
            self.orchestrator.handle(c.RecordAuditCheckpoint(position=after, chain_hash=head_hash), AUDITOR)
