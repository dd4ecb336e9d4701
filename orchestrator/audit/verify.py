"""Verifying the hash chain over the stored event history.

Each stored event (as stored: encrypted when the event store is) gets a content hash over its
originator, version, topic and state, and a chain hash over the previous chain hash, its
notification id and its content hash. The chain follower (projections/chain.py) appends them to
`audit_chain` in the read store as events arrive and records an `AuditCheckpoint` event every
CHECKPOINT_EVERY events.

`verify` recomputes the chain from the event store and compares it with what was recorded: an event
changed, deleted, inserted or moved by anyone writing to the database directly is found and named;
so is a chain table cut short (`chain_truncated`: events at or below how far the chain had reached,
by the follower's position or the newest checkpoint, that it no longer holds), and a stored row that
does not read back (`malformed`). Events stored after that reach are not yet chained; `verify` never
extends the chain itself. (Whoever can rewrite the events, the chain table, the follower's position
and the checkpoints can hide a change from this check alone: keep the head `verify` prints
somewhere else, and pass it back with `expect`, or give the deployment an audit key and a witness.)

With the audit key (BACKUP_AUDIT_KEY), every event from the first sealed one on must carry its seal
(orchestrator/write/sealing.py): an event without one is `unauthenticated`, one whose seal the key
did not make is `forged`. With the witness (BACKUP_AUDIT_WITNESS, projections/witness.py),
every signed head must still follow from the stored history (`witness_mismatch`), the history must
reach the newest head (`rolled_back`: the database restored from an older copy, or its newest events
deleted), the chain table must hold what the witness saw chained (`chain_truncated`), every file
there must be a head we signed (`witness_invalid`), and the heads fix where sealing began, so that
stripping every seal is named too.

Stored rows are read as they are (projections/stored_rows.py), not through the library, which would
raise on a malformed one.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.domain import OriginatorIDError, OriginatorVersionError
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from orchestrator.audit import replay
from orchestrator.domain import AuditCheckpoint
from orchestrator.domain.base import AggregateSnapshot
from orchestrator.write.sealing import Seal
from projections.audit_index import AuditIndexFollower, index_row, stated_owner
from projections.audit_index import ensure_tables as ensure_index
from projections.chain import GENESIS, ChainFollower, chain_hash, ensure_table
from projections.follower import BATCH
from projections.store import ReadStore
from projections.stored_rows import Inspector, content_hash, identity, stored_rows
from projections.witness import HEAD_EVERY, Read, Witness

log = logging.getLogger(__name__)

SHOWN_KEYS = 5  # differing rows named per read model


def notifications(
    app: Any, start: int = 1, stop: int | None = None, topics: Sequence[str] = ()
) -> Iterator[Notification]:
    """Every stored event from `start` (of `topics` when given), in notification order, read in batches."""
    head = app.recorder.max_notification_id() or 0
    for section in replay.sections(app, head if stop is None else min(stop, head), start, topics):
        yield from section


@dataclass
class Finding:
    # modified | deleted | inserted | reordered | chain_truncated | chain_altered | checkpoint_mismatch
    # | head_mismatch | malformed | snapshot_mismatch | read_model_mismatch | unauthenticated | forged
    # | witness_mismatch | rolled_back | witness_invalid | index_mismatch
    kind: str
    notification_id: int  # 0: not about one event (a snapshot, a read model); the first of a range
    originator_id: str = ""
    originator_version: int = 0
    topic: str = ""
    detail: str = ""
    table: str = ""  # the read model's table, for read_model_mismatch

    def describe(self) -> str:
        what = f"{self.topic} v{self.originator_version} of {self.originator_id}" if self.topic else self.table
        ranged = self.kind == "chain_truncated"  # its detail names the range
        where = f"notification {self.notification_id}" if self.notification_id and not ranged else ""
        return f"{self.kind}: " + " ".join(part for part in (where, what, self.detail) if part)


@dataclass
class Report:
    checked: int = 0
    chained: int = 0
    unchained: int = 0  # events stored after the chain's reach
    reach: int = 0  # how far the chain had reached: the follower's position or the newest checkpoint's
    head_position: int = 0
    head_hash: str = GENESIS
    checkpoints: int = 0
    snapshots: int = 0
    read_models: int = 0  # read-model tables compared with their replay
    read_models_skipped: str = ""  # why they were not compared, when they were not
    authenticated: int = 0  # events whose seal was checked and holds (0 without the audit key)
    authenticated_from: int = 0  # the first notification id that must be sealed (0: none)
    witness_heads: int = 0  # signed heads read from the witness
    witness_position: int = 0  # the newest head's position
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


@dataclass
class _Scan:
    """What one pass over the stored rows found besides their hashes."""

    rows: list[_Row] = field(default_factory=list)
    checkpoints: list[tuple[int, Any]] = field(default_factory=list)  # (notification id, decoded event)
    malformed: set[str] = field(default_factory=set)  # originators with a malformed row
    seals: list[tuple[_Row, Seal]] = field(default_factory=list)  # with the audit key: each row's seal
    index: IndexCheck | None = None  # the audit index against what the events give


def verify(
    app: Any,
    store: ReadStore,
    expect: tuple[int, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    read_models: bool = False,
    witness: Witness | None = None,
) -> Report:
    """Recompute the chain from the event store and compare it with the recorded one; with
    `read_models`, also every read model with its replay; with `witness`, against its signed heads."""
    ensure_table(store)
    # In this order: every record read after the log's head covers the events up to it (the follower
    # writes rows and position together, and records a checkpoint after them), events stored later
    # are left for the next run.
    total = app.recorder.max_notification_id() or 0
    position = store.position(ChainFollower.name)
    recorded = [
        _Row(
            int(r["notification_id"]),
            r["originator_id"],
            int(r["originator_version"]),
            r["topic"],
            r["event_hash"],
            r["chain_hash"],
        )
        for r in store.fetch(f"SELECT * FROM {store.t('audit_chain')} ORDER BY notification_id")
    ]
    report = Report(chained=len(recorded))
    seen = witness.read() if witness is not None else None
    index = IndexCheck(store)
    scan = _scan(app, total, report, progress, index)
    recomputed = _recompute(scan.rows)
    report.reach, reached_by = _reach(position, scan, seen)
    findings, report.unchained = _compare(recorded, scan.rows, recomputed, report.reach, reached_by)
    report.findings += findings
    if not any(f.kind != "malformed" for f in report.findings):
        report.findings += _chain_table_checks(recorded, recomputed)
    head = recorded[-1].notification_id if recorded else 0
    report.head_position, report.head_hash = (head, recomputed.get(head, GENESIS)) if recorded else (0, GENESIS)
    report.findings += _checkpoint_checks(scan, recomputed, report)
    report.findings += _snapshot_checks(app, scan, report)
    if not report.findings:  # a changed history changes its index too: that is the history's finding
        report.findings += index.findings()
    report.findings += _seal_checks(scan, report, seen)
    if seen is not None:
        report.findings += _witness_checks(seen, scan, recomputed, report)
    if expect is not None:
        position, expected = expect
        if recomputed.get(position) != expected:
            report.findings.append(Finding("head_mismatch", position, detail="differs from the hash kept elsewhere"))
    report.findings.sort(key=lambda f: (f.notification_id == 0, f.notification_id))
    if read_models:
        compare_read_models(app, store, report, progress)
    else:
        report.read_models_skipped = "not asked (the chain only)"
    return report


def _scan(
    app: Any, total: int, report: Report, progress: Callable[[int, int], None] | None, index: IndexCheck
) -> _Scan:
    inspector = Inspector(app)
    scan = _Scan(index=index)
    checkpoint_topic = get_topic(AuditCheckpoint.Created)
    sealed = getattr(app.mapper, "audit_key", None) is not None
    for row in stored_rows(app, total):
        report.checked += 1
        originator, version, topic = identity(row)
        scanned = _Row(row.notification_id, originator, version, topic, content_hash(row))
        scan.rows.append(scanned)
        if sealed:
            scan.seals.append((scanned, app.mapper.seal_of(originator, version, topic, row.state[1])))
        problems, event = inspector.inspect(row)
        if problems:
            scan.malformed.add(originator)
            report.findings.append(
                Finding("malformed", row.notification_id, originator, version, topic, "; ".join(problems))
            )
        else:
            index.add(row.notification_id, event)
            if topic == checkpoint_topic:
                scan.checkpoints.append((row.notification_id, event))
        if progress and report.checked % BATCH == 0:
            progress(report.checked, total)
    if progress:
        progress(report.checked, total)
    return scan


class IndexCheck:
    """The audit index (projections/audit_index.py) up to its position, against the rows the events
    give, compared page by page as the scan goes: an index row deleted, changed or added would hide
    an event from the audit log, or show one that is not there (`index_mismatch`)."""

    PAGE = 2000

    def __init__(self, store: ReadStore) -> None:
        ensure_index(store)
        self.store = store
        self.position = store.position(AuditIndexFollower.name)
        self.owners: dict[str, tuple[str, str]] = {}
        self.pending: list[tuple[Any, ...]] = []
        self.after = 0  # every index row up to here is compared
        self.differing: list[tuple[int, str]] = []  # (notification id, how)
        self.count = 0

    def add(self, notification_id: int, event: Any) -> None:
        entity = str(event.originator_id)
        owner = self.owners[entity] = stated_owner(event, self.owners.get(entity, ("", "")))
        if notification_id <= self.position:
            self.pending.append(index_row(notification_id, event, owner))
            if len(self.pending) >= self.PAGE:
                self._compare(self.pending[-1][0])

    def _compare(self, upto: int) -> None:
        stored = {
            int(r["notification_id"]): tuple(r.values())
            for r in self.store.fetch(
                f"SELECT * FROM {self.store.t('audit_index')} WHERE notification_id > ? AND notification_id <= ? "
                "ORDER BY notification_id",
                (self.after, upto),
            )
        }
        expected = {row[0]: row for row in self.pending}
        for n in sorted(stored.keys() | expected.keys()):
            if n not in stored:
                self._differ(n, "the event is not in the index: the audit log would not show it")
            elif n not in expected:
                self._differ(n, "the index names an event that is not stored")
            elif tuple(str(v) for v in stored[n]) != tuple(str(v) for v in expected[n]):
                self._differ(n, "its index row differs from what its event gives")
        self.pending, self.after = [], upto

    def _differ(self, notification_id: int, how: str) -> None:
        self.count += 1
        if len(self.differing) < SHOWN_KEYS:
            self.differing.append((notification_id, how))

    def findings(self) -> list[Finding]:
        self._compare(self.position)
        if not self.count:
            return []
        shown = "; ".join(f"notification {n}: {how}" for n, how in self.differing)
        first = self.differing[0][0]
        return [
            Finding(
                "index_mismatch",
                first,
                table="audit_index",
                detail=f"{self.count} rows differ from what the events give ({shown}): it was changed outside its "
                "follower; `audit log` reads through it",
            )
        ]


def _reach(position: int, scan: _Scan, seen: Read | None) -> tuple[int, str]:
    """How far the chain had reached by its own records (the follower's `position`, the newest
    checkpoint) and by the witness's newest head, and which record says so."""
    newest = max((event.position for _, event in scan.checkpoints), default=0)
    witnessed = seen.newest.position if seen is not None and seen.newest is not None else 0
    if witnessed > max(newest, position):
        return witnessed, f"the witness's newest head is at {witnessed}"
    if newest > position:
        return newest, f"the newest audit checkpoint is at {newest}"
    return position, f"the chain follower's position is {position}"


def _seal_checks(scan: _Scan, report: Report, seen: Read | None) -> list[Finding]:
    """With the audit key: every event from where sealing began carries its seal. Where it began,
    the witness's heads say (the earliest they recorded); without them, the first sealed event."""
    if not scan.seals:
        return []
    pinned = [h.authenticated_from for h in seen.heads if h.authenticated_from] if seen is not None else []
    first_sealed = next((row.notification_id for row, seal in scan.seals if seal is Seal.VALID), 0)
    report.authenticated_from = min(pinned) if pinned else first_sealed
    findings: list[Finding] = []
    for row, seal in scan.seals:
        if seal is Seal.VALID:
            report.authenticated += 1
        elif seal is Seal.FORGED:
            findings.append(_finding("forged", row, "its seal was not made by the audit key for this event"))
        elif report.authenticated_from and row.notification_id >= report.authenticated_from:
            findings.append(
                _finding(
                    "unauthenticated",
                    row,
                    f"carries no seal, though every event from notification {report.authenticated_from} on is "
                    "sealed with the audit key: it was written by someone without the key",
                )
            )
    return findings


def _witness_checks(seen: Read, scan: _Scan, recomputed: dict[int, str], report: Report) -> list[Finding]:
    """The stored history against the witness's signed heads."""
    findings = [Finding("witness_invalid", 0, table=name, detail=problem) for name, problem in seen.problems]
    report.witness_heads = len(seen.heads)
    newest = seen.newest
    if newest is None:
        if scan.rows and scan.rows[-1].notification_id >= HEAD_EVERY:
            findings.append(
                Finding(
                    "witness_invalid",
                    0,
                    detail=f"the witness holds no head, though {len(scan.rows)} events are stored: it is not the "
                    "directory the projections service writes, or its heads were removed (if the witness was "
                    "just set, run the check again once the chain follower wrote its first head)",
                )
            )
        return findings
    report.witness_position = newest.position
    stored_to = scan.rows[-1].notification_id if scan.rows else 0
    if newest.position > stored_to:
        findings.append(
            Finding(
                "rolled_back",
                newest.position,
                detail=(
                    f"the witness saw the chain at notification {newest.position} on {newest.written_at.isoformat()}, "
                    f"but the event store ends at {stored_to}: it was restored from an older copy, or its newest "
                    "events were deleted"
                ),
            )
        )
    differing = [h for h in seen.heads if h.position <= stored_to and recomputed.get(h.position) != h.chain_hash]
    if differing:
        first = differing[0]
        findings.append(
            Finding(
                "witness_mismatch",
                first.position,
                detail=(
                    f"the stored history up to here no longer gives the hash the witness recorded on "
                    f"{first.written_at.isoformat()} ({len(differing)} of {len(seen.heads)} heads differ): events "
                    "at or before it were changed, deleted, inserted or moved"
                ),
            )
        )
    return findings


def _checkpoint_checks(scan: _Scan, recomputed: dict[int, str], report: Report) -> list[Finding]:
    findings: list[Finding] = []
    for notification_id, checkpoint in scan.checkpoints:
        report.checkpoints += 1
        if recomputed.get(checkpoint.position) != checkpoint.chain_hash:
            gone = checkpoint.position not in recomputed
            findings.append(
                Finding(
                    "checkpoint_mismatch",
                    checkpoint.position,
                    detail=(
                        f"the event checkpoint {notification_id} recorded the chain at is no longer stored"
                        if gone
                        else f"the history up to here no longer gives the hash checkpoint {notification_id} recorded"
                    ),
                )
            )
    return findings


def _snapshot_checks(app: Any, scan: _Scan, report: Report) -> list[Finding]:
    """Every stored snapshot must hold the state its aggregate's events give at its version: a
    snapshot is not an event, but a command loads the aggregate from it. A mismatch names the
    aggregate and version; snapshots are derived, so deleting the row is the repair. An aggregate
    with a malformed event is not rebuilt (that event is a finding of its own)."""
    if app.snapshots is None or not app.snapshotting_intervals:
        return []
    smallest = min(app.snapshotting_intervals.values())
    candidates: dict[str, str] = {}  # aggregates with enough events to have a snapshot -> a topic of theirs
    for row in scan.rows:
        if row.originator_version >= smallest and row.originator_id not in scan.malformed:
            candidates.setdefault(row.originator_id, row.topic)
    findings: list[Finding] = []
    for originator_id, aggregate_topic in sorted(candidates.items()):
        aggregate_id = UUID(originator_id)
        try:
            snapshots = list(app.snapshots.get(aggregate_id))
        except (ValueError, TypeError) as exc:  # unreadable bytes (not JSON, not our cipher's), or none
            findings.append(
                Finding(
                    "snapshot_mismatch", 0, originator_id, 0, aggregate_topic, f"a snapshot does not read back ({exc})"
                )
            )
            continue
        for snapshot in snapshots:
            report.snapshots += 1
            problem = _snapshot_problem(app, aggregate_id, snapshot)
            if problem:
                findings.append(
                    Finding("snapshot_mismatch", 0, originator_id, snapshot.originator_version, snapshot.topic, problem)
                )
    return findings


def _snapshot_problem(app: Any, aggregate_id: UUID, snapshot: Any) -> str:
    try:
        rebuilt = project_aggregate(None, app.events.get(aggregate_id, lte=snapshot.originator_version))
    except (OriginatorIDError, OriginatorVersionError) as exc:  # an event deleted or moved: named by the chain
        return (
            f"its events no longer rebuild the aggregate ({type(exc).__name__}: {exc}), so the snapshot is not checked"
        )
    if rebuilt is None or AggregateSnapshot.take(rebuilt).state != snapshot.state:
        return (
            "the snapshot differs from the state its events give: delete it (it is derived) and look for how "
            "it was changed"
        )
    return ""


def compare_read_models(
    app: Any, store: ReadStore, report: Report, progress: Callable[[int, int], None] | None = None
) -> None:
    """Every read model's digest against its replay from the events, up to the live positions: a
    read model changed in the database (a row deleted, a status rewritten) is a finding naming the
    table and some of the rows. Not with malformed events, which a replay cannot apply."""
    if any(f.kind == "malformed" for f in report.findings):
        report.read_models_skipped = "the history has malformed events: the read models were not replayed"
        return
    replayed = replay.replay(app, store, progress)
    report.read_models = len(replayed.live)
    for table, live in replayed.live.items():
        again = replayed.replayed[table]
        if live.digest == again.digest:
            continue
        rows = [d for d in replayed.differences if d.table == table]
        shown = ", ".join(
            f"{d.key} ({'missing' if d.live is None else 'extra' if d.replayed is None else 'changed'})"
            for d in rows[:SHOWN_KEYS]
        )
        more = f" and {len(rows) - SHOWN_KEYS} more" if len(rows) > SHOWN_KEYS else ""
        report.findings.append(
            Finding(
                "read_model_mismatch",
                0,
                table=store.t(table).rpartition(".")[2],
                detail=f"differs from its replay from the events ({live.rows} rows live, {again.rows} replayed)"
                + (f"; rows {shown}{more}" if shown else "")
                + ": it was changed outside its projection "
                "(the events are the record; the read model is derived from them)",
            )
        )


def _recompute(stored: list[_Row]) -> dict[int, str]:
    previous, hashes = GENESIS, {}
    for row in stored:
        previous = chain_hash(previous, row.notification_id, row.event_hash)
        hashes[row.notification_id] = previous
    return hashes


def _chain_table_checks(recorded: list[_Row], recomputed: dict[int, str]) -> list[Finding]:
    """With every event in place, the recorded chain hashes must follow from them."""
    return [
        Finding(
            "chain_altered",
            r.notification_id,
            r.originator_id,
            r.originator_version,
            r.topic,
            "the chain table's hash here does not follow from the events",
        )
        for r in recorded
        if recomputed.get(r.notification_id) != r.chain_hash
    ][:1]


def _compare(
    recorded: list[_Row], stored: list[_Row], recomputed: dict[int, str], reach: int, reached_by: str
) -> tuple[list[Finding], int]:
    """Align what was chained with what is stored now (by content) and name every difference.
    Stored events the chain table lacks: at the end and above `reach`, not yet chained (counted, not
    findings); at or below it, or where the chain goes on from them unchanged, `chain_truncated`."""
    alignment = _Alignment(recorded, stored, recomputed, f"the chain had reached {reach} ({reached_by})", reach)
    matcher = difflib.SequenceMatcher(
        None, [r.event_hash for r in recorded], [s.event_hash for s in stored], autojunk=False
    )
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        alignment.take(op, i1, i2, j1, j2)
    return sorted(alignment.found(), key=lambda f: f.notification_id), alignment.unchained


@dataclass
class _Alignment:
    """The differences between the chained rows and the stored ones, gathered opcode by opcode."""

    recorded: list[_Row]
    stored: list[_Row]
    recomputed: dict[int, str]
    reached: str  # why the end of the chain is where it is
    reach: int
    findings: list[Finding] = field(default_factory=list)
    deleted: list[_Row] = field(default_factory=list)  # chained, not stored in their place
    inserted: list[_Row] = field(default_factory=list)  # stored, not chained in their place
    unchained: int = 0

    def take(self, op: str, i1: int, i2: int, j1: int, j2: int) -> None:
        olds, news = self.recorded[i1:i2], self.stored[j1:j2]
        if op == "delete":
            self.deleted += olds
        elif op == "replace":
            self.findings += _replaced(olds, news, self.deleted, self.inserted)
        elif op == "insert":
            self._insert(i1, j2, news)

    def _insert(self, i1: int, j2: int, news: list[_Row]) -> None:
        if i1 == len(self.recorded):  # after the chain table's last row
            cut = [s for s in news if s.notification_id <= self.reach]
            self.findings += [_truncated(cut, self.reached)] if cut else []
            self.unchained = len(news) - len(cut)
        elif (
            j2 < len(self.stored)
            and self.recomputed.get(self.stored[j2].notification_id) == self.recorded[i1].chain_hash
        ):
            self.findings.append(_truncated(news, "the chain goes on after them from these very events"))
        else:
            self.inserted += news

    def found(self) -> list[Finding]:
        """The findings, with deleted and inserted rows paired up: the same content is a move, the
        same place another originator or version."""
        moved = {r.event_hash for r in self.deleted} & {s.event_hash for s in self.inserted}
        reordered = [
            _finding("reordered", s, f"moved from notification {r.notification_id}")
            for s in self.inserted
            if s.event_hash in moved
            for r in self.deleted
            if r.event_hash == s.event_hash
        ]
        gone = {r.notification_id: r for r in self.deleted if r.event_hash not in moved}
        new = {s.notification_id: s for s in self.inserted if s.event_hash not in moved}
        return self.findings + reordered + _in_place(gone, new)


def _in_place(gone: dict[int, _Row], new: dict[int, _Row]) -> list[Finding]:
    """Chained rows no longer stored (`gone`) and stored rows never chained (`new`), by notification."""
    changed = gone.keys() & new.keys()  # another originator or version where a chained event was
    return (
        [_finding("modified", new[n], "its stored originator or version changed after it was chained") for n in changed]
        + [_finding("deleted", r, "was chained and is no longer stored") for n, r in gone.items() if n not in changed]
        + [
            _finding("inserted", s, "is stored before the chain's head but was never chained")
            for n, s in new.items()
            if n not in changed
        ]
    )


def _replaced(olds: list[_Row], news: list[_Row], deleted: list[_Row], inserted: list[_Row]) -> list[Finding]:
    """Chained events and the stored ones in their place: the same event (by identity) changed or
    moved; the rest go to `deleted` and `inserted`."""
    findings: list[Finding] = []
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
    return findings


def _truncated(rows: list[_Row], why: str) -> Finding:
    first, last = rows[0].notification_id, rows[-1].notification_id
    return Finding(
        "chain_truncated",
        first,
        detail=(
            f"notifications {first} to {last} ({len(rows)} events) are not in the chain table, though {why}: its rows "
            "for them were deleted, and these events can no longer be checked against it (one finding for the range)"
        ),
    )


def _finding(kind: str, row: _Row, detail: str) -> Finding:
    return Finding(kind, row.notification_id, row.originator_id, row.originator_version, row.topic, detail)
