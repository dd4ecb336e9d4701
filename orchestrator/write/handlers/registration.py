"""Discovery, registration and unregistration of VMs."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator.domain import Discovery, Job, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate
from orchestrator.domain.item import item_id_for
from orchestrator.domain.values import Operation, VmRef
from orchestrator.errors import for_each_vm
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


@handles(c.DiscoverVms)
def discover(app: Orchestrator, cmd: c.DiscoverVms) -> UUID:
    vault = app.get(cmd.vault_id, Vault)
    job = Job(operation=Operation.DISCOVERY, vault_id=vault.id, vm_key="", vm_name="")
    app.save(job)
    return job.id


@handles(c.RegisterVms)
def register(app: Orchestrator, cmd: c.RegisterVms) -> list[UUID]:
    """Every name resolves to a VM the vault may hold, or the whole request is refused."""
    vault = app.get(cmd.vault_id, Vault)
    discovery = vault.check_discovered(app.discovery_of(vault)) if cmd.vm_names else None

    def resolve(name: str) -> tuple[VmRef, VirtualMachine | None]:
        assert discovery is not None  # for_each_vm resolves no name of an empty list
        vm = discovery.resolve(vault, name)
        item = app.item_of(vm.key)
        if item is not None and app.find(item.vault_id, Vault) is not None:  # a deleted vault holds no VM
            item.check_can_register(vault.id)
        return vm, item

    plans = {vm.key: (vm, item) for vm, item in for_each_vm(cmd.vm_names, "registered", resolve)}
    changed: list[Aggregate] = []
    for vm, item in plans.values():
        job = Job(operation=Operation.REGISTER, vault_id=vault.id, vm_key=vm.key, vm_name=vm.display_name)
        if item is None:
            item = VirtualMachine(vm=vm, vault_id=vault.id, vault_name=vault.name, job_id=job.id)
        else:
            item.request_registration(vm, vault.id, vault.name, job.id)
        changed += [job, item]
    app.save(*changed)  # all of them or none
    return [a.id for a in changed if isinstance(a, Job)]


@handles(c.UnregisterVm)
def unregister(app: Orchestrator, cmd: c.UnregisterVm) -> UUID:
    vault = app.get(cmd.vault_id, Vault)
    item = app.registered_item(vault, cmd.vm_name)
    item.check_can_unregister(vault.id)
    job = Job(operation=Operation.UNREGISTER, vault_id=vault.id, vm_key=item.vm.key, vm_name=item.vm.display_name)
    item.unregister(job.id)
    job.complete(result={"vm": item.vm.display_name}, warnings=[])
    app.save(job, item)
    return job.id


@handles(c.RecordInventory)
def record_inventory(app: Orchestrator, cmd: c.RecordInventory) -> None:
    """The discovery's VMs become a `Discovery` of their own; the vault notes it as its latest."""
    job = app.open_job(cmd.job_id)
    if job is None:
        return
    vault = app.get(job.vault_id, Vault)
    discovery = Discovery(vault_id=vault.id, job_id=job.id, vms=cmd.vms)
    vault.discovered(job.id)
    job.complete(result=discovery.summary(vault, app.item_of), warnings=[])
    app.save(discovery, vault, job)


@handles(c.CompleteRegistration)
def complete_registration(app: Orchestrator, cmd: c.CompleteRegistration) -> None:
    job = app.open_job(cmd.job_id)
    if job is None:
        return
    item = app.get(item_id_for(job.vm_key), VirtualMachine)
    item.registered(job.id, cmd.extension_version)
    job.complete(result={"extension_version": cmd.extension_version}, warnings=cmd.warnings)
    app.save(item, job)
