"""A recovery point: one backup's data, kept until its tiers' retention ends."""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, Value
from orchestrator.domain.schedule import Tier
from orchestrator.domain.values import EncryptionKeys
from orchestrator.errors import DomainError

HELD = "newest recovery point of an actively protected VM"


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

    class Verified(Aggregate.Event):
        """A verify job read the point back: every block there and hashing right (`ok`), or the
        first problem found and the block (or the manifest) it is in."""

        TOPIC = "backup.recovery_point.verified"
        job_id: UUID
        ok: bool
        problem: str
        block: str
        verified_at: datetime

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
        self.verified_at: datetime | None = None
        self.verify_ok: bool | None = None

    @property
    def on_demand(self) -> bool:
        return Tier.ON_DEMAND in self.tiers

    def check_live(self) -> None:
        if self.expired:
            raise DomainError(
                "RecoveryPointExpired", f"recovery point {self.id} has expired", field="recovery_point_id"
            )

    def check_encrypted(self) -> EncryptionKeys:
        """The key names of an encrypted VM's point: restoring keys needs them."""
        if self.encryption is None:
            raise DomainError(
                "RecoveryPointNotEncrypted",
                f"recovery point {self.id} of VM {self.vm_name} is not of an encrypted VM: it holds no keys",
                field="recovery_point_id",
            )
        return self.encryption

    def is_due(self, vault_id: UUID, now: datetime) -> bool:
        """Whether retention in `vault_id` at `now` has this point to expire (or to hold)."""
        return self.vault_id == vault_id and not self.expired and self.expires_at <= now

    def expire_or_hold(self, newest_of_protected_vm: bool) -> str:
        """A due point expires, unless it is the newest of an actively protected VM, which is held.
        Returns what changed: "expired", "held", or "" (held already)."""
        if newest_of_protected_vm:
            if self.held_reason == HELD:
                return ""
            self.hold(HELD)
            return "held"
        self.expire(f"retention ended at {self.expires_at.isoformat()}")
        return "expired"

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

    def check_in_vault(self, vault_id: UUID) -> None:
        if self.vault_id != vault_id:
            raise DomainError(
                "RecoveryPointNotFound",
                f"recovery point {self.id} is not one of this vault's",
                field="recovery_point_id",
            )

    @event(Verified)
    def record_verification(self, job_id: UUID, ok: bool, problem: str, block: str, verified_at: datetime) -> None:
        self.verified_at = verified_at
        self.verify_ok = ok
