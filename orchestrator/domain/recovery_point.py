"""A recovery point: one backup's data, kept until its tiers' retention ends."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, Value
from orchestrator.domain.schedule import Tier
from orchestrator.domain.values import EncryptionKeys


def recovery_point_id_for(job_id: UUID) -> UUID:
    """One recovery point per backup job, so a second delivery of the job finds the first."""
    return uuid5(NAMESPACE_URL, f"/jobs/{job_id}/recovery-point")


class DiskInfo(Value):
    name: str
    size: int
    digest: str


class RecoveryPoint(Aggregate):
    TOPIC = "backup.recovery_point"

    class Created(Aggregate.Created):
        TOPIC = "backup.recovery_point.created"
        vault_id: UUID
        item_id: UUID
        vm_key: str
        vm_name: str
        job_id: UUID
        taken_at: datetime
        consistency: str
        tiers: list[Tier]
        expires_at: datetime
        logical_bytes: int
        stored_bytes: int
        manifest_digest: str
        disks: list[DiskInfo]
        encryption: EncryptionKeys | None = None  # an encrypted VM's key names; the keys are in the manifest
        provisioned_gb: int = 0  # the VM's disks' provisioned size: its size as a protected instance

    class RetentionChanged(Aggregate.Event):
        TOPIC = "backup.recovery_point.retention_changed"
        tiers: list[Tier]
        expires_at: datetime
        reason: str

    class Held(Aggregate.Event):
        TOPIC = "backup.recovery_point.held"
        reason: str

    class Expired(Aggregate.Event):
        TOPIC = "backup.recovery_point.expired"
        reason: str

    @staticmethod
    def create_id(job_id: UUID) -> UUID:
        return recovery_point_id_for(job_id)

    @event(Created)
    def __init__(
        self,
        vault_id: UUID,
        item_id: UUID,
        vm_key: str,
        vm_name: str,
        job_id: UUID,
        taken_at: datetime,
        consistency: str,
        tiers: list[Tier],
        expires_at: datetime,
        logical_bytes: int,
        stored_bytes: int,
        manifest_digest: str,
        disks: list[DiskInfo],
        encryption: EncryptionKeys | None = None,
        provisioned_gb: int = 0,
    ) -> None:
        self.vault_id = vault_id
        self.item_id = item_id
        self.vm_key = vm_key
        self.vm_name = vm_name
        self.job_id = job_id
        self.taken_at = taken_at
        self.consistency = consistency
        self.tiers = list(tiers)
        self.expires_at = expires_at
        self.manifest_digest = manifest_digest
        self.disks = list(disks)
        self.encryption = encryption
        self.provisioned_gb = provisioned_gb
        self.expired = False
        self.held_reason = ""

    @property
    def on_demand(self) -> bool:
        return Tier.ON_DEMAND in self.tiers

    @event(RetentionChanged)
    def change_retention(self, tiers: list[Tier], expires_at: datetime, reason: str) -> None:
        self.tiers = list(tiers)
        self.expires_at = expires_at

    @event(Held)
    def hold(self, reason: str) -> None:
        self.held_reason = reason

    @event(Expired)
    def expire(self, reason: str) -> None:
        self.expired = True
