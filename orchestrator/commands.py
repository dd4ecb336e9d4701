"""Commands: what an operator (or a worker reporting back) asks the orchestrator to do."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.domain.values import Finding, Replication, VaultKind, VmRef
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


# Commands workers send back when they report on a job.


class StartJob(Command):
    job_id: UUID
    worker: str


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
