"""Backups (on demand and scheduled), recovery points, retention and restore requests."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator.domain import BackupPolicy, Job, RecoveryPoint, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate
from orchestrator.domain.item import item_id_for
from orchestrator.domain.schedule import Tier, slots_between, tiers_for
from orchestrator.domain.values import Finding, Operation
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


@handles(c.BackupNow)
def backup_now(app: Orchestrator, cmd: c.BackupNow) -> UUID:
    vault = app.get(cmd.vault_id, Vault)
    item = app.registered_item(vault, cmd.vm_name)
    item.check_actively_protected()
    item.check_no_backup_running()
    retain_until = VirtualMachine.check_retain_until(cmd.retain_until, cmd.now)
    job = Job(operation=Operation.BACKUP, vault_id=vault.id, vm_key=item.vm.key, vm_name=item.vm.display_name)
    item.start_backup(job.id, None, retain_until)
    app.save(job, item)  # the item's version makes a concurrent second backup conflict
    return job.id


@handles(c.RunSchedule)
def run_schedule(app: Orchestrator, cmd: c.RunSchedule) -> UUID | None:
    """Trigger the item's due slot (once: the job id derives from item and slot). Older due slots
    are recorded as missed, and only the newest runs, as the one catch-up."""
    item = app.get(cmd.item_id, VirtualMachine)
    if not item.actively_protected or item.policy_id is None or item.last_slot is None:
        return None
    policy = app.get(item.policy_id, BackupPolicy)
    due = slots_between(policy.schedule, policy.tz, item.last_slot, cmd.now)
    if not due:
        return None
    changed: list[Aggregate] = [item]
    missed = due[:-1]
    if missed:
        item.slots_missed(missed, "the scheduler was not running at these times")
    slot = due[-1]
    if item.backup_job_id is not None:
        item.slots_missed([slot], f"backup job {item.backup_job_id} was still running")
        app.save(*changed)
        return None
    job = Job(
        operation=Operation.BACKUP,
        vault_id=item.vault_id,
        vm_key=item.vm.key,
        vm_name=item.vm.display_name,
        job_key=f"{item.id}/{slot.isoformat()}",
    )
    item.start_backup(job.id, slot, None)
    app.save(job, *changed)
    return job.id


@handles(c.RecordBackupTaken)
def record_backup_taken(app: Orchestrator, cmd: c.RecordBackupTaken) -> UUID | None:
    job = app.open_job(cmd.job_id)
    if job is None:
        return None
    item = app.get(item_id_for(job.vm_key), VirtualMachine)
    tiers, expires_at = _retention_of(app, item, cmd.taken_at)
    rp = RecoveryPoint(
        vault_id=job.vault_id,
        item_id=item.id,
        vm_key=item.vm.key,
        vm_name=item.vm.display_name,
        job_id=job.id,
        taken_at=cmd.taken_at,
        consistency=cmd.consistency.value,
        tiers=tiers,
        expires_at=expires_at,
        logical_bytes=cmd.logical_bytes,
        stored_bytes=cmd.stored_bytes,
        manifest_digest=cmd.manifest_digest,
        disks=cmd.disks,
        encryption=cmd.encryption,
        provisioned_gb=cmd.provisioned_gb,
    )
    item.backup_succeeded(job.id, rp.id, cmd.taken_at, bool(cmd.warnings))
    if job.bytes_done < cmd.logical_bytes:  # the transfer's end, stored with the point (workers do not report it)
        job.progress(cmd.logical_bytes, cmd.logical_bytes)
    job.complete(
        result={
            "recovery_point_id": str(rp.id),
            "consistency": cmd.consistency.value,
            "logical_bytes": cmd.logical_bytes,
            "stored_bytes": cmd.stored_bytes,
            "expires_at": expires_at.isoformat(),
            "tiers": [t.value for t in tiers],
            **({"vault_usage": cmd.usage} if cmd.usage else {}),
            **({"read_bytes": cmd.read_bytes} if cmd.read_bytes is not None else {}),
            **({"tracking": cmd.tracking} if cmd.tracking else {}),
        },
        warnings=cmd.warnings,
    )
    app.save(rp, item, job)
    return rp.id


def _retention_of(app: Orchestrator, item: VirtualMachine, taken_at: datetime) -> tuple[list[Tier], datetime]:
    if item.backup_retain_until is not None:  # on demand
        return [Tier.ON_DEMAND], item.backup_retain_until
    assert item.policy_id is not None
    policy = app.get(item.policy_id, BackupPolicy)
    tiers, expires_at = tiers_for(policy.retention, policy.tz, taken_at)
    return tiers, expires_at


@handles(c.RunRetention)
def run_retention(app: Orchestrator, cmd: c.RunRetention) -> UUID:
    vault = app.get(cmd.vault_id, Vault)
    job = Job(operation=Operation.RETENTION, vault_id=vault.id, vm_key="", vm_name="", job_key=cmd.key)
    if cmd.key and job.id in app.repository:
        return job.id  # already made today
    app.save(job)
    return job.id


@handles(c.ExpireRecoveryPoints)
def expire_recovery_points(app: Orchestrator, cmd: c.ExpireRecoveryPoints) -> list[UUID]:
    """Expire the given points of the job's vault that are due, each as its aggregate has it; the
    newest point of an actively protected VM is held."""
    job = app.open_job(cmd.job_id)
    if job is None:
        return []
    changed: list[Aggregate] = []
    expired: list[UUID] = []
    for rp_id in cmd.recovery_point_ids:
        rp = app.get(rp_id, RecoveryPoint)
        if not rp.is_due(job.vault_id, cmd.now):
            continue
        item = app.get(rp.item_id, VirtualMachine)
        if item.soft_deleted:
            continue  # only the purge deletes soft-deleted data
        outcome = rp.expire_or_hold(item.actively_protected and item.latest_recovery_point == rp.id)
        changed += [rp] if outcome else []
        expired += [rp.id] if outcome == "expired" else []
    app.save(*changed)
    return expired


@handles(c.PurgeSoftDeleted)
def purge_soft_deleted(app: Orchestrator, cmd: c.PurgeSoftDeleted) -> list[UUID]:
    """Expire the points of the job's vault's items whose soft-delete window ended, and the items
    forget them. An immutable vault keeps each point to the expiry it had: its item is purged once
    none is left. Returns the points expired."""
    job = app.open_job(cmd.job_id)
    if job is None:
        return []
    vault = app.get(job.vault_id, Vault)
    changed: list[Aggregate] = []
    expired: list[UUID] = []
    for item_id in dict.fromkeys(cmd.item_ids):
        item = app.get(item_id, VirtualMachine)
        if item.vault_id != vault.id or not item.purge_due(cmd.now):
            continue
        live = [rp for rp in (app.get(i, RecoveryPoint) for i in item.recovery_point_ids) if not rp.expired]
        purgeable = [rp for rp in live if not vault.immutable or rp.expires_at <= cmd.now]
        for rp in purgeable:
            rp.expire(f"soft-delete window ended at {item.purge_at.isoformat() if item.purge_at else '?'}")
        if len(purgeable) == len(live):
            item.purged(job.id)
            changed.append(item)
        changed += purgeable
        expired += [rp.id for rp in purgeable]
    app.save(*changed)
    return expired


def _live_point(app: Orchestrator, rp_id: UUID) -> RecoveryPoint:
    rp = app.get(rp_id, RecoveryPoint)
    rp.check_live()
    app.get(rp.item_id, VirtualMachine).check_not_soft_deleted("recovery_point_id")
    return rp


@handles(c.Restore)
def restore(app: Orchestrator, cmd: c.Restore) -> UUID:
    rp = _live_point(app, cmd.recovery_point_id)
    vault = app.get(rp.vault_id, Vault)
    vault.check_restore_region(cmd.region)
    Job.check_restore_target(cmd.mode, cmd.target_dir)
    discovery = app.discovery_of(vault)
    if cmd.mode == "vm" and discovery is not None:
        discovery.check_no_vm_named(cmd.target_vm_name)
    job = Job(
        operation=Operation.RESTORE,
        vault_id=vault.id,
        vm_key=rp.vm_key,
        vm_name=cmd.target_vm_name if cmd.mode == "vm" else rp.vm_name,
    )
    job.set_parameters(
        {
            "recovery_point_id": str(rp.id),
            "target_vm_name": cmd.target_vm_name,
            "mode": cmd.mode,
            "target_dir": cmd.target_dir,
        }
    )
    app.save(job)
    return job.id


@handles(c.RestoreKeys)
def restore_keys(app: Orchestrator, cmd: c.RestoreKeys) -> UUID:
    """A job that puts an encrypted VM's secret and key back into a key vault from a recovery point."""
    rp = _live_point(app, cmd.recovery_point_id)
    keys = rp.check_encrypted()
    job = Job(operation=Operation.RESTORE_KEYS, vault_id=rp.vault_id, vm_key=rp.vm_key, vm_name=rp.vm_name)
    job.set_parameters({"recovery_point_id": str(rp.id), "key_vault": cmd.key_vault or keys.key_vault})
    app.save(job)
    return job.id


@handles(c.VerifyPoints)
def verify_points(app: Orchestrator, cmd: c.VerifyPoints) -> UUID:
    vault = app.get(cmd.vault_id, Vault)
    vm_key, vm_name = "", ""
    if cmd.vm_name is not None:
        item = app.registered_item(vault, cmd.vm_name)
        vm_key, vm_name = item.vm.key, item.vm.display_name
    if cmd.recovery_point_id is not None:
        rp = app.get(cmd.recovery_point_id, RecoveryPoint)
        rp.check_in_vault(vault.id)
        rp.check_live()
        vm_key, vm_name = rp.vm_key, rp.vm_name
    job = Job(operation=Operation.VERIFY, vault_id=vault.id, vm_key=vm_key, vm_name=vm_name, job_key=cmd.key)
    if cmd.key and job.id in app.repository:
        return job.id  # this period's verify is made already
    job.set_parameters(
        {
            "recovery_point_id": str(cmd.recovery_point_id) if cmd.recovery_point_id else "",
            "vm_key": vm_key,
        }
    )
    app.save(job)
    return job.id


@handles(c.RecordVerification)
def record_verification(app: Orchestrator, cmd: c.RecordVerification) -> None:
    """Each point's verdict as an event of the point; the job completes, with a VerifyFailed warning
    per point that failed (naming the block)."""
    job = app.open_job(cmd.job_id)
    if job is None:
        return
    changed: list[Aggregate] = [job]
    warnings: list[Finding] = []
    for verdict in cmd.verdicts:
        rp = app.get(verdict.recovery_point_id, RecoveryPoint)
        if rp.vault_id != job.vault_id:
            continue
        rp.record_verification(job.id, verdict.ok, verdict.problem, verdict.block, cmd.verified_at)
        changed.append(rp)
        if not verdict.ok:
            warnings.append(
                Finding(
                    code="VerifyFailed",
                    message=f"recovery point {rp.id} of {rp.vm_name}: {verdict.problem} ({verdict.block})",
                )
            )
    job.complete(
        result={"points": len(changed) - 1, "failed": len(warnings), "blocks_read": cmd.blocks_read}, warnings=warnings
    )
    app.save(*changed)
