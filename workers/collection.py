"""Collection of the blocks no manifest references, safe with backups running on any host: the
two-phase mark and sweep of the vault's block ledger (orchestrator/domain/ledger.py), with leases
and rescues recorded in the event store instead of a lock on a file system.

The collector (a retention job):
1. lists the store's blocks (and its temporary files), then reads its manifests: the blocks none
   references are the candidates, written to `collections/<job id>-<random>.json` in the store; then records
   the mark (`MarkCollection`), which notes the leases held at that instant;
2. waits (at most BACKUP_COLLECTION_WAIT seconds) for every backup that held one to end; if one
   still runs, the job ends with the mark left in place, and the next collection takes it over;
3. starts the sweep (`StartSweep`), reads the manifests again, and removes each candidate that no
   manifest references and no backup rescued, in the candidates' order, recording how far it has
   come (`RecordSweepProgress`), so that a collector that dies is taken over where it stopped;
4. removes the temporary files listed at the mark that are still there (their writers have ended),
   and records the end (`FinishCollection`).

A backup (`BackupLease`) holds its lease until its manifest is committed. When a collection was marked before it
took the lease, it reads the candidates, and rescues each one before it counts on it (a block found
stored already, a disk's blocks reused from its previous point). A rescue refused (the sweep has
started) makes it wait for the sweep's end, then store the block again if it went.

A manifest that cannot be read could reference any block: while one is there nothing is marked,
and a sweep that finds one removes nothing (the reason is in the result).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from orchestrator.domain import Job
from orchestrator.domain.ledger import BlockLedger, Collection, Phase, ledger_id_for
from orchestrator.errors import DomainError, OrchestratorError
from orchestrator.write import commands as c
from workers.manifests import read_references
from workers.outages import OUTAGES

if TYPE_CHECKING:
    from workers.context import WorkerContext
    from workers.vaultstore import VaultStore

log = logging.getLogger(__name__)
POLL = 0.2  # seconds between looks at the ledger while waiting
PROGRESS_EVERY = 1000  # candidates swept between progress records (and at least every PROGRESS_SECONDS)
PROGRESS_SECONDS = 2.0


def ledger_of(ctx: WorkerContext, vault_id: UUID) -> BlockLedger | None:
    return ctx.app.find(ledger_id_for(vault_id), BlockLedger)


def collect(ctx: WorkerContext, job: Job, store: VaultStore) -> dict[str, Any]:
    """The retention job's collection: what was removed (`blocks_removed`, `bytes_freed`,
    `temporary_files_removed`, `temporary_bytes_removed`), or `skipped` with its `reason`."""
    ledger = ledger_of(ctx, job.vault_id)
    if ledger is not None and ledger.collection is not None:
        try:
            taken = ctx.report(c.TakeOverCollection(job_id=job.id))
        except DomainError as exc:  # its job still runs
            return _skipped(exc.message)
        if taken is None:  # it finished meanwhile: mark anew
            return collect(ctx, job, store)
    else:
        marked = _mark(ctx, job, store)
        if isinstance(marked, str):
            return _skipped(marked)
        if marked is None:
            return _outcome(skipped=False, reason="")
    waiting = _wait_for_backups(ctx, job)
    if waiting:
        return _skipped(
            f"{len(waiting)} backup(s) running since the mark still run ({', '.join(waiting[:3])}): the mark stays, "
            "and the next retention run sweeps once they have ended"
        )
    return _sweep(ctx, job, store)


def _mark(ctx: WorkerContext, job: Job, store: VaultStore) -> bool | str | None:
    """List, read, write the candidates, record the mark: True; None when there is nothing to
    collect (nothing is marked then); or why nothing was marked."""
    blocks = store.block_files()
    temporaries = store.temporary_files()
    references = read_references(store.manifest_ids(), store.read_manifest_bytes)
    if references.unreadable:
        return (
            f"{references.unreadable[0].describe()}: it may reference any block, so no block is collected "
            "until it is repaired or removed"
        )
    candidates = sorted(set(blocks) - references.live)
    if not candidates and not temporaries:
        return None
    name = candidates_name(job.id)  # this attempt's own: another delivery of the job writes its own
    listed = {"blocks": candidates, "temporaries": {str(p.relative_to(store.root)): n for p, n in temporaries.items()}}
    store.objects.create(name, json.dumps(listed).encode())
    store.objects.durable()  # whole on disk before the mark names it
    try:
        ctx.report(
            c.MarkCollection(job_id=job.id, candidates=name, candidate_count=len(candidates), now=ctx.clock.now())
        )
    except DomainError as exc:  # another collection was marked meanwhile
        store.objects.delete(name)
        return exc.message
    return True


def _wait_for_backups(ctx: WorkerContext, job: Job) -> list[str]:
    """Start the sweep once the backups the mark waits for have ended; those still running after
    BACKUP_COLLECTION_WAIT seconds otherwise."""
    deadline = time.monotonic() + ctx.collection_wait
    while True:
        waiting: list[str] = ctx.report(c.StartSweep(job_id=job.id))
        if not waiting or time.monotonic() >= deadline:
            return waiting
        time.sleep(POLL)


def _sweep(ctx: WorkerContext, job: Job, store: VaultStore) -> dict[str, Any]:
    ledger = ledger_of(ctx, job.vault_id)  # as of the sweep's start: no rescue is accepted after it
    assert ledger is not None and ledger.collection is not None
    collection = ledger.collection
    listed = read_candidates(store, collection.candidates)
    if listed is None:
        listed = {"blocks": [], "temporaries": {}}
        log.warning(
            "the candidates %s of collection %s cannot be read: nothing is swept", collection.candidates, job.id
        )
    references = read_references(store.manifest_ids(), store.read_manifest_bytes)
    kept = references.live | set(collection.rescued)
    candidates: list[str] = listed["blocks"]
    swept, removed, freed = collection.swept, collection.removed, collection.freed
    reason = ""
    if references.unreadable:
        reason = f"{references.unreadable[0].describe()}: it may reference any block, so no block is collected"
        swept = len(candidates)
    last = time.monotonic()
    for index in range(swept, len(candidates)):
        digest = candidates[index]
        if digest not in kept:
            size = store.remove_block(digest)
            removed += size > 0
            freed += size
        if (index + 1) % PROGRESS_EVERY == 0 or time.monotonic() - last >= PROGRESS_SECONDS:
            ctx.report(c.RecordSweepProgress(job_id=job.id, swept=index + 1, removed=removed, freed=freed))
            last = time.monotonic()
    # Of the temporary files listed at the mark, those still there: their writers have ended.
    marked = listed["temporaries"]
    left = {path: n for path, n in store.temporary_files().items() if str(path.relative_to(store.root)) in marked}
    for path in left:
        path.unlink(missing_ok=True)
    ctx.report(c.RecordSweepProgress(job_id=job.id, swept=len(candidates), removed=removed, freed=freed))
    store.remeasure()
    ctx.report(c.FinishCollection(job_id=job.id, now=ctx.clock.now()))
    store.objects.delete(collection.candidates)
    return {
        "blocks_removed": removed,
        "bytes_freed": freed,
        "temporary_files_removed": len(left),
        "temporary_bytes_removed": sum(left.values()),
        "blocks_rescued": len(collection.rescued),
        "skipped": bool(reason),
        "reason": reason,
    }


def candidates_name(job_id: UUID) -> str:
    return f"collections/{job_id}-{uuid4().hex[:12]}.json"


def read_candidates(store: VaultStore, name: str) -> dict[str, Any] | None:
    """A mark's candidates as its collector wrote them; None when they are gone or not readable as
    written (the collector and the backups read the same object, so they agree on it)."""
    try:
        listed = json.loads(store.objects.read(name))
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(listed, dict) or not isinstance(listed.get("blocks"), list):
        return None
    listed.setdefault("temporaries", {})
    return listed


def _skipped(reason: str) -> dict[str, Any]:
    return _outcome(skipped=True, reason=reason)


def _outcome(**outcome: Any) -> dict[str, Any]:
    """Nothing removed, and `outcome`."""
    return {
        "blocks_removed": 0,
        "bytes_freed": 0,
        "temporary_files_removed": 0,
        "temporary_bytes_removed": 0,
        "blocks_rescued": 0,
        **outcome,
    }


class BackupLease:
    """A backup job's lease on its vault's blocks, held while it is entered (`VaultStore.leased`),
    and what it tells the backup: the candidates of a collection marked before it was taken."""

    def __init__(self, ctx: WorkerContext, job: Job, store: VaultStore) -> None:
        self.ctx, self.job, self.store = ctx, job, store
        self.lease_id = uuid4()  # this delivery's: another delivery of the job holds its own
        self.candidates: frozenset[str] = frozenset()
        self.collection: str = ""  # the candidates' object of the marked collection, if any
        self.collector: UUID | None = None
        self.rescued: set[str] = set()
        self._rescuing = threading.Lock()

    def __enter__(self) -> BackupLease:
        marked = self.ctx.report(c.TakeLease(job_id=self.job.id, lease_id=self.lease_id))
        if marked is not None:
            collection = Collection.model_validate(marked)
            self.collection, self.collector = collection.candidates, collection.job_id
            # None: the collection finished meanwhile, or its sweep cannot read them either (it sweeps nothing).
            listed = read_candidates(self.store, collection.candidates)
            self.candidates = frozenset(listed["blocks"] if listed else ())
            self.rescued = set(collection.rescued)
        self.store.lease = self
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.store.lease = None
        try:
            self.ctx.report(c.ReleaseLease(job_id=self.job.id, lease_id=self.lease_id))
        except (OrchestratorError, *OUTAGES):
            # Not released: the collector finds the job ended instead (StartSweep releases it then).
            log.exception("the lease of backup job %s could not be released", self.job.id)

    def counting_on(self, digests: list[str]) -> bool:
        """Before the backup counts on blocks stored already: True when it may (none is a candidate,
        or each is rescued now), False when the sweep has started (see `after_sweep`)."""
        with self._rescuing:
            needed = sorted({d for d in digests if d in self.candidates} - self.rescued)
            if not needed:
                return True
            if not self.ctx.report(c.RescueBlocks(job_id=self.job.id, digests=needed)):
                return False
            self.rescued.update(needed)
            return True

    def after_sweep(self) -> None:
        """Wait for the end of the sweep that refused a rescue. Its collector's job ended with the
        sweep unfinished: `CollectionInterrupted` (the backup is retried once it has been taken over)."""
        while True:
            ledger = ledger_of(self.ctx, self.job.vault_id)
            current = ledger.collection if ledger is not None else None
            if current is None or current.candidates != self.collection or current.phase is not Phase.SWEEPING:
                return
            collector = self.ctx.app.find(current.job_id, Job)
            if collector is None or collector.state.is_terminal:
                raise OrchestratorError(
                    "CollectionInterrupted",
                    f"the vault's collection (job {current.job_id}) stopped while sweeping a block this backup "
                    "needs: run retention on the vault to finish it, then back up again",
                )
            time.sleep(POLL)
