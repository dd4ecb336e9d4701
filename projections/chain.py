"""The audit chain's follower: a hash chain over the stored event history, written as events arrive.

Each stored event (as stored: encrypted when the event store is) gets a content hash over its
originator, version, topic and state, and a chain hash over the previous chain hash, its
notification id and its content hash. The follower appends them to `audit_chain` in the read store
(beside the read models, one transaction with its position) and records an `AuditCheckpoint` event
every CHECKPOINT_EVERY events. Checking the chain against the history is `orchestrator/audit/verify.py`'s.

With an audit key, the follower chains only events sealed with it (orchestrator/write/sealing.py):
one that is not (a row written with SQL by someone without the key) stops the chain, so it is never
anchored; with a witness it appends signed heads of the chain there (projections/witness.py).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from orchestrator.write import commands as c
from orchestrator.write.sealing import Seal
from projections.follower import BATCH, Follower
from projections.store import ReadStore
from projections.stored_rows import StoredRow, content_hash, identity, read_rows
from projections.witness import HEAD_EVERY, Witness

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

    def __init__(self, app: Any, store: ReadStore, witness: Witness | None = None) -> None:
        super().__init__(app, store)
        self.orchestrator = app
        self.halted = False
        self.mapper = app.mapper
        self.sealed = getattr(self.mapper, "audit_key", None) is not None
        self.witness = witness
        self.authenticated_from = 0  # the first sealed event chained (0: none yet, as far as known)
        self.head: tuple[int, str] | None = None  # the chain's newest position and hash, once known
        if witness is not None:
            newest = witness.resume()
            self.authenticated_from = newest.authenticated_from if newest else 0
        ensure_table(store)

    def process(self, event: Any, notification_id: int) -> None:  # pragma: no cover - run_once works on raw rows
        raise NotImplementedError

    def run_once(self, head: int | None = None) -> int:
        span = self.behind(head)
        if span is None:
            self._witness_idle()
            return 0
        position, head = span
        table = self.store.t("audit_chain")
        last = self.store.fetch(f"SELECT * FROM {table} ORDER BY notification_id DESC LIMIT 1")
        reached = int(last[0]["notification_id"]) if last else 0
        if reached > position:  # another process chained meanwhile (its rows and position commit together)
            position = self.store.position(self.name)
        if not self._continues(last[0] if last else None, reached, position):
            return 0
        batch = self._authenticated(position, read_rows(self.app, position + 1, head, BATCH))
        if not batch:
            return 0
        end = batch[-1].notification_id
        heads: list[tuple[int, str]] = []
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
                if self.witness is not None and row.notification_id - self._witnessed(heads) >= HEAD_EVERY:
                    heads.append((row.notification_id, previous))
        self.known_position = end
        self.head = (end, previous)
        for at, value in heads:  # once the chain up to there is committed
            self._append_head(at, value)
        self._checkpoint(position, end, previous)
        return len(batch)

    def _authenticated(self, position: int, batch: list[StoredRow]) -> list[StoredRow]:
        """The batch up to the first event the audit key did not seal (that event stops the chain):
        a forged seal always, a missing one once a sealed event was chained (the history from before
        the key was set is not sealed). Without a witness to say where sealing began, a restarted
        follower takes a sealed last chained event (at `position`) to say it began."""
        if not self.sealed:
            return batch
        if not self.authenticated_from and position > 0:
            last = read_rows(self.app, position, position, 1)
            if last and self._seal(last[0]) is Seal.VALID:
                self.authenticated_from = position
        for index, row in enumerate(batch):
            seal = self._seal(row)
            topic = identity(row)[2]
            if seal is Seal.VALID:
                self.authenticated_from = self.authenticated_from or row.notification_id
            elif seal is Seal.FORGED or self.authenticated_from:
                self._halt(
                    f"notification {row.notification_id} ({topic}) is {seal.value}: not sealed with the audit key"
                )
                return batch[:index]
        return batch

    def _seal(self, row: StoredRow) -> Seal:
        originator, version, topic = identity(row)
        return self.mapper.seal_of(originator, version, topic, row.state[1])  # type: ignore[no-any-return]

    def _witnessed(self, pending: list[tuple[int, str]]) -> int:
        assert self.witness is not None
        return pending[-1][0] if pending else self.witness.last_position

    def _append_head(self, position: int, value: str) -> None:
        assert self.witness is not None
        try:
            self.witness.append(position, value, self.authenticated_from)
        except OSError as exc:
            log.error("the audit witness could not be written (%s): the chain goes on, its heads wait", exc)

    def _witness_idle(self) -> None:
        """No event waits: the newest chained position gets a head once HEAD_SECONDS passed."""
        if self.witness is None or self.halted:
            return
        if self.head is None:
            last = self.store.fetch(
                f"SELECT * FROM {self.store.t('audit_chain')} ORDER BY notification_id DESC LIMIT 1"
            )
            self.head = (int(last[0]["notification_id"]), last[0]["chain_hash"]) if last else (0, GENESIS)
        if self.witness.due(self.head[0], idle=True):
            self._append_head(*self.head)

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
