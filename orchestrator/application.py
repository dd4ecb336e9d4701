"""The write side. Every state change goes through `handle`, for operators and workers alike;
the handlers themselves live in orchestrator/handlers/, one module per noun."""

from __future__ import annotations

import logging
import random
import time
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent, Repository
from eventsourcing.persistence import IntegrityError, PersistenceError
from eventsourcing.utils import get_topic

from orchestrator.commands import Command, sender_kind
from orchestrator.domain import BackupPolicy, Job, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate, AggregateSnapshot, acting_as
from orchestrator.domain.item import item_id_for
from orchestrator.errors import ConcurrencyError, NotFoundError, OrchestratorError
from orchestrator.handlers import HANDLERS, load_all
from orchestrator.persistence import JsonTranscoder, PydanticMapper

log = logging.getLogger(__name__)
A = TypeVar("A", bound=Aggregate)

# Concurrent reports on one vault or policy (many protections completing at once) conflict; each
# retry reloads and re-applies the command after a short random pause.
COMMAND_ATTEMPTS = 10
# The aggregates whose histories grow for as long as they live (a vault and a policy with each item
# protected, an item with each backup) get a snapshot every SNAPSHOT_INTERVAL events: loading one
# reads its latest snapshot and the events after it.
SNAPSHOT_INTERVAL = 50

load_all()  # registers every handler before any thread can ask for one

# Set while `find` loads an aggregate of a class that is never snapshotted (a job, a recovery point).
_WITHOUT_SNAPSHOTS: ContextVar[bool] = ContextVar("without_snapshots", default=False)


class _Repository(Repository[UUID]):
    """The library's repository, which does not look for a snapshot of an aggregate of a class that
    never has one: a read (and a round trip) less when a process first loads a job."""

    def _reconstruct_aggregate(self, aggregate_id: UUID, version: int | None, projector_func: Any) -> Any:
        if not _WITHOUT_SNAPSHOTS.get():
            return super()._reconstruct_aggregate(aggregate_id, version, projector_func)
        aggregate = projector_func(None, self.event_store.get(aggregate_id, lte=version))
        if aggregate is None:
            raise AggregateNotFoundError(f"Aggregate {aggregate_id!r} version {version!r} not found.")
        return aggregate


class Orchestrator(Application[UUID]):
    name = "Orchestrator"
    env: ClassVar[dict[str, str]] = {
        "TRANSCODER_TOPIC": get_topic(JsonTranscoder),
        "MAPPER_TOPIC": get_topic(PydanticMapper),
    }
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        Vault: SNAPSHOT_INTERVAL,
        BackupPolicy: SNAPSHOT_INTERVAL,
        VirtualMachine: SNAPSHOT_INTERVAL,
    }

    def construct_repository(self) -> Repository[UUID]:
        base = super().construct_repository()
        repository = _Repository(
            event_store=base.event_store,
            snapshot_store=base.snapshot_store,
            fastforward=base.fastforward,
            fastforward_skipping=base.fastforward_skipping,
            deepcopy_from_cache=base.deepcopy_from_cache,
        )
        repository.cache = base.cache
        return repository

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """After the command's events are stored: a snapshot of each saved aggregate whose new
        events passed a multiple of its interval, taken from the aggregate as saved (the library
        would read it back from the store). Failing to write one (the store went away just then)
        must not turn a stored command into a reported failure."""
        assert self.snapshots is not None
        try:
            due: dict[UUID, Any] = {}  # one pass over the events: a bulk save holds thousands
            for event in processing_event.events:
                aggregate = processing_event.aggregates.get(event.originator_id)
                interval = self.snapshotting_intervals.get(type(aggregate))
                if aggregate is not None and interval and event.originator_version % interval == 0:
                    due[aggregate.id] = aggregate
            for aggregate in due.values():
                self.snapshots.put([AggregateSnapshot.take(aggregate)])
        except PersistenceError as exc:
            log.warning("snapshot not taken (the next interval takes one): %s", exc)
        except Exception:  # a state model out of step with its aggregate: loud, but the command stands
            log.exception("snapshot not taken: the aggregate's state does not fit its snapshot model")

    def handle(self, command: Command, principal: str) -> Any:
        """Run a command as `principal`; retry it on a version conflict, a bounded number of times.
        Only the kinds of principal a command names may send it: a worker's report comes from a
        `worker:` principal, a service's command from a `system:` one, an operator's from anyone else."""
        kind = sender_kind(principal)
        if kind not in command.senders:
            raise OrchestratorError(
                "CommandNotAllowed",
                f"{type(command).__name__} is not sent by {kind}s (principal {principal[:100]!r})",
                field="principal",
            )
        handler = HANDLERS[type(command)]
        for attempt in range(1, COMMAND_ATTEMPTS + 1):
            try:
                with acting_as(principal):
                    return handler(self, command)
            except IntegrityError:
                log.info("version conflict on %s, attempt %d", type(command).__name__, attempt)
                time.sleep(random.uniform(0, 0.01 * attempt))
        raise ConcurrencyError(
            "ConcurrentModification",
            f"{type(command).__name__} conflicted with other writers {COMMAND_ATTEMPTS} times; "
            "nothing was stored, retry it",
        )

    def get(self, aggregate_id: UUID, cls: type[A]) -> A:
        aggregate = self.find(aggregate_id, cls)
        if aggregate is None:
            raise NotFoundError(f"{cls.__name__}NotFound", f"no {cls.__name__.lower()} with id {aggregate_id}")
        return aggregate

    def find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        """The aggregate, or None if there is none with that id (one read: `in repository` is a
        whole `get` of its own)."""
        token = _WITHOUT_SNAPSHOTS.set(cls not in self.snapshotting_intervals)
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        finally:
            _WITHOUT_SNAPSHOTS.reset(token)
        if not isinstance(aggregate, cls):
            raise NotFoundError(f"{cls.__name__}NotFound", f"{aggregate_id} is not a {cls.__name__}")
        return aggregate

    def vault_created(self, vault_id: UUID) -> Vault.Created:
        """What a vault was created as: its kind, region and subscription never change afterwards.
        Its first event alone, one indexed read, instead of the whole vault (its inventory with it)."""
        for first in self.events.get(vault_id, lte=1):
            if isinstance(first, Vault.Created):
                return first
            break
        raise NotFoundError("VaultNotFound", f"no vault with id {vault_id}")

    def open_job(self, job_id: UUID) -> Job | None:
        """The job a worker reports on, or None once it has ended (reports are idempotent)."""
        job = self.get(job_id, Job)
        return None if job.state.is_terminal else job

    def item_of(self, vm_key: str) -> VirtualMachine | None:
        return self.find(item_id_for(vm_key), VirtualMachine)

    def registered_item(self, vault: Vault, name: str) -> VirtualMachine:
        """The one VM of `vault` that `name` (or `cloud-service/name`) designates."""
        from orchestrator.handlers.registration import not_registered

        items = [i for i in (self.item_of(vm.key) for vm in vault.find_in_inventory(name)) if i]
        items = [i for i in items if i.vault_id == vault.id and i.status.holds_vm]
        if len(items) != 1:
            raise not_registered(vault, name, several=len(items) > 1)
        return items[0]
