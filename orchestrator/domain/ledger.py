"""A vault's block ledger: who may be counting on the vault store's blocks, so that collection is
safe with backups running on any host, without a lock on any file system.

Every backup holds a lease on its vault's ledger (its job's id) until its manifest is committed.
Collection is a two-phase mark and sweep:

1. Mark. The collector lists the store's blocks, reads its manifests, writes the blocks no manifest
   references (the candidates) to an object of the store, then records the mark: the candidates'
   object and the leases held at that instant (the backups it must wait for).
2. Sweep. Once every one of those backups has released its lease (or its job has ended), the sweep
   starts: after that instant the collector reads the manifests again and removes the candidates
   that none references and no backup rescued.

A backup whose lease is taken while a collection is marked knows the candidates: before it counts
on one (a block it finds stored already) it rescues it, which the ledger accepts until the sweep
starts. A rescue refused (the sweep is under way) makes the backup wait for the sweep's end and
store the block again if it went. A block written after the mark is never a candidate (the listing
came first), so never swept. A collector that dies leaves the mark recorded: the next collection
takes it over where it stopped.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field

from orchestrator.domain.base import Aggregate, SnapshotState, Value
from orchestrator.errors import DomainError


def ledger_id_for(vault_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"/vaults/{vault_id}/block-ledger")


class Phase(str, Enum):
    MARKED = "marked"  # candidates listed; rescues accepted; waiting for the backups that held leases
    SWEEPING = "sweeping"  # rescues refused; the candidates no manifest references are being removed


class Collection(Value):
    """A collection under way: the job running it, its candidates and how far it has come."""

    job_id: UUID
    phase: Phase
    candidates: str  # the object of the vault store that lists them (workers/collection.py)
    candidate_count: int
    marked_at: datetime
    waiting_for: list[UUID]  # the leases held at the mark and still held
    rescued: list[str] = Field(default_factory=list)  # candidates a backup that started after the mark counts on
    swept: int = 0  # candidates handled by the sweep so far (in the candidates' order)
    removed: int = 0
    freed: int = 0
    jobs: list[UUID] = Field(default_factory=list)  # every job that has run it (a takeover adds one)


class CollectionSummary(Value):
    job_id: UUID
    finished_at: datetime
    candidates: int
    removed: int
    freed: int
    rescued: int


class BlockLedgerState(SnapshotState):
    vault_id: UUID
    leases: list[UUID]
    lease_jobs: dict[UUID, UUID] = Field(default_factory=dict)  # each lease's backup job (a lease with none: its own)
    collection: Collection | None
    last_collection: CollectionSummary | None
    collections: int


class BlockLedger(Aggregate):
    """One per vault, made by the first lease or collection."""

    TOPIC = "backup.block_ledger"
    snapshot_state = BlockLedgerState

    class Created(Aggregate.Created):
        TOPIC = "backup.block_ledger.created"
        vault_id: UUID

    class LeaseTaken(Aggregate.Event):
        """One delivery's lease: two deliveries of one backup job hold one each."""

        TOPIC = "backup.block_ledger.lease_taken"
        class_version: ClassVar[int] = 2
        job_id: UUID
        lease_id: UUID

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lease_id"] = state["job_id"]  # version 1 leased by job id

    class LeasesReleased(Aggregate.Event):
        TOPIC = "backup.block_ledger.leases_released"
        class_version: ClassVar[int] = 2
        lease_ids: list[UUID]
        reason: str  # "released" by the backup itself, or "job ended" when the collector found it so

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["lease_ids"] = state.pop("job_ids")

    class CollectionMarked(Aggregate.Event):
        TOPIC = "backup.block_ledger.collection_marked"
        job_id: UUID
        candidates: str
        candidate_count: int
        marked_at: datetime
        waiting_for: list[UUID]

    class CollectionTakenOver(Aggregate.Event):
        TOPIC = "backup.block_ledger.collection_taken_over"
        job_id: UUID
        from_job_id: UUID

    class BlocksRescued(Aggregate.Event):
        TOPIC = "backup.block_ledger.blocks_rescued"
        job_id: UUID
        digests: list[str]

    class SweepStarted(Aggregate.Event):
        TOPIC = "backup.block_ledger.sweep_started"
        job_id: UUID

    class SweepProgressed(Aggregate.Event):
        TOPIC = "backup.block_ledger.sweep_progressed"
        job_id: UUID
        swept: int
        removed: int
        freed: int

    class CollectionFinished(Aggregate.Event):
        TOPIC = "backup.block_ledger.collection_finished"
        job_id: UUID
        finished_at: datetime

    @staticmethod
    def create_id(vault_id: UUID) -> UUID:
        return ledger_id_for(vault_id)

    @event(Created)
    def __init__(self, vault_id: UUID) -> None:
        self.vault_id = vault_id
        self.leases: list[UUID] = []
        self.lease_jobs: dict[UUID, UUID] = {}
        self.collection: Collection | None = None
        self.last_collection: CollectionSummary | None = None
        self.collections = 0

    # Backups

    def take_lease(self, job_id: UUID, lease_id: UUID) -> None:
        """Held from now until released, by one delivery of the backup `job_id`."""
        if lease_id not in self.leases:
            self._lease_taken(job_id, lease_id)

    @event(LeaseTaken)
    def _lease_taken(self, job_id: UUID, lease_id: UUID) -> None:
        self.leases = [*self.leases, lease_id]
        self.lease_jobs = {**self.lease_jobs, lease_id: job_id}

    def job_of(self, lease_id: UUID) -> UUID:
        return self.lease_jobs.get(lease_id, lease_id)

    def release_leases(self, lease_ids: list[UUID], reason: str) -> None:
        held = [lease for lease in lease_ids if lease in self.leases]
        if held:
            self._released(held, reason)

    @event(LeasesReleased)
    def _released(self, lease_ids: list[UUID], reason: str) -> None:
        self.leases = [lease for lease in self.leases if lease not in lease_ids]
        self.lease_jobs = {k: v for k, v in self.lease_jobs.items() if k not in lease_ids}
        if self.collection is not None:
            waiting = [lease for lease in self.collection.waiting_for if lease not in lease_ids]
            self.collection = self.collection.model_copy(update={"waiting_for": waiting})

    def rescue(self, job_id: UUID, digests: list[str]) -> bool:
        """Keep candidates that the backup `job_id` counts on from this collection's sweep: True
        when they are kept (or nothing is marked, or none is a candidate the backup may not know
        is rescued), False when the sweep has started (the backup must wait for its end)."""
        if job_id not in {self.job_of(lease) for lease in self.leases}:
            raise DomainError(
                "LeaseNotHeld", f"backup job {job_id} holds no lease on this vault's blocks", field="job_id"
            )
        if self.collection is None:
            return True
        if self.collection.phase is Phase.SWEEPING:
            return False
        new = sorted(set(digests) - set(self.collection.rescued))
        if new:
            self._rescued(job_id, new)
        return True

    @event(BlocksRescued)
    def _rescued(self, job_id: UUID, digests: list[str]) -> None:
        assert self.collection is not None
        rescued = [*self.collection.rescued, *digests]
        self.collection = self.collection.model_copy(update={"rescued": rescued})

    # Collection

    def mark(self, job_id: UUID, candidates: str, candidate_count: int, now: datetime) -> None:
        """Record the mark: the candidates listed, and the leases held now as the backups to wait for."""
        if self.collection is not None:
            raise DomainError(
                "CollectionInProgress",
                f"collection job {self.collection.job_id} of this vault is {self.collection.phase.value}",
                field="vault_id",
            )
        self._marked(job_id, candidates, candidate_count, now, list(self.leases))

    @event(CollectionMarked)
    def _marked(
        self, job_id: UUID, candidates: str, candidate_count: int, marked_at: datetime, waiting_for: list[UUID]
    ) -> None:
        self.collection = Collection(
            job_id=job_id,
            phase=Phase.MARKED,
            candidates=candidates,
            candidate_count=candidate_count,
            marked_at=marked_at,
            waiting_for=waiting_for,
            jobs=[job_id],
        )
        self.collections += 1

    def take_over(self, job_id: UUID, running_job_ended: bool) -> None:
        """The collection under way goes on in `job_id`, since the job running it has ended (its
        worker died, or it stopped waiting for the backups)."""
        current = self._current()
        if current.job_id == job_id:
            return
        if not running_job_ended:
            raise DomainError(
                "CollectionInProgress",
                f"collection job {current.job_id} of this vault is still running ({current.phase.value})",
                field="vault_id",
            )
        self._taken_over(job_id, current.job_id)

    @event(CollectionTakenOver)
    def _taken_over(self, job_id: UUID, from_job_id: UUID) -> None:
        assert self.collection is not None
        self.collection = self.collection.model_copy(update={"job_id": job_id, "jobs": [*self.collection.jobs, job_id]})

    def start_sweep(self, job_id: UUID, ended: list[UUID]) -> list[UUID]:
        """Start the sweep once every backup the mark waits for has released its lease or its job is
        one of `ended` (terminal: their leases go now). The backups still waited for: none, when the
        sweep has started (now or before)."""
        current = self._running(job_id)
        if current.phase is Phase.SWEEPING:
            return []
        self.release_leases([lease for lease in current.waiting_for if self.job_of(lease) in ended], "job ended")
        waiting = self._current().waiting_for
        if not waiting:
            self._sweep_started(job_id)
        return [self.job_of(lease) for lease in waiting]

    @event(SweepStarted)
    def _sweep_started(self, job_id: UUID) -> None:
        assert self.collection is not None
        self.collection = self.collection.model_copy(update={"phase": Phase.SWEEPING})

    def progress(self, job_id: UUID, swept: int, removed: int, freed: int) -> None:
        current = self._running(job_id)
        if current.phase is not Phase.SWEEPING or swept <= current.swept:
            return
        self._progressed(job_id, swept, removed, freed)

    @event(SweepProgressed)
    def _progressed(self, job_id: UUID, swept: int, removed: int, freed: int) -> None:
        assert self.collection is not None
        self.collection = self.collection.model_copy(update={"swept": swept, "removed": removed, "freed": freed})

    def finish(self, job_id: UUID, now: datetime) -> CollectionSummary:
        current = self._running(job_id)
        if current.phase is not Phase.SWEEPING:
            raise DomainError("CollectionNotSwept", f"collection job {job_id} has not swept yet", field="job_id")
        self._finished(job_id, now)
        assert self.last_collection is not None
        return self.last_collection

    @event(CollectionFinished)
    def _finished(self, job_id: UUID, finished_at: datetime) -> None:
        assert self.collection is not None
        done = self.collection
        self.last_collection = CollectionSummary(
            job_id=job_id,
            finished_at=finished_at,
            candidates=done.candidate_count,
            removed=done.removed,
            freed=done.freed,
            rescued=len(done.rescued),
        )
        self.collection = None

    def _current(self) -> Collection:
        if self.collection is None:
            raise DomainError("NoCollection", "no collection of this vault is under way", field="vault_id")
        return self.collection

    def _running(self, job_id: UUID) -> Collection:
        current = self._current()
        if current.job_id != job_id:
            raise DomainError(
                "CollectionInProgress",
                f"collection of this vault is run by job {current.job_id}, not {job_id}",
                field="job_id",
            )
        return current

    def view(self) -> dict[str, Any]:
        """What `backupctl vault collection` shows."""
        return {
            "vault_id": str(self.vault_id),
            "leases": [str(self.job_of(lease)) for lease in self.leases],  # by the backup job holding each
            "collection": None if self.collection is None else self._shown(self.collection),
            "last_collection": None if self.last_collection is None else self.last_collection.model_dump(mode="json"),
            "collections": self.collections,
        }

    def _shown(self, collection: Collection) -> dict[str, Any]:
        shown = collection.model_dump(mode="json")
        shown["waiting_for"] = [str(self.job_of(lease)) for lease in collection.waiting_for]  # the backup jobs
        return shown
