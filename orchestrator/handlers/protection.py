"""Protection: a registered VM gets a policy (one configure-protection job each), changes policy,
or stops being protected, keeping or deleting its data."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator import commands as c
from orchestrator.domain import BackupPolicy, Job, RecoveryPoint, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate
from orchestrator.domain.item import ACTIVE, item_id_for
from orchestrator.domain.values import ItemStatus, Operation
from orchestrator.errors import DomainError, for_each_vm
from orchestrator.handlers import handles
from orchestrator.handlers.policies import policy_named, reapply_retention

if TYPE_CHECKING:
    from orchestrator.application import Orchestrator


@handles(c.ProtectVms)
def protect(app: Orchestrator, cmd: c.ProtectVms) -> list[UUID]:
    vault = app.get(cmd.vault_id, Vault)
    policy = policy_named(app, vault, cmd.policy)
    resolved = for_each_vm(cmd.vm_names, "protected", lambda name: _item_for_protection(app, vault, name))
    items = {item.id: item for item in resolved}
    changed: list[Aggregate] = []
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
    matches = [app.item_of(vm.key) for vm in vault.find_in_inventory(name)]
    elsewhere = [i for i in matches if i and i.vault_id != vault.id and i.status in ACTIVE]
    if elsewhere:
        raise DomainError(
            "VmInAnotherVault", f"VM {name} is protected in vault {elsewhere[0].vault_name!r}", field="vm_names"
        )
    item = app.registered_item(vault, name)
    item.check_can_protect(vault.id)
    return item


@handles(c.CompleteProtection)
def complete_protection(app: Orchestrator, cmd: c.CompleteProtection) -> None:
    job = app.open_job(cmd.job_id)
    if job is None:
        return
    item = app.get(item_id_for(job.vm_key), VirtualMachine)
    vault = app.get(job.vault_id, Vault)
    assert item.policy_id is not None
    policy = app.get(item.policy_id, BackupPolicy)
    item.protected(job.id, cmd.protected_at)
    policy.assign(item.id)
    vault.count_protected_items(vault.protected_item_count + 1)
    job.complete(result={"policy": policy.name}, warnings=cmd.warnings)
    app.save(item, policy, vault, job)


@handles(c.ChangePolicy)
def change_policy(app: Orchestrator, cmd: c.ChangePolicy) -> int:
    """Returns how many recovery points had their retention changed by the new policy."""
    vault = app.get(cmd.vault_id, Vault)
    item = app.registered_item(vault, cmd.vm_name)
    item.check_actively_protected()
    new = policy_named(app, vault, cmd.policy)
    if new.id == item.policy_id:
        return 0
    assert item.policy_id is not None
    old = app.get(item.policy_id, BackupPolicy)
    old.unassign(item.id)
    new.assign(item.id)
    item.change_policy(new.id, new.name)
    points = reapply_retention(app, new, item, f"VM moved to policy {new.name}")
    app.save(item, old, new, *points)
    return len(points)


@handles(c.StopProtection)
def stop_protection(app: Orchestrator, cmd: c.StopProtection) -> UUID:
    vault = app.get(cmd.vault_id, Vault)
    item = app.registered_item(vault, cmd.vm_name)
    stoppable = item.status in ACTIVE or (cmd.delete_data and item.status is ItemStatus.PROTECTION_STOPPED)
    if not stoppable:
        raise DomainError("VmNotProtected", f"VM {item.vm.display_name} is not protected", field="vm_name")
    item.check_no_backup_running()
    job = Job(
        operation=Operation.CONFIGURE_PROTECTION, vault_id=vault.id, vm_key=item.vm.key, vm_name=item.vm.display_name
    )
    changed: list[Aggregate] = [job, item, vault]
    if item.policy_id is not None:
        policy = app.get(item.policy_id, BackupPolicy)
        policy.unassign(item.id)
        changed.append(policy)
    expired = 0
    if cmd.delete_data:
        for rp_id in item.recovery_point_ids:
            rp = app.get(rp_id, RecoveryPoint)
            if not rp.expired:
                rp.expire("protection stopped with its backup data deleted")
                changed.append(rp)
                expired += 1
        vault.count_protected_items(max(0, vault.protected_item_count - 1))
    item.stop_protection(job.id, cmd.delete_data)
    job.complete(result={"delete_data": cmd.delete_data, "recovery_points_expired": expired}, warnings=[])
    app.save(*changed)
    return job.id
