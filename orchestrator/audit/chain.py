"""A hash chain over the stored event history.

Each stored event (as stored: encrypted when the event store is) gets a content hash over its
originator, version, topic and state, and a chain hash over the previous chain hash, its
notification id and its content hash. The chain follower appends them to `audit_chain` in the read
store as events arrive and records an `AuditCheckpoint` event every CHECKPOINT_EVERY events.

`verify` recomputes the chain from the event store and compares it with what was recorded: an event
changed, deleted, inserted or moved by anyone writing to the database directly is found and named.
Events stored after the chain's head are reported as not yet chained. (Whoever can rewrite both the
events and the chain table can hide a change from this check alone: keep the head `verify` prints,
or the checkpoints, somewhere else, and pass it back with `expect`.)
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from orchestrator import commands as c
from orchestrator.domain import AuditCheckpoint
from orchestrator.domain.base import AggregateSnapshot
from orchestrator.follower import BATCH, Follower
from projections.store import ReadStore

log = logging.getLogger(__name__)

GENESIS = "0" * 64
CHECKPOINT_EVERY = 1000
AUDITOR = "system:audit"
TABLE = ("CREATE TABLE IF NOT EXISTS {t} (notification_id BIGINT PRIMARY KEY, originator_id TEXT NOT NULL, "
         "originator_version BIGINT NOT NULL, topic TEXT NOT NULL, event_hash TEXT NOT NULL, chain_hash TEXT NOT NULL)")


def event_hash(n: Notification) -> str:
    h = hashlib.sha256()
    for part in (str(n.originator_id), str(n.originator_version), n.topic):
        h.update(part.encode())
        h.update(b"\0")
    h.update(bytes(n.state))
    return h.hexdigest()


def chain_hash(previous: str, notification_id: int, content: str) -> str:
    return hashlib.sha256(f"{previous}:{notification_id}:{content}".encode()).hexdigest()


def ensure_table(store: ReadStore) -> None:
    store.create_tables(TABLE.format(t=store.t("audit_chain")))


def notifications(app: Any, start: int = 1, stop: int | None = None, topics: Sequence[str] = ()) -> Iterator[Notification]:
    """Every stored event from `start` (of `topics` when given), in notification order, read in batches."""
    head = app.recorder.max_notification_id() or 0
    stop = head if stop is None else min(stop, head)
    while start <= stop:
        batch = app.recorder.select_notifications(start=start, limit=BATCH, stop=stop, topics=topics)
        if not batch:
            return
        yield from batch
        start = batch[-1].id + 1


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
        if last and not self._still_there(last[0]):
            return 0
        batch = self.app.recorder.select_notifications(start=position + 1, limit=BATCH, stop=head)
        if not batch:
            return 0
        with self.store.transaction() as tx:
            if not self.store.advance(tx, self.name, batch[-1].id):
                return 0
            previous = last[0]["chain_hash"] if last else GENESIS
            for n in batch:
                content = event_hash(n)
                previous = chain_hash(previous, n.id, content)
                tx.execute(f"INSERT INTO {table} (notification_id, originator_id, originator_version, topic, "
                           "event_hash, chain_hash) VALUES (?, ?, ?, ?, ?, ?)",
                           (n.id, str(n.originator_id), n.originator_version, n.topic, content, previous))
        self.known_position = batch[-1].id
        self._checkpoint(position, batch[-1].id, previous)
        return len(batch)

    def _still_there(self, last: dict[str, Any]) -> bool:
        """The last chained event must be stored as it was: if the history changed under the chain,
        the chain stops (and says so) rather than extend a tampered history."""
        found = self.app.recorder.select_notifications(start=int(last["notification_id"]), limit=1)
        if found and found[0].id == int(last["notification_id"]) and event_hash(found[0]) == last["event_hash"]:
            return True
        if not self.halted:
            log.error("the stored history changed at notification %s after it was chained; the audit chain "
                      "stops here: run `backupctl audit verify`", last["notification_id"])
        self.halted = True
        return False

    def _checkpoint(self, before: int, after: int, head_hash: str) -> None:
        """One checkpoint per CHECKPOINT_EVERY events, at the batch end that crossed the mark."""
        if after // CHECKPOINT_EVERY > before // CHECKPOINT_EVERY:
            self.orchestrator.handle(c.RecordAuditCheckpoint(position=after, chain_hash=head_hash), AUDITOR)


@dataclass
class Finding:
    kind: str  # modified | deleted | inserted | reordered | chain_altered | checkpoint_mismatch | head_mismatch | snapshot_mismatch
    notification_id: int
    originator_id: str = ""
    originator_version: int = 0
    topic: str = ""
    detail: str = ""

    def describe(self) -> str:
        what = f"{self.topic} v{self.originator_version} of {self.originator_id}" if self.topic else ""
        where = f"notification {self.notification_id} " if self.notification_id else ""  # 0: not an event
        return f"{self.kind}: {where}{what} {self.detail}".strip()


@dataclass
class Report:
    checked: int = 0
    chained: int = 0
    unchained: int = 0  # events stored after the chain's head
    head_position: int = 0
    head_hash: str = GENESIS
    checkpoints: int = 0
    snapshots: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class _Row:
    notification_id: int
    originator_id: str
    originator_version: int
    topic: str
    event_hash: str
    chain_hash: str = ""


def verify(app: Any, store: ReadStore, expect: tuple[int, str] | None = None,
           progress: Callable[[int, int], None] | None = None) -> Report:
    """Recompute the chain from the event store and compare it with the recorded one."""
    ensure_table(store)
    recorded = [_Row(int(r["notification_id"]), r["originator_id"], int(r["originator_version"]), r["topic"],
                     r["event_hash"], r["chain_hash"])
                for r in store.fetch(f"SELECT * FROM {store.t('audit_chain')} ORDER BY notification_id")]
    report = Report(chained=len(recorded))
    head = recorded[-1].notification_id if recorded else 0
    total = app.recorder.max_notification_id() or 0
    stored: list[_Row] = []
    checkpoint_topic = get_topic(AuditCheckpoint.Created)
    checkpoints: list[tuple[int, Notification]] = []
    for n in notifications(app):
        report.checked += 1
        stored.append(_Row(n.id, str(n.originator_id), n.originator_version, n.topic, event_hash(n)))
        if n.topic == checkpoint_topic:
            checkpoints.append((n.id, n))
        if progress and report.checked % BATCH == 0:
            progress(report.checked, total)
    findings, report.unchained = _compare(recorded, stored)
    report.findings += findings
    recomputed = _recompute(stored)
    if not report.findings:
        report.findings += _chain_table_checks(recorded, recomputed)
    report.head_position, report.head_hash = (head, recomputed.get(head, GENESIS)) if recorded else (0, GENESIS)
    for notification_id, n in checkpoints:
        cp = app.mapper.to_domain_event(n)
        report.checkpoints += 1
        if cp.position in recomputed and recomputed[cp.position] != cp.chain_hash:
            report.findings.append(Finding("checkpoint_mismatch", cp.position, detail=(
                f"the history up to here no longer gives the hash checkpoint {notification_id} recorded")))
    report.findings += _snapshot_checks(app, stored, report)
    if expect is not None:
        position, expected = expect
        if recomputed.get(position) != expected:
            report.findings.append(Finding("head_mismatch", position, detail="differs from the hash kept elsewhere"))
    if progress:
        progress(report.checked, total)
    return report


def _snapshot_checks(app: Any, stored: list[_Row], report: Report) -> list[Finding]:
    """Every stored snapshot must hold the state its aggregate's events give at its version: a
    snapshot is not an event, but a command loads the aggregate from it. A mismatch names the
    aggregate and version; snapshots are derived, so deleting the row is the repair."""
    if app.snapshots is None or not app.snapshotting_intervals:
        return []
    smallest = min(app.snapshotting_intervals.values())
    candidates: dict[str, str] = {}  # aggregates with enough events to have a snapshot -> a topic of theirs
    for row in stored:
        if row.originator_version >= smallest:
            candidates.setdefault(row.originator_id, row.topic)
    findings: list[Finding] = []
    for originator_id, aggregate_topic in sorted(candidates.items()):
        aggregate_id = UUID(originator_id)
        try:
            snapshots = list(app.snapshots.get(aggregate_id))
        except ValueError as exc:  # unreadable bytes: not JSON, or not our cipher's
            findings.append(Finding("snapshot_mismatch", 0, originator_id, 0, aggregate_topic,
                                    f"a snapshot does not read back ({exc})"))
            continue
        for snapshot in snapshots:
            report.snapshots += 1
            events = app.events.get(aggregate_id, lte=snapshot.originator_version)
            rebuilt = project_aggregate(None, events)
            if rebuilt is None or AggregateSnapshot.take(rebuilt).state != snapshot.state:
                findings.append(Finding(
                    "snapshot_mismatch", 0, originator_id, snapshot.originator_version, snapshot.topic,
                    "the snapshot differs from the state its events give: delete it (it is derived) and "
                    "look for how it was changed"))
    return findings


def _recompute(stored: list[_Row]) -> dict[int, str]:
    previous, hashes = GENESIS, {}
    for row in stored:
        previous = chain_hash(previous, row.notification_id, row.event_hash)
        hashes[row.notification_id] = previous
    return hashes


def _chain_table_checks(recorded: list[_Row], recomputed: dict[int, str]) -> list[Finding]:
    """With every event in place, the recorded chain hashes must follow from them."""
    return [Finding("chain_altered", r.notification_id, r.originator_id, r.originator_version, r.topic,
                    "the chain table's hash here does not follow from the events")
            for r in recorded if recomputed.get(r.notification_id) != r.chain_hash][:1]


def _compare(recorded: list[_Row], stored: list[_Row]) -> tuple[list[Finding], int]:
    """Align what was chained with what is stored now (by content) and name every difference;
    events stored after the last chained one are new, not yet chained (counted, not findings)."""
    matcher = difflib.SequenceMatcher(None, [r.event_hash for r in recorded], [s.event_hash for s in stored],
                                      autojunk=False)
    deleted: list[_Row] = []
    inserted: list[_Row] = []
    findings: list[Finding] = []
    unchained = 0
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "insert" and i1 == len(recorded) and j2 == len(stored):
            unchained = j2 - j1
            continue
        if op == "equal":  # the same events in the same order (ids shifted by an insert or delete before them)
            continue
        olds, news = recorded[i1:i2], stored[j1:j2]
        if op == "replace":
            by_identity = {(s.originator_id, s.originator_version): s for s in news}
            for old in olds:
                new = by_identity.pop((old.originator_id, old.originator_version), None)
                if new is None:
                    deleted.append(old)
                elif new.event_hash != old.event_hash:
                    findings.append(_finding("modified", new, "its stored content changed after it was chained"))
                elif new.notification_id != old.notification_id:
                    findings.append(_finding("reordered", new, "stored under another notification id"))
            inserted += by_identity.values()
        deleted += olds if op == "delete" else []
        inserted += news if op == "insert" else []
    moved = {r.event_hash for r in deleted} & {s.event_hash for s in inserted}
    findings += [_finding("reordered", s, f"moved from notification {r.notification_id}")
                 for s in inserted if s.event_hash in moved
                 for r in deleted if r.event_hash == s.event_hash]
    findings += [_finding("deleted", r, "was chained and is no longer stored") for r in deleted
                 if r.event_hash not in moved]
    findings += [_finding("inserted", s, "is stored before the chain's head but was never chained") for s in inserted
                 if s.event_hash not in moved]
    return sorted(findings, key=lambda f: f.notification_id), unchained


def _finding(kind: str, row: _Row, detail: str) -> Finding:
    return Finding(kind, row.notification_id, row.originator_id, row.originator_version, row.topic, detail)
