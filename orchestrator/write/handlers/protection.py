"""Protection: a registered VM gets a policy (one configure-protection job each), changes policy,
or stops being protected, keeping or deleting its data. Which VMs a policy serves, the items say:
protecting a VM writes its item and job, never the vault's or the policy's aggregate (but for the
vault's first protection)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator.domain import BackupPolicy, Job, RecoveryPoint, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate
from orchestrator.domain.guard import CriticalOperation
from orchestrator.domain.item import item_id_for
from orchestrator.domain.schedule import retention_shortened
from orchestrator.domain.values import Operation
from orchestrator.errors import for_each_vm
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles
from orchestrator.write.handlers.guards import critical
from orchestrator.write.handlers.policies import (
    apply_retention,
    check_not_shortened,
    policy_named,
    retention_plan,
    shortened_points,
)

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


@handles(c.ProtectVms)
def protect(app: Orchestrator, cmd: c.ProtectVms) -> list[UUID]:
    vault = app.get(cmd.vault_id, Vault)
    policy = policy_named(app, vault, cmd.policy)
    resolved = for_each_vm(cmd.vm_names, "protected", lambda name: _item_for_protection(app, vault, name))
    items = {item.id: item for item in resolved}
    changed: list[Aggregate] = [vault] if vault.note_protection_requested() else []
    for item in items.values():
        job = Job(
            operation=Operation.CONFIGURE_PROTECTION,
            vault_id=vault.id,
            vm_key=item.vm.key,
            vm_name=item.vm.display_name,
        )
        item.request_protection(policy.id, policy.name, job.id)
        changed += [job, item]
    app.save(*changed)
    return [a.id for a in changed if isinstance(a, Job)]


def _item_for_protection(app: Orchestrator, vault: Vault, name: str) -> VirtualMachine:
    discovery = app.discovery_of(vault)
    for other in (app.item_of(vm.key) for vm in (discovery.find(name) if discovery else [])):
        if other is not None:
            other.check_not_protected_elsewhere(vault.id, name)
    item = app.registered_item(vault, name)
    item.check_can_protect(vault.id)
    return item


@handles(c.CompleteProtection)
def complete_protection(app: Orchestrator, cmd: c.CompleteProtection) -> None:
    job = app.open_job(cmd.job_id)
    if job is None:
        return
    item = app.get(item_id_for(job.vm_key), VirtualMachine)
    item.protected(job.id, cmd.protected_at)
    job.complete(result={"policy": item.policy_name}, warnings=cmd.warnings)
    app.save(item, job)


@handles(c.ChangePolicy)
def change_policy(app: Orchestrator, cmd: c.ChangePolicy) -> int:
    """Returns how many recovery points had their retention changed by the new policy."""
    vault = app.get(cmd.vault_id, Vault)
    item = app.registered_item(vault, cmd.vm_name)
    item.check_actively_protected()
    new = policy_named(app, vault, cmd.policy)
    if new.id == item.policy_id:
        return 0
    old = app.get(item.policy_id, BackupPolicy) if item.policy_id is not None else None
    plans = retention_plan(app, new.retention, new.tz, item)
    shortened = (retention_shortened(old.retention, new.retention) if old else "") or shortened_points(plans)
    guards = check_not_shortened(app, vault, shortened, "a policy change", cmd.now)
    item.change_policy(new.id, new.name)
    points = apply_retention(plans, f"VM moved to policy {new.name}")
    app.save(item, *points, *guards)
    return len(points)


@handles(c.StopProtection)
def stop_protection(app: Orchestrator, cmd: c.StopProtection) -> UUID:
    """Deleting data: soft deleted (the points are kept until the window ends) unless the vault's soft
    delete is disabled, then the points expire now; an immutable vault refuses it."""
    vault = app.get(cmd.vault_id, Vault)
    item = app.registered_item(vault, cmd.vm_name)
    item.check_can_stop_protection(cmd.delete_data)
    guards: list[Aggregate] = []
    if cmd.delete_data:
        vault.check_mutable("stopping protection with its backup data deleted", "delete_data")
        guards = critical(app, vault, CriticalOperation.DELETE_DATA, cmd.now)
    job = Job(
        operation=Operation.CONFIGURE_PROTECTION, vault_id=vault.id, vm_key=item.vm.key, vm_name=item.vm.display_name
    )
    changed: list[Aggregate] = [job, item, *guards]
    purge_at = vault.soft_delete_purge_at(cmd.now) if cmd.delete_data else None
    if cmd.delete_data and purge_at is None:
        changed += expire_all(app, item, "protection stopped with its backup data deleted")
    item.stop_protection(job.id, cmd.delete_data, purge_at)
    expired = len(changed) - 2 - len(guards)
    result: dict[str, object] = {"delete_data": cmd.delete_data, "recovery_points_expired": expired}
    if purge_at is not None:
        result |= {"soft_deleted": True, "purge_at": purge_at.isoformat()}
    job.complete(result=result, warnings=[])
    app.save(*changed)
    return job.id


def expire_all(app: Orchestrator, item: VirtualMachine, reason: str) -> list[Aggregate]:
    """Expire every live recovery point of `item` now; returns the points changed."""
    changed: list[Aggregate] = []
    for rp_id in item.recovery_point_ids:
        rp = app.get(rp_id, RecoveryPoint)
        if not rp.expired:
            rp.expire(reason)
            changed.append(rp)
    return changed


@handles(c.Undelete)
def undelete(app: Orchestrator, cmd: c.Undelete) -> UUID:
    """A soft-deleted item's data back, before its window ends: protection stopped, data kept."""
    vault = app.get(cmd.vault_id, Vault)
    item = app.registered_item(vault, cmd.vm_name)
    item.check_can_undelete(cmd.now)
    job = Job(
        operation=Operation.CONFIGURE_PROTECTION, vault_id=vault.id, vm_key=item.vm.key, vm_name=item.vm.display_name
    )
    item.undelete(job.id)
    job.complete(result={"undeleted": True, "recovery_points": len(item.recovery_point_ids)}, warnings=[])
    app.save(job, item)
    return job.id
