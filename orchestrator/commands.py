"""Commands: what an operator (or a worker reporting back) asks the orchestrator to do."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.domain.recovery_point import DiskInfo
from orchestrator.domain.schedule import Retention, Schedule
from orchestrator.domain.values import CheckResult, Consistency, EncryptionKeys, Finding, Replication, VaultKind, VmRef
from orchestrator.errors import OrchestratorError


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CreateVault(Command):
    name: str
    region: str
    resource_group: str
    subscription: str = "default"
    kind: VaultKind = VaultKind.RECOVERY_SERVICES
    replication: Replication = Replication.GEO


class SetReplication(Command):
    vault_id: UUID
    replication: Replication


class DiscoverVms(Command):
    vault_id: UUID


class RegisterVms(Command):
    vault_id: UUID
    vm_names: list[str]


class UnregisterVm(Command):
    vault_id: UUID
    vm_name: str


class CreatePolicy(Command):
    vault_id: UUID
    name: str
    schedule: Schedule
    retention: Retention
    timezone: str = "UTC"


class UpdatePolicy(Command):
    policy_id: UUID
    schedule: Schedule
    retention: Retention
    timezone: str = "UTC"


class ProtectVms(Command):
    vault_id: UUID
    vm_names: list[str]
    policy: str = "DefaultPolicy"


class ChangePolicy(Command):
    vault_id: UUID
    vm_name: str
    policy: str


class StopProtection(Command):
    vault_id: UUID
    vm_name: str
    delete_data: bool = False


class BackupNow(Command):
    vault_id: UUID
    vm_name: str
    retain_until: datetime | None = None
    now: datetime


class RunSchedule(Command):
    """Sent by the scheduler for an item whose next slot is due at `now`."""

    item_id: UUID
    now: datetime


class RunRetention(Command):
    vault_id: UUID
    key: str = ""  # the scheduler's daily key: one retention job per vault and day


class Restore(Command):
    recovery_point_id: UUID
    target_vm_name: str
    mode: Literal["vm", "disks"] = "vm"
    target_dir: str = ""
    region: str = ""


class RestoreKeys(Command):
    recovery_point_id: UUID
    key_vault: str = ""  # default: the key vault the VM used


# Commands workers send back when they report on a job.


class CompleteJob(Command):
    job_id: UUID
    result: dict[str, Any] = {}
    warnings: list[Finding] = []


class RecordChecks(Command):
    job_id: UUID
    stage: str
    results: list[CheckResult]


class RecordProgress(Command):
    job_id: UUID
    bytes_done: int
    bytes_total: int


class CompleteProtection(Command):
    job_id: UUID
    protected_at: datetime
    warnings: list[Finding] = []


class RecordBackupTaken(Command):
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


class ExpireRecoveryPoints(Command):
    job_id: UUID
    recovery_point_ids: list[UUID]
    now: datetime


class StartJob(Command):
    job_id: UUID
    worker: str
    stage: str = ""  # when set: the prechecks the worker ran for this stage just before, recorded with the start
    results: list[CheckResult] = []


class RecordInventory(Command):
    job_id: UUID
    vms: list[VmRef]


class CompleteRegistration(Command):
    job_id: UUID
    extension_version: str
    warnings: list[Finding] = []


class FailJob(Command):
    job_id: UUID
    error_code: str
    error_message: str


C = TypeVar("C", bound=Command)


def build(command_class: type[C], **values: Any) -> C:
    """Validate raw values into a command, turning pydantic's errors into `CommandInvalid`."""
    try:
        return command_class(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or command_class.__name__
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "rule": e["type"], "message": e["msg"]}
            for e in exc.errors()
        ]
        raise OrchestratorError(
            "CommandInvalid",
            f"{command_class.__name__}: field {field!r}: {first['msg']}",
            field=field,
            details=details,
        ) from None


class RecordAuditCheckpoint(Command):
    position: int
    chain_hash: str
