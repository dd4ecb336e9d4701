"""Commands: what an operator asks the orchestrator to do (`OperatorCommand`), what the product's own
services ask (`SystemCommand`: the scheduler, the audit chain) and what workers report back
(`WorkerReport`). Who may send which is checked on every command (`senders`): the public client sends
operator commands only, and reports are accepted from workers only.

Names are validated by their kind's type (orchestrator/domain/names.py), so a bad name is refused
with its own code (`VaultNameInvalid`, `VmNameInvalid`...) before any handler runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.domain import names
from orchestrator.domain.base import Value
from orchestrator.domain.guard import CriticalOperation
from orchestrator.domain.identity import Role
from orchestrator.domain.names import (
    KeyVaultName,
    PolicyName,
    RegionName,
    ResourceGroupName,
    SubscriptionName,
    TimeZoneName,
    VaultName,
    VmName,
    VmReference,
)
from orchestrator.domain.recovery_point import DiskInfo
from orchestrator.domain.schedule import Retention, Schedule
from orchestrator.domain.values import (
    CheckResult,
    Consistency,
    EncryptionKeys,
    Finding,
    Immutability,
    Replication,
    SoftDelete,
    VaultKind,
    VmRef,
)
from orchestrator.errors import DomainError, OrchestratorError

OPERATOR, WORKER, SYSTEM = "operator", "worker", "system"


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    senders: ClassVar[frozenset[str]] = frozenset()  # the kinds of principal that may send it


class OperatorCommand(Command):
    senders = frozenset({OPERATOR})


class WorkerReport(Command):
    """A worker's report on a job it runs: sent only through the workers' own path."""

    senders = frozenset({WORKER})


class SystemCommand(Command):
    senders = frozenset({SYSTEM})


def sender_kind(principal: str) -> str:
    """`worker:...` and `system:...` are the product's own principals; anyone else is an operator."""
    head, colon, _ = principal.partition(":")
    return head if colon and head in (WORKER, SYSTEM) else OPERATOR


class CreateVault(OperatorCommand):
    name: VaultName
    region: RegionName
    resource_group: ResourceGroupName
    subscription: SubscriptionName = "default"
    kind: VaultKind = VaultKind.RECOVERY_SERVICES
    replication: Replication = Replication.GEO


class SetReplication(OperatorCommand):
    vault_id: UUID
    replication: Replication


class DiscoverVms(OperatorCommand):
    vault_id: UUID


class RegisterVms(OperatorCommand):
    vault_id: UUID
    vm_names: list[VmReference]


class UnregisterVm(OperatorCommand):
    vault_id: UUID
    vm_name: VmReference


class CreatePolicy(OperatorCommand):
    vault_id: UUID
    name: PolicyName
    schedule: Schedule
    retention: Retention
    timezone: TimeZoneName = "UTC"


class UpdatePolicy(OperatorCommand):
    policy_id: UUID
    schedule: Schedule
    retention: Retention
    timezone: TimeZoneName = "UTC"
    now: datetime


class ProtectVms(OperatorCommand):
    vault_id: UUID
    vm_names: list[VmReference]
    policy: PolicyName = "DefaultPolicy"


class ChangePolicy(OperatorCommand):
    vault_id: UUID
    vm_name: VmReference
    policy: PolicyName
    now: datetime


class StopProtection(OperatorCommand):
    vault_id: UUID
    vm_name: VmReference
    delete_data: bool = False
    now: datetime  # deleting data: the soft-delete window starts here


class Undelete(OperatorCommand):
    vault_id: UUID
    vm_name: VmReference
    now: datetime


class DeleteVault(OperatorCommand):
    vault_id: UUID


class SetSoftDelete(OperatorCommand):
    vault_id: UUID
    state: SoftDelete
    retention_days: int = 14
    now: datetime  # a guarded vault's approvals are checked at this time


class SetImmutability(OperatorCommand):
    vault_id: UUID
    state: Immutability
    now: datetime


class CreateGuard(OperatorCommand):
    name: names.GuardName


class AttachGuard(OperatorCommand):
    vault_id: UUID
    guard: names.GuardName


class DetachGuard(OperatorCommand):
    vault_id: UUID
    now: datetime


class ApproveOperation(OperatorCommand):
    """A guard admin's approval of one critical operation on one vault, for `minutes`."""

    guard: names.GuardName
    vault_id: UUID
    operation: CriticalOperation
    minutes: int = 60
    now: datetime


class ExpireApprovals(SystemCommand):
    """Sent by the scheduler for a guard with open approvals past their time."""

    guard_id: UUID
    now: datetime


class BackupNow(OperatorCommand):
    vault_id: UUID
    vm_name: VmReference
    retain_until: datetime | None = None
    now: datetime


class RunSchedule(SystemCommand):
    """Sent by the scheduler for an item whose next slot is due at `now`."""

    item_id: UUID
    now: datetime


class RunRetention(OperatorCommand):
    senders = frozenset({OPERATOR, SYSTEM})  # on demand, and the scheduler's daily run
    vault_id: UUID
    key: str = ""  # the scheduler's daily key: one retention job per vault and day


class VerifyPoints(OperatorCommand):
    """A verify job over the vault's live recovery points (one VM's, or one point)."""

    senders = frozenset({OPERATOR, SYSTEM})  # on demand, and the scheduler's periodic verify
    vault_id: UUID
    vm_name: VmReference | None = None
    recovery_point_id: UUID | None = None
    key: str = ""  # the scheduler's period key: one scheduled verify per vault and period


class CreateIdentity(OperatorCommand):
    """An identity of the API service (a revoked one's name is made again, with a new token); the
    token's hash only: its secret is the caller's to show once."""

    name: names.IdentityName
    role: Role
    vault_id: UUID | None = None
    guard: names.GuardName | None = None  # a guard admin's guard (None: every guard)
    token_hash: str


class RevokeIdentity(OperatorCommand):
    name: names.IdentityName


class Restore(OperatorCommand):
    recovery_point_id: UUID
    target_vm_name: VmName
    mode: Literal["vm", "disks"] = "vm"
    target_dir: str = ""  # absolute, checked against the deployment's own directories (orchestrator/targets.py)
    region: RegionName | Literal[""] = ""


class RestoreKeys(OperatorCommand):
    recovery_point_id: UUID
    key_vault: KeyVaultName | Literal[""] = ""  # default: the key vault the VM used


# Commands workers send back when they report on a job.


class PointVerdict(Value):
    recovery_point_id: UUID
    ok: bool
    problem: str = ""  # e.g. "block missing", "block corrupt", "manifest unreadable: ..."
    block: str = ""  # the block's digest (or the manifest's file) the problem is in


class RecordVerification(WorkerReport):
    job_id: UUID
    verdicts: list[PointVerdict]
    blocks_read: int
    verified_at: datetime


class PurgeSoftDeleted(WorkerReport):
    """The retention job's items whose soft-delete window ended at `now`: their points expire."""

    job_id: UUID
    item_ids: list[UUID]
    now: datetime


class CompleteJob(WorkerReport):
    job_id: UUID
    result: dict[str, Any] = {}
    warnings: list[Finding] = []


class RecordChecks(WorkerReport):
    job_id: UUID
    stage: str
    results: list[CheckResult]


class RecordProgress(WorkerReport):
    job_id: UUID
    bytes_done: int
    bytes_total: int


class CompleteProtection(WorkerReport):
    job_id: UUID
    protected_at: datetime
    warnings: list[Finding] = []


class RecordBackupTaken(WorkerReport):
    job_id: UUID
    taken_at: datetime
    consistency: Consistency
    logical_bytes: int
    stored_bytes: int
    manifest_digest: str
    disks: list[DiskInfo]
    warnings: list[Finding] = []
    encryption: EncryptionKeys | None = None
    provisioned_gb: int = 0
    usage: dict[str, Any] = {}  # the vault store's usage record after the backup (workers/vaultusage.py)
    read_bytes: int | None = Field(None, ge=0)  # what the backup read of the disks; None: not told
    tracking: dict[str, str] = {}  # per disk: how the backup read it (whole, or the changes since a point)


class ExpireRecoveryPoints(WorkerReport):
    job_id: UUID
    recovery_point_ids: list[UUID]
    now: datetime


class StartJob(WorkerReport):
    job_id: UUID
    worker: str
    stage: str = ""  # when set: the prechecks the worker ran for this stage just before, recorded with the start
    results: list[CheckResult] = []


class RecordInventory(WorkerReport):
    job_id: UUID
    vms: list[VmRef]


class CompleteRegistration(WorkerReport):
    job_id: UUID
    extension_version: str
    warnings: list[Finding] = []


class FailJob(WorkerReport):
    senders = frozenset({WORKER, SYSTEM})  # the reconciler fails jobs whose worker was lost
    job_id: UUID
    error_code: str
    error_message: str


# The block ledger (orchestrator/domain/ledger.py): backups' leases, collection's mark and sweep.


class TakeLease(WorkerReport):
    """A backup job's lease on its vault's blocks, for its whole run; answers with the collection
    marked then, if one is (`workers/collection.py` reads its candidates). `lease_id`: this
    delivery's (each delivery of a job holds its own)."""

    job_id: UUID
    lease_id: UUID


class ReleaseLease(WorkerReport):
    job_id: UUID
    lease_id: UUID


class RescueBlocks(WorkerReport):
    """Candidates of the marked collection that the backup `job_id` counts on; answers False when
    the sweep has started."""

    job_id: UUID
    digests: list[str]


class MarkCollection(WorkerReport):
    job_id: UUID  # the retention job that collects
    candidates: str
    candidate_count: int
    now: datetime


class TakeOverCollection(WorkerReport):
    """Go on with the vault's collection under way, whose job has ended; answers with it."""

    job_id: UUID


class StartSweep(WorkerReport):
    """Answers with the backups still waited for: none, when the sweep has started."""

    job_id: UUID


class RecordSweepProgress(WorkerReport):
    job_id: UUID
    swept: int
    removed: int
    freed: int


class FinishCollection(WorkerReport):
    job_id: UUID
    now: datetime


C = TypeVar("C", bound=Command)


def build(command_class: type[C], **values: Any) -> C:
    """Validate raw values into a command. A name that breaks its kind's rule is refused with that
    rule's code (`VaultNameInvalid`...); any other bad value with `CommandInvalid`, naming the field."""
    try:
        return command_class(**values)
    except ValidationError as exc:
        errors = exc.errors()
        first = next((e for e in errors if e["type"] in names.CODES), errors[0])
        field = (
            ".".join(str(part) for part in first["loc"] if not str(part).startswith("function-"))
            or command_class.__name__
        )
        if first["type"] in names.CODES:
            context = first.get("ctx") or {}
            raise DomainError(
                first["type"],
                str(context.get("message", first["msg"])),
                field=field,
                details=[{"rule": context.get("rule", ""), "name": str(first.get("input", ""))[:200], "field": field}],
            ) from None
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "rule": e["type"], "message": e["msg"]} for e in errors
        ]
        raise OrchestratorError(
            "CommandInvalid",
            f"{command_class.__name__}: field {field!r}: {first['msg']}",
            field=field,
            details=details,
        ) from None


class RecordAuditCheckpoint(SystemCommand):
    position: int
    chain_hash: str
