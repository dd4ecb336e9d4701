"""The work behind each task: checks, backup, restore, retention."""

from __future__ import annotations

import json
from uuid import UUID

from orchestrator.domain import Job, RecoveryPoint, VirtualMachine
from orchestrator.domain.item import item_id_for
from orchestrator.domain.recovery_point import DiskInfo, recovery_point_id_for
from orchestrator.domain.values import CheckResult, EncryptionKeys, Finding
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.inventory import FabricVm, PowerState
from orchestrator.write import commands as c
from projections import queries
from workers import vaultcheck
from workers.collection import BackupLease, collect
from workers.context import WorkerContext
from workers.prechecks import Stage, blocking, describe, evaluate, warnings_of
from workers.restore import point_of
from workers.snapshot import transfer_disks
from workers.vaultstore import DiskManifest, Manifest, VaultStore

PROGRESS_STEPS = 4  # progress is reported at 25%, 50% and 75%; 100% goes with the recovery point


def precheck(ctx: WorkerContext, job: Job, stage: Stage) -> list[CheckResult]:
    """The stage's prechecks on the job's VM as the fabric has it now (recorded by the caller)."""
    vault = ctx.app.vault_created(job.vault_id)
    return evaluate(
        ctx.fabric.get_vm(job.vm_key), vault.kind, vault.region, stage, ctx.fabric, key_protection=ctx.keys.configured
    )


def passed(results: list[CheckResult]) -> list[Finding]:
    """Recorded prechecks: an error stops the job with its code, the warnings go on with it."""
    error = blocking(results)
    if error is not None:
        raise OrchestratorError(error.code, describe(results))
    return warnings_of(results)


def with_extension(ctx: WorkerContext, vm: FabricVm, warnings: list[Finding]) -> tuple[str, list[Finding]]:
    """After the prechecks passed: the backup extension's version, installed now if the VM runs."""
    version = ctx.fabric.extension_version(vm)
    if version is not None:
        return version, warnings
    if vm.spec.power_state is PowerState.RUNNING:
        return ctx.fabric.install_extension(vm), warnings
    return "", [
        *warnings,
        Finding(
            code="ExtensionPendingVmStart",
            message=f"VM {vm.ref.display_name} is {vm.spec.power_state.value}: the backup extension will be "
            "installed when it next runs; until then backups are offline (crash-consistent).",
        ),
    ]


def run_backup(ctx: WorkerContext, job: Job, warnings: list[Finding]) -> str:
    """After the backup prechecks passed (`warnings`: theirs)."""
    vm = ctx.fabric.get_vm(job.vm_key)
    if vm.spec.power_state is PowerState.RUNNING:
        warnings = with_extension(ctx, vm, warnings)[1]
    store = ctx.vault_store(job.vault_id)
    rp_id = str(recovery_point_id_for(job.id))
    # The lease covers the run up to the manifest, which then references every block the point needs
    # (a sweep reads the manifests only once the lease is released): it goes before the point is
    # reported, so nothing of the job is recorded after it has ended.
    with BackupLease(ctx, job, store):
        if store.has_manifest(rp_id):  # committed by an earlier delivery that died before reporting
            manifest, digest = store.read_manifest(rp_id), store.manifest_digest(rp_id)
        else:
            manifest, digest, found = _snapshot(ctx, job, vm, store, rp_id)
            warnings += found
    # The vault store's usage record goes with the point, for the dashboard.
    ctx.report(
        c.RecordBackupTaken(
            job_id=job.id,
            taken_at=manifest.taken_at,
            consistency=manifest.consistency,
            logical_bytes=manifest.logical_bytes,
            stored_bytes=manifest.stored_bytes,
            manifest_digest=digest,
            disks=[DiskInfo(name=d.name, size=d.size, digest=d.digest) for d in manifest.disks],
            warnings=warnings,
            encryption=manifest.encryption,
            provisioned_gb=sum(d.size_gb for d in vm.spec.disks),
            usage=store.usage_report() or {},  # none when it cannot be read: the next report says
            read_bytes=manifest.read_bytes,
            tracking=manifest.tracking,
        )
    )
    return f"recovery point {rp_id}"


def _snapshot(
    ctx: WorkerContext, job: Job, vm: FabricVm, store: VaultStore, rp_id: str
) -> tuple[Manifest, str, list[Finding]]:
    reported = [0]

    def progress(done: int, total: int) -> None:
        step = done * PROGRESS_STEPS // max(total, 1)
        if reported[0] < step < PROGRESS_STEPS:
            reported[0] = step
            ctx.report(c.RecordProgress(job_id=job.id, bytes_done=done, bytes_total=total))

    encryption, sealed_keys = _kept_keys(ctx, vm)
    base_point, previous = _previous_disks(ctx, job, store)
    with ctx.fabric.capture(vm, base_point, rp_id) as capture:
        taken_at = ctx.clock.now()
        disk_manifests, stats = transfer_disks(
            store, capture.disks, progress, previous=previous, block_size=ctx.block_size
        )
    manifest = Manifest(
        recovery_point_id=rp_id,
        job_id=str(job.id),
        vm_key=job.vm_key,
        vm_spec=json.loads(vm.spec.model_dump_json()),
        taken_at=taken_at.isoformat(),
        consistency=capture.consistency.value,
        logical_bytes=stats.logical_bytes,
        stored_bytes=stats.stored_bytes,
        read_bytes=stats.read_bytes,
        disks=disk_manifests,
        tracking=stats.tracking,
        encryption=encryption,
        sealed_keys=sealed_keys,
    )
    manifest, digest = store.commit_manifest(manifest)
    capture.confirm()  # the point is stored: the fabric's change tracking moves on to it
    return manifest, digest, capture.warnings


def _kept_keys(ctx: WorkerContext, vm: FabricVm) -> tuple[EncryptionKeys | None, str | None]:
    """An encrypted VM's key names, and its BEK (and KEK) from the key vault, sealed for the manifest."""
    enc = vm.spec.encryption
    if not enc.enabled:
        return None, None
    assert enc.key_vault and enc.bek_secret  # the inventory's rule for an encrypted VM
    names = EncryptionKeys(key_vault=enc.key_vault, bek_secret=enc.bek_secret, kek_key=enc.kek_key)
    return names, ctx.keys.seal(names, ctx.fabric.backup_key_material(vm))


def _previous_disks(ctx: WorkerContext, job: Job, store: VaultStore) -> tuple[str | None, dict[str, DiskManifest]]:
    """The VM's latest recovery point and its disks, for the unchanged-disk check and change tracking."""
    item = ctx.app.get(item_id_for(job.vm_key), VirtualMachine)
    if item.latest_recovery_point is None:
        return None, {}
    point = str(item.latest_recovery_point)
    try:
        return point, {d.name: d for d in store.read_manifest(point).disks}
    except (OSError, ValueError):  # gone, or unreadable (`vault check` names it): every disk is read
        return point, {}


def run_restore_keys(ctx: WorkerContext, job: Job) -> str:
    rp, _, manifest = point_of(ctx, job)
    if manifest.encryption is None or manifest.sealed_keys is None:
        raise OrchestratorError("RecoveryPointNotEncrypted", f"recovery point {rp.id} holds no keys")
    names, material = manifest.encryption, ctx.keys.open(manifest.sealed_keys)
    key_vault = job.parameters["key_vault"] or names.key_vault
    outcome = ctx.fabric.restore_key_material(
        rp.vm_key.split("/", 1)[0],
        key_vault,
        {names.bek_secret: material["bek_secret"]},
        {names.kek_key: material["kek_key"]} if names.kek_key else {},
    )
    ctx.report(
        c.CompleteJob(
            job_id=job.id,
            result={
                "recovery_point_id": str(rp.id),
                "key_vault": key_vault,
                "restored": outcome,
            },
        )
    )
    return f"{sum(v == 'restored' for v in outcome.values())} restored into {key_vault}"


def run_retention(ctx: WorkerContext, job: Job) -> str:
    """Expire the vault's due points, delete the manifests the event store says are dead, collect.
    The due points come from the event store, never from a read model alone (which may lag, or have
    lost rows): every manifest in the vault store is a recovery point, whose aggregate (every event
    stored so far) says whether it is due; the recovery-points read model adds points without one."""
    now = ctx.clock.now()
    store = ctx.vault_store(job.vault_id)
    points = _vault_points(ctx, store, job.vault_id)
    due = [rp.id for rp in points if not rp.expired and rp.expires_at <= now]
    expired = ctx.report(c.ExpireRecoveryPoints(job_id=job.id, recovery_point_ids=due, now=now))
    soft_deleted = {
        *(rp.item_id for rp in points),
        *(
            UUID(row.item_id)
            for row in queries.items(ctx.read_store, str(job.vault_id))
            if row.status == "soft_deleted"
        ),
    }
    items = [ctx.app.find(item_id, VirtualMachine) for item_id in sorted(soft_deleted)]
    due_items = [item.id for item in items if item is not None and item.purge_due(now)]
    purged = ctx.report(c.PurgeSoftDeleted(job_id=job.id, item_ids=due_items, now=now)) if due_items else []
    deleted = sum(store.delete_manifest(rp_id) for rp_id in store.manifest_ids() if _dead(ctx, store, rp_id))
    collected = collect(ctx, job, store)
    ctx.report(
        c.CompleteJob(
            job_id=job.id,
            result={
                "expired": len(expired),
                "held": len(due) - len(expired),
                "purged": len(purged),
                "manifests_deleted": deleted,
                **collected,
                "vault_usage": store.usage_report() or {},  # the vault store's usage record, for the dashboard
            },
        )
    )
    return f"{len(expired)} expired, {len(purged)} purged"


def _vault_points(ctx: WorkerContext, store: VaultStore, vault_id: UUID) -> list[RecoveryPoint]:
    """The vault's recovery points as the event store has them: one for every manifest in the vault
    store, and the recovery-points read model's without one (the read model alone may lag, or have
    lost rows)."""
    listed = {UUID(r.recovery_point_id) for r in queries.recovery_points(ctx.read_store, str(vault_id))}
    found = [ctx.app.find(rp_id, RecoveryPoint) for rp_id in sorted({*store.recovery_point_ids(), *listed})]
    return [rp for rp in found if rp is not None and rp.vault_id == vault_id]


def _dead(ctx: WorkerContext, store: VaultStore, rp_id: str) -> bool:
    """A manifest to delete, as the event store has it: its recovery point expired, or its backup job
    ended without making one. Kept: a manifest whose job is still running (a retry will report it),
    and one whose job cannot be told (not named by a point's id, unreadable, or naming a job the
    event store does not have, or a job whose point it is not: `vault check` names the bad ones)."""
    try:
        point_id = UUID(rp_id)
    except ValueError:
        return False
    rp = ctx.app.find(point_id, RecoveryPoint)
    if rp is None:
        job_id = store.job_of(rp_id)
        job = ctx.app.find(job_id, Job) if job_id is not None and recovery_point_id_for(job_id) == point_id else None
        if job is None or not job.state.is_terminal:
            return False
        rp = ctx.app.find(point_id, RecoveryPoint)  # the job ended meanwhile? Its point is stored with its end
        if rp is None:
            return True
    return rp.expired


def run_verify(ctx: WorkerContext, job: Job) -> str:
    """Read the job's points back from the vault store: each live point of the vault (or of the
    job's VM, or the one point), its manifest against its recorded digest and every block it names
    there and hashing right. A block shared by many points is read once. Which points are live, the
    event store says (as for retention)."""
    store = ctx.vault_store(job.vault_id)
    wanted = job.parameters.get("recovery_point_id") or ""
    vm_key = job.parameters.get("vm_key") or ""
    points = [ctx.app.find(UUID(wanted), RecoveryPoint)] if wanted else _vault_points(ctx, store, job.vault_id)
    live = [
        rp
        for rp in points
        if rp is not None and rp.vault_id == job.vault_id and not rp.expired and (not vm_key or rp.vm_key == vm_key)
    ]
    verdicts: dict[str, str] = {}
    results = [_verify_point(store, rp, verdicts) for rp in live]
    ctx.report(
        c.RecordVerification(job_id=job.id, verdicts=results, blocks_read=len(verdicts), verified_at=ctx.clock.now())
    )
    failed = sum(not r.ok for r in results)
    return f"{len(results)} points verified, {failed} failed"


def _verify_point(store: VaultStore, rp: RecoveryPoint, verdicts: dict[str, str]) -> c.PointVerdict:
    try:
        manifest = store.read_manifest(str(rp.id), rp.manifest_digest)
    except FileNotFoundError:
        return c.PointVerdict(recovery_point_id=rp.id, ok=False, problem="manifest missing", block=f"{rp.id}.json")
    except (OSError, ValueError) as exc:
        return c.PointVerdict(
            recovery_point_id=rp.id, ok=False, problem=f"manifest unreadable: {str(exc)[:200]}", block=f"{rp.id}.json"
        )
    for disk in manifest.disks:
        for digest in disk.blocks:
            if digest is None:
                continue
            if digest not in verdicts:
                verdicts[digest] = vaultcheck.block_verdict(store, digest)
            if verdicts[digest] != "ok":
                return c.PointVerdict(
                    recovery_point_id=rp.id,
                    ok=False,
                    problem=f"block {verdicts[digest]} in disk {disk.name}",
                    block=digest,
                )
    return c.PointVerdict(recovery_point_id=rp.id, ok=True)
