"""The write side: one handler per command. Load, call aggregate methods, save; nothing else."""

from __future__ import annotations

import logging
import time
from functools import singledispatchmethod
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from orchestrator import commands as c
from orchestrator.domain import Job, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate, acting_as
from orchestrator.domain.item import item_id_for
from orchestrator.domain.values import Operation, VaultKind
from orchestrator.domain.vault import check_placement, check_vault_name, vault_id_for
from orchestrator.errors import ConcurrencyError, DomainError, NotFoundError
from orchestrator.persistence import JsonTranscoder, PydanticMapper
from orchestrator.registration import plan_registrations, summarize_inventory

log = logging.getLogger(__name__)
A = TypeVar("A", bound=Aggregate)

COMMAND_ATTEMPTS = 5


class Orchestrator(Application[UUID]):
    """Every state change goes through `handle`, for operators and workers alike."""

    name = "Orchestrator"
    env: ClassVar[dict[str, str]] = {
        "TRANSCODER_TOPIC": get_topic(JsonTranscoder),
        "MAPPER_TOPIC": get_topic(PydanticMapper),
    }

    def handle(self, command: c.Command, principal: str) -> Any:
        """Run a command as `principal`; retry it on a version conflict, a bounded number of times."""
        for attempt in range(1, COMMAND_ATTEMPTS + 1):
            try:
                with acting_as(principal):
                    return self._handle(command)
            except IntegrityError:
                log.info("version conflict on %s, attempt %d", type(command).__name__, attempt)
                time.sleep(0.01 * attempt)
        raise ConcurrencyError(
            "ConcurrentModification",
            f"{type(command).__name__} conflicted with other writers {COMMAND_ATTEMPTS} times; "
            "nothing was stored, retry it",
        )

    def get(self, aggregate_id: UUID, cls: type[A]) -> A:
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFoundError(
                f"{cls.__name__}NotFound", f"no {cls.__name__.lower()} with id {aggregate_id}"
            ) from None
        if not isinstance(aggregate, cls):
            raise NotFoundError(f"{cls.__name__}NotFound", f"{aggregate_id} is not a {cls.__name__}")
        return aggregate

    def find(self, aggregate_id: UUID, cls: type[A]) -> A | None:
        return self.get(aggregate_id, cls) if aggregate_id in self.repository else None

    @singledispatchmethod
    def _handle(self, command: c.Command) -> Any:
        raise TypeError(f"no handler for {type(command).__name__}")

    @_handle.register
    def _(self, cmd: c.CreateVault) -> UUID:
        check_vault_name(cmd.name)
        check_placement(cmd.subscription, cmd.region, cmd.resource_group)
        if vault_id_for(cmd.subscription, cmd.name) in self.repository:
            raise DomainError(
                "VaultNameTaken",
                f"subscription {cmd.subscription!r} already has a vault named {cmd.name!r} "
                "(names are unique per subscription, ignoring case)",
                field="name",
            )
        goal = "azure/virtual_machine" if cmd.kind is VaultKind.RECOVERY_SERVICES else ""
        vault = Vault(
            name=cmd.name,
            subscription=cmd.subscription,
            region=cmd.region,
            resource_group=cmd.resource_group,
            kind=cmd.kind,
            replication=cmd.replication,
            backup_goal=goal,
        )
        self.save(vault)
        return vault.id

    @_handle.register
    def _(self, cmd: c.SetReplication) -> None:
        vault = self.get(cmd.vault_id, Vault)
        vault.check_replication_changeable()
        if vault.replication is not cmd.replication:
            vault.change_replication(cmd.replication)
            self.save(vault)

    @_handle.register
    def _(self, cmd: c.DiscoverVms) -> UUID:
        vault = self.get(cmd.vault_id, Vault)
        job = Job(operation=Operation.DISCOVERY, vault_id=vault.id, vm_key="", vm_name="")
        self.save(job)
        return job.id

    @_handle.register
    def _(self, cmd: c.RegisterVms) -> list[UUID]:
        vault = self.get(cmd.vault_id, Vault)
        plans = plan_registrations(vault, cmd.vm_names, self._item_of)
        changed: list[Aggregate] = []
        for vm, item in plans:
            job = Job(
                operation=Operation.REGISTER, vault_id=vault.id, vm_key=vm.key, vm_name=vm.display_name
            )
            if item is None:
                item = VirtualMachine(vm=vm, vault_id=vault.id, vault_name=vault.name, job_id=job.id)
            else:
                item.request_registration(vm, vault.id, vault.name, job.id)
            changed += [job, item]
        self.save(*changed)  # all of them or none
        return [a.id for a in changed if isinstance(a, Job)]

    @_handle.register
    def _(self, cmd: c.UnregisterVm) -> UUID:
        vault = self.get(cmd.vault_id, Vault)
        matches = [vm for vm in vault.find_in_inventory(cmd.vm_name)]
        items = [i for i in (self._item_of(vm.key) for vm in matches) if i and i.vault_id == vault.id]
        if len(items) != 1:
            raise DomainError(
                "VmNotRegistered",
                f"no VM named {cmd.vm_name!r} is registered in vault {vault.name!r}"
                if not items
                else f"several registered VMs match {cmd.vm_name!r}; name one as <cloud service>/<vm>",
                field="vm_name",
            )
        item = items[0]
        item.check_can_unregister(vault.id)
        job = Job(
            operation=Operation.UNREGISTER, vault_id=vault.id, vm_key=item.vm.key, vm_name=item.vm.display_name
        )
        item.unregister(job.id)
        job.complete(result={"vm": item.vm.display_name}, warnings=[])
        self.save(job, item)
        return job.id

    # Reports from workers. Each is idempotent: a job already ended is left as it is.

    @_handle.register
    def _(self, cmd: c.StartJob) -> bool:
        job = self._open_job(cmd.job_id)
        if job is None:
            return False
        job.start(cmd.worker)
        self.save(job)
        return True

    @_handle.register
    def _(self, cmd: c.RecordInventory) -> None:
        job = self._open_job(cmd.job_id)
        if job is None:
            return
        vault = self.get(job.vault_id, Vault)
        vault.record_inventory(job.id, cmd.vms)
        job.complete(result=summarize_inventory(vault, self._item_of), warnings=[])
        self.save(vault, job)

    @_handle.register
    def _(self, cmd: c.CompleteRegistration) -> None:
        job = self._open_job(cmd.job_id)
        if job is None:
            return
        item = self.get(item_id_for(job.vm_key), VirtualMachine)
        item.registered(job.id, cmd.extension_version)
        job.complete(result={"extension_version": cmd.extension_version}, warnings=cmd.warnings)
        self.save(item, job)

    @_handle.register
    def _(self, cmd: c.FailJob) -> None:
        job = self._open_job(cmd.job_id)
        if job is None:
            return
        job.fail(cmd.error_code, cmd.error_message)
        changed: list[Aggregate] = [job]
        if job.operation is Operation.REGISTER:
            item = self.get(item_id_for(job.vm_key), VirtualMachine)
            if item.job_id == job.id:
                item.registration_failed(job.id, cmd.error_code)
                changed.append(item)
        self.save(*changed)

    def _open_job(self, job_id: UUID) -> Job | None:
        """The job a worker reports on, or None once it has ended (reports are idempotent)."""
        job = self.get(job_id, Job)
        return None if job.state.is_terminal else job

    def _item_of(self, vm_key: str) -> VirtualMachine | None:
        return self.find(item_id_for(vm_key), VirtualMachine)
