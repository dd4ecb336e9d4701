"""Value objects shared by aggregates, commands and read models."""

from __future__ import annotations

from enum import Enum

from orchestrator.domain.base import Value


class VaultKind(str, Enum):
    RECOVERY_SERVICES = "recovery_services"
    BACKUP_VAULT = "backup_vault"  # the classic backup vault: classic VMs only


class Replication(str, Enum):
    GEO = "geo"
    LOCAL = "local"


class SoftDelete(str, Enum):
    """A vault's soft delete: deleted backup data is kept for its window first (`always_on` cannot be
    turned off again)."""

    ENABLED = "enabled"
    DISABLED = "disabled"
    ALWAYS_ON = "always_on"


class Immutability(str, Enum):
    """A vault's immutability: `enabled` can be turned off again, `locked` cannot."""

    DISABLED = "disabled"
    ENABLED = "enabled"
    LOCKED = "locked"


class DeploymentModel(str, Enum):
    CLASSIC = "classic"
    RESOURCE_MANAGER = "resource_manager"


class Operation(str, Enum):
    DISCOVERY = "discovery"
    REGISTER = "register"
    CONFIGURE_PROTECTION = "configure_protection"
    BACKUP = "backup"
    RESTORE = "restore"
    RESTORE_KEYS = "restore_keys"
    RETENTION = "retention"
    UNREGISTER = "unregister"
    VERIFY = "verify"


class JobState(str, Enum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    COMPLETED_WITH_WARNINGS = "completed_with_warnings"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self is not JobState.IN_PROGRESS


class ItemStatus(str, Enum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    REGISTRATION_FAILED = "registration_failed"
    UNREGISTERED = "unregistered"
    PROTECTED_INITIAL_BACKUP_PENDING = "protected_initial_backup_pending"
    PROTECTED = "protected"
    PROTECTION_ERROR = "protection_error"
    PROTECTION_STOPPED = "protection_stopped"
    SOFT_DELETED = "soft_deleted"  # protection stopped with its data deleted: kept until the purge

    @property
    def holds_vm(self) -> bool:
        """Whether a VM in this status belongs to its vault (and to no other)."""
        return self not in (ItemStatus.REGISTRATION_FAILED, ItemStatus.UNREGISTERED)


class VmRef(Value):
    """A VM as discovery saw it: enough to identify it and to check the registration rules."""

    subscription: str
    name: str
    cloud_service: str = ""
    resource_group: str
    region: str
    deployment_model: DeploymentModel

    @property
    def qualifier(self) -> str:
        """What tells apart VMs of the same name: the cloud service, else the resource group."""
        return self.cloud_service or self.resource_group

    @property
    def key(self) -> str:
        return f"{self.subscription}/{self.qualifier}/{self.name}"

    def answers_to(self, name: str) -> bool:
        """Whether `name` (a VM name, or `qualifier/name` for VMs sharing a name) designates this VM."""
        qualifier, _, vm_name = name.rpartition("/")
        return self.name.lower() == vm_name.lower() and (not qualifier or self.qualifier.lower() == qualifier.lower())

    @property
    def display_name(self) -> str:
        """The VM's name, with its cloud service for classic VMs (which share names across them)."""
        return f"{self.cloud_service}/{self.name}" if self.cloud_service else self.name


class Consistency(str, Enum):
    APPLICATION = "application"
    FILE_SYSTEM = "file_system"
    CRASH = "crash"


class CheckResult(Value):
    """One precheck's finding: an error blocks the operation, a warning lets it run."""

    code: str
    severity: str  # "error" | "warning"
    message: str
    remedy: str


class EncryptionKeys(Value):
    """Which key vault, BEK secret and KEK key an encrypted VM uses: names only, never key material."""

    key_vault: str
    bek_secret: str
    kek_key: str | None = None


class Finding(Value):
    """A warning that did not stop an operation (its job ends `completed_with_warnings`)."""

    code: str
    message: str
