from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator import commands as c
from orchestrator.domain import Job, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate
from orchestrator.domain.item import item_id_for
from orchestrator.domain.values import Operation
from orchestrator.errors import DomainError
from orchestrator.handlers import handles
from orchestrator.registration import plan_registrations, summarize_inventory

if TYPE_CHECKING:
    from orchestrator.application import Orchestrator


@handles(c.DiscoverVms)
def discover(app: Orchestrator, cmd: c.DiscoverVms) -> UUID:
    vault = app.get(cmd.vault_id, Vault)
    job = Job(operation=Operation.DISCOVERY, vault_id=vault.id, vm_key="", vm_name="")
    app.save(job)
    return job.id


@handles(c.RegisterVms)
def register(app: Orchestrator, cmd: c.RegisterVms) -> list[UUID]:
    vault = app.get(cmd.vault_id, Vault)
    plans = plan_registrations(vault, cmd.vm_names, app.item_of)
    changed: list[Aggregate] = []
    for vm, item in plans:
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
    job = app.open_job(cmd.job_id)
    if job is None:
        return
    vault = app.get(job.vault_id, Vault)
    vault.record_inventory(job.id, cmd.vms)
    job.complete(result=summarize_inventory(vault, app.item_of), warnings=[])
    app.save(vault, job)


@handles(c.CompleteRegistration)
def complete_registration(app: Orchestrator, cmd: c.CompleteRegistration) -> None:
    job = app.open_job(cmd.job_id)
    if job is None:
        return
    item = app.get(item_id_for(job.vm_key), VirtualMachine)
    item.registered(job.id, cmd.extension_version)
    job.complete(result={"extension_version": cmd.extension_version}, warnings=cmd.warnings)
    app.save(item, job)


def not_registered(vault: Vault, name: str, several: bool) -> DomainError:
    return DomainError(
        "VmNotRegistered",
        f"several registered VMs match {name!r}; name one as <cloud service>/<vm>"
        if several
        else f"no VM named {name!r} is registered in vault {vault.name!r}",
        field="vm_name",
    )
