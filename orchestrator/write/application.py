"""The write side. Every state change goes through `handle`, for operators and workers alike;
the handlers themselves live in orchestrator/write/handlers/, one module per noun."""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProjectorFunction, project_aggregate
from eventsourcing.persistence import IntegrityError, Mapper, PersistenceError
from eventsourcing.utils import get_topic

from orchestrator.config import APP_NAME
from orchestrator.domain import BackupPolicy, BlockLedger, Discovery, Job, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate, DomainEvent, acting_as
from orchestrator.domain.discovery import discovery_id_for
from orchestrator.domain.item import item_id_for
from orchestrator.errors import ConcurrencyError, NotFoundError, OrchestratorError
from orchestrator.write.commands import Command, sender_kind
from orchestrator.write.handlers import HANDLERS, load_all
from orchestrator.write.persistence import JsonTranscoder, PydanticMapper

log = logging.getLogger(__name__)
A = TypeVar("A", bound=Aggregate)

# Two commands on one aggregate at once (an operator's and a worker's report on the same VM) conflict;
# each retry reloads and re-applies the command after a short random pause.
COMMAND_ATTEMPTS = 10
# The aggregates whose histories grow for as long as they live (an item with each backup, a vault or
# a policy with each edit) get a snapshot every SNAPSHOT_INTERVAL events, taken by the library:
# loading one reads its latest snapshot and the events after it.
SNAPSHOT_INTERVAL = 50
PAGE = 500  # notifications read at a time when looking for items

load_all()  # registers every handler before any thread can ask for one


class Orchestrator(Application[UUID]):
    name = APP_NAME
    env: ClassVar[dict[str, str]] = {
        "TRANSCODER_TOPIC": get_topic(JsonTranscoder),
        "MAPPER_TOPIC": get_topic(PydanticMapper),
    }
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        Vault: SNAPSHOT_INTERVAL,
        BackupPolicy: SNAPSHOT_INTERVAL,
        VirtualMachine: SNAPSHOT_INTERVAL,
        BlockLedger: SNAPSHOT_INTERVAL,  # two events a backup
    }

    def construct_mapper(self) -> Mapper[UUID]:
        """The library's mapper (ours, by MAPPER_TOPIC), sealing events with the audit key when the
        settings give one (AUDIT_KEY in the application's environment: see Settings.eventsourcing_env)."""
        mapper = super().construct_mapper()
        key = self.env.get("AUDIT_KEY")
        if key:
            cast(PydanticMapper, mapper).audit_key = base64.b64decode(key)
        return mapper

    def take_snapshot(
        self,
        aggregate_id: UUID,
        version: int | None = None,
        projector_func: ProjectorFunction[Any, Any] = project_aggregate,
    ) -> None:
        """The library's, called by `save` at each interval once the events are stored: a store
        that fails just then leaves the command stored (the next interval takes a snapshot), and
        is logged; any other error is raised."""
        try:
            super().take_snapshot(aggregate_id, version, projector_func)
        except PersistenceError as exc:
            log.warning(
                "snapshot of %s at version %s not taken (the next interval takes one): %s", aggregate_id, version, exc
            )

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

    def find(self, aggregate_id: UUID, cls: type[A], *, copy: bool = True, deleted_too: bool = False) -> A | None:
        """The aggregate, or None if there is none with that id (one read: `in repository` is a
        whole `get` of its own). `copy=False`: the process's cached aggregate itself, for a reader
        that changes nothing (a discovery's thousands of VMs are not copied to be looked at). A
        deleted aggregate (a vault) is none, but to `deleted_too` (its name stays taken)."""
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id, deepcopy_from_cache=copy)
        except AggregateNotFoundError:
            return None
        if not isinstance(aggregate, cls):
            raise NotFoundError(f"{cls.__name__}NotFound", f"{aggregate_id} is not a {cls.__name__}")
        if aggregate.deleted and not deleted_too:
            return None
        return aggregate

    def vault_created(self, vault_id: UUID) -> Vault.Created:
        """What a vault was created as: its kind, region and subscription never change afterwards.
        Its first event alone, one indexed read, instead of the whole vault."""
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

    # Reads across aggregates: what used to be kept on the vault and the policies, derived.

    def discovery_of(self, vault: Vault) -> Discovery | None:
        """The VMs the vault's latest discovery saw (read, not to be changed), or None before any.
        A vault whose latest discovery was recorded on the vault itself (before issue 15) has it
        read from that event."""
        if vault.discovered_at_job is None:
            return None
        discovery = self.find(discovery_id_for(vault.discovered_at_job), Discovery, copy=False)
        if discovery is None:
            for recorded in self.events.get(vault.id, desc=True):
                if isinstance(recorded, Vault.InventoryRecorded) and recorded.job_id == vault.discovered_at_job:
                    return Discovery(vault_id=vault.id, job_id=recorded.job_id, vms=recorded.vms)
        return discovery

    def registered_item(self, vault: Vault, name: str) -> VirtualMachine:
        """The one VM of `vault` that `name` (or `cloud-service/name`) designates."""
        discovery = self.discovery_of(vault)
        candidates = (self.item_of(vm.key) for vm in (discovery.find(name) if discovery else []))
        return VirtualMachine.registered_in(vault, name, candidates)

    def items_of_vault(self, vault_id: UUID) -> list[VirtualMachine]:
        """Every item ever registered in the vault, as its events have it now."""
        joined = self._items_named_by(
            (VirtualMachine.Created, VirtualMachine.RegistrationRequested), "vault_id", vault_id
        )
        return [item for item in joined if item.vault_id == vault_id]

    def items_of_policy(self, policy_id: UUID) -> list[VirtualMachine]:
        """The actively protected items whose policy is `policy_id`, as their events have it now."""
        named = self._items_named_by(
            (VirtualMachine.ProtectionRequested, VirtualMachine.PolicyChanged), "policy_id", policy_id
        )
        return [item for item in named if item.policy_id == policy_id and item.actively_protected]

    def _items_named_by(self, events: tuple[type[DomainEvent], ...], field: str, value: UUID) -> list[VirtualMachine]:
        """The items that ever had one of `events` with `field` equal to `value`: the notification
        log read for those topics alone (filtered by the database), then each item loaded."""
        ids = {event.originator_id for event in self._events_of(events) if getattr(event, field) == value}
        return [item for item in (self.find(i, VirtualMachine) for i in sorted(ids)) if item is not None]

    def _events_of(self, classes: tuple[type[DomainEvent], ...]) -> Iterator[Any]:
        topics = [get_topic(cls) for cls in classes]
        decode = cast(PydanticMapper, self.mapper).decoder()
        start = 1
        while notifications := self.recorder.select_notifications(start, PAGE, topics=topics):
            for notification in notifications:
                yield decode(notification.topic, notification.state)
            start = notifications[-1].id + 1
