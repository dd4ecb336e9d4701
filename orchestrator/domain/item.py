"""A VM as the backup service knows it: which vault it belongs to, and its status there."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, SnapshotState
from orchestrator.domain.values import CheckResult, ItemStatus, VmRef
from orchestrator.errors import DomainError

if TYPE_CHECKING:
    from orchestrator.domain.vault import Vault

DEFAULT_RETAIN = timedelta(days=30)  # an on-demand backup's, when the operator names none
MAX_RETAIN = timedelta(days=99 * 365)


def item_id_for(vm_key: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/vms/{vm_key.lower()}")


class VirtualMachineState(SnapshotState):
    vm: VmRef
    vault_id: UUID
    vault_name: str
    job_id: UUID
    status: ItemStatus
    extension_version: str
    policy_id: UUID | None
    policy_name: str
    backup_job_id: UUID | None
    backup_retain_until: datetime | None
    last_slot: datetime | None
    last_backup_status: str
    last_backup_at: datetime | None
    latest_recovery_point: UUID | None
    recovery_point_ids: list[UUID]
    checks: list[CheckResult]
    purge_at: datetime | None = None  # soft deleted: when its data is purged (older snapshots have none)


class VirtualMachine(Aggregate):
    """One per VM ever registered; a VM belongs to at most one vault at a time."""

    TOPIC = "backup.vm"
    snapshot_state = VirtualMachineState

    class Created(Aggregate.Created):
        TOPIC = "backup.vm.registration_requested"
        vm: VmRef
        vault_id: UUID
        vault_name: str
        job_id: UUID

    class RegistrationRequested(Aggregate.Event):
        TOPIC = "backup.vm.reregistration_requested"
        vm: VmRef
        vault_id: UUID
        vault_name: str
        job_id: UUID

    class Registered(Aggregate.Event):
        TOPIC = "backup.vm.registered"
        job_id: UUID
        extension_version: str

    class RegistrationFailed(Aggregate.Event):
        TOPIC = "backup.vm.registration_failed"
        job_id: UUID
        error_code: str

    class Unregistered(Aggregate.Event):
        TOPIC = "backup.vm.unregistered"
        job_id: UUID

    class ProtectionRequested(Aggregate.Event):
        TOPIC = "backup.vm.protection_requested"
        policy_id: UUID
        policy_name: str
        job_id: UUID

    class Protected(Aggregate.Event):
        TOPIC = "backup.vm.protected"
        job_id: UUID
        protected_at: datetime

    class ProtectionFailed(Aggregate.Event):
        TOPIC = "backup.vm.protection_failed"
        job_id: UUID
        error_code: str

    class PolicyChanged(Aggregate.Event):
        TOPIC = "backup.vm.policy_changed"
        policy_id: UUID
        policy_name: str

    class BackupStarted(Aggregate.Event):
        TOPIC = "backup.vm.backup_started"
        job_id: UUID
        slot: datetime | None  # None: on demand
        retain_until: datetime | None

    class BackupSucceeded(Aggregate.Event):
        TOPIC = "backup.vm.backup_succeeded"
        job_id: UUID
        recovery_point_id: UUID
        taken_at: datetime
        with_warnings: bool
        status: ItemStatus

    class BackupFailed(Aggregate.Event):
        TOPIC = "backup.vm.backup_failed"
        job_id: UUID
        error_code: str
        status: ItemStatus

    class SlotsMissed(Aggregate.Event):
        TOPIC = "backup.vm.slots_missed"
        slots: list[datetime]
        reason: str

    class ProtectionStopped(Aggregate.Event):
        TOPIC = "backup.vm.protection_stopped"
        job_id: UUID
        delete_data: bool
        purge_at: datetime | None = None  # deleting data, soft: the data is kept until then

    class Undeleted(Aggregate.Event):
        """A soft-deleted item's data is back: protection stopped, data kept."""

        TOPIC = "backup.vm.undeleted"
        job_id: UUID

    class Purged(Aggregate.Event):
        """A soft-deleted item's window ended: its recovery points expired with this."""

        TOPIC = "backup.vm.purged"
        job_id: UUID

    class ChecksRecorded(Aggregate.Event):
        TOPIC = "backup.vm.checks_recorded"
        stage: str
        results: list[CheckResult]

    @staticmethod
    def create_id(vm: VmRef) -> UUID:
        return item_id_for(vm.key)

    @event(Created)
    def __init__(self, vm: VmRef, vault_id: UUID, vault_name: str, job_id: UUID) -> None:
        self.vm = vm
        self._start_registration(vault_id, vault_name, job_id)

    def _start_registration(self, vault_id: UUID, vault_name: str, job_id: UUID) -> None:
        self.vault_id = vault_id
        self.vault_name = vault_name
        self.job_id = job_id
        self.status = ItemStatus.REGISTERING
        self.extension_version = ""
        self.policy_id: UUID | None = None
        self.policy_name = ""
        self.backup_job_id: UUID | None = None
        self.backup_retain_until: datetime | None = None  # of the running backup, when on demand
        self.last_slot: datetime | None = None
        self.last_backup_status = ""
        self.last_backup_at: datetime | None = None
        self.latest_recovery_point: UUID | None = None
        self.recovery_point_ids: list[UUID] = []
        self.checks: list[CheckResult] = []
        self.purge_at: datetime | None = None

    def check_can_register(self, vault_id: UUID) -> None:
        if not self.status.holds_vm:
            return
        if self.vault_id == vault_id:
            raise DomainError(
                "VmAlreadyRegistered",
                f"VM {self.vm.display_name} is already {self.status.value} in this vault",
                field="vm_names",
            )
        raise DomainError(
            "VmInAnotherVault",
            f"VM {self.vm.display_name} is {self.status.value} in vault {self.vault_name!r}; "
            "unregister it there first (a VM belongs to one vault at a time)",
            field="vm_names",
        )

    @event(RegistrationRequested)
    def request_registration(self, vm: VmRef, vault_id: UUID, vault_name: str, job_id: UUID) -> None:
        self.vm = vm
        self._start_registration(vault_id, vault_name, job_id)

    @event(Registered)
    def registered(self, job_id: UUID, extension_version: str) -> None:
        self.status = ItemStatus.REGISTERED
        self.extension_version = extension_version

    @event(RegistrationFailed)
    def registration_failed(self, job_id: UUID, error_code: str) -> None:
        self.status = ItemStatus.REGISTRATION_FAILED

    def check_can_unregister(self, vault_id: UUID) -> None:
        if self.vault_id != vault_id or self.status is not ItemStatus.REGISTERED:
            raise DomainError(
                "VmNotRegistered",
                f"VM {self.vm.display_name} is not registered in this vault (status: {self.status.value})",
                field="vm_name",
            )

    @staticmethod
    def registered_in(vault: Vault, name: str, candidates: Iterable[VirtualMachine | None]) -> VirtualMachine:
        """The one VM of `vault` that `name` designates, among the items of the VMs named so."""
        items = [i for i in candidates if i is not None and i.vault_id == vault.id and i.status.holds_vm]
        if len(items) != 1:
            raise DomainError(
                "VmNotRegistered",
                f"several registered VMs match {name!r}; name one as <cloud service>/<vm>"
                if len(items) > 1
                else f"no VM named {name!r} is registered in vault {vault.name!r}",
                field="vm_name",
            )
        return items[0]

    @event(Unregistered)
    def unregister(self, job_id: UUID) -> None:
        self.status = ItemStatus.UNREGISTERED

    @event(ChecksRecorded)
    def record_checks(self, stage: str, results: list[CheckResult]) -> None:
        self.checks = list(results)

    # Protection

    @property
    def actively_protected(self) -> bool:
        return self.status in ACTIVE

    @property
    def holds_protected_data(self) -> bool:
        """Protected, or stopped with its data kept or soft deleted: what locks its vault's storage
        replication."""
        return self.status in ACTIVE or self.status in (ItemStatus.PROTECTION_STOPPED, ItemStatus.SOFT_DELETED)

    def check_not_protected_elsewhere(self, vault_id: UUID, name: str) -> None:
        if self.vault_id != vault_id and self.status in ACTIVE:
            raise DomainError(
                "VmInAnotherVault", f"VM {name} is protected in vault {self.vault_name!r}", field="vm_names"
            )

    def check_can_protect(self, vault_id: UUID) -> None:
        if self.vault_id != vault_id or not self.status.holds_vm:
            raise DomainError(
                "VmNotRegistered",
                f"VM {self.vm.display_name} is not registered in this vault; register it first",
                field="vm_names",
            )
        if self.status is ItemStatus.SOFT_DELETED:
            raise DomainError(
                "VmSoftDeleted",
                f"VM {self.vm.display_name} is soft deleted until {_iso(self.purge_at)}; undelete it first",
                field="vm_names",
            )
        if self.status in ACTIVE:
            raise DomainError(
                "VmAlreadyProtected",
                f"VM {self.vm.display_name} is already protected ({self.status.value}) with policy "
                f"{self.policy_name!r}; change its policy with change-policy",
                field="vm_names",
            )
        # Registered, or stopped with its data kept: protecting it (again) resumes its backups, its
        # kept points as they are.
        if self.status not in (ItemStatus.REGISTERED, ItemStatus.PROTECTION_STOPPED) or self.policy_id is not None:
            raise DomainError(
                "ProtectionInProgress",
                f"VM {self.vm.display_name} is {self.status.value}; wait for its current job to end",
                field="vm_names",
            )

    @event(ProtectionRequested)
    def request_protection(self, policy_id: UUID, policy_name: str, job_id: UUID) -> None:
        self.policy_id = policy_id
        self.policy_name = policy_name
        self.job_id = job_id

    @event(Protected)
    def protected(self, job_id: UUID, protected_at: datetime) -> None:
        self.status = ItemStatus.PROTECTED_INITIAL_BACKUP_PENDING
        self.last_slot = protected_at  # the first scheduled slot is the first one after this

    @event(ProtectionFailed)
    def protection_failed(self, job_id: UUID, error_code: str) -> None:
        self.policy_id = None
        self.policy_name = ""

    @event(PolicyChanged)
    def change_policy(self, policy_id: UUID, policy_name: str) -> None:
        self.policy_id = policy_id
        self.policy_name = policy_name

    def check_actively_protected(self) -> None:
        if self.status not in ACTIVE:
            raise DomainError(
                "VmNotProtected",
                f"VM {self.vm.display_name} is not protected (status: {self.status.value}); protect it first",
                field="vm_name",
            )

    def check_can_stop_protection(self, delete_data: bool) -> None:
        """Protection stops once; a VM whose protection stopped may still have its data deleted."""
        if self.status is ItemStatus.SOFT_DELETED:
            raise DomainError(
                "VmSoftDeleted",
                f"VM {self.vm.display_name}'s data is soft deleted already (purged at {_iso(self.purge_at)})",
                field="vm_name",
            )
        if not (self.status in ACTIVE or (delete_data and self.status is ItemStatus.PROTECTION_STOPPED)):
            raise DomainError("VmNotProtected", f"VM {self.vm.display_name} is not protected", field="vm_name")
        self.check_no_backup_running()

    # Backups

    @staticmethod
    def check_retain_until(requested: datetime | None, now: datetime) -> datetime:
        """How long an on-demand backup taken `now` is kept: `requested` (a time with its zone, after
        now and within 99 years), else DEFAULT_RETAIN."""
        if requested is not None and requested.utcoffset() is None:
            raise DomainError(
                "RetainUntilInvalid",
                f"retain-until {requested.isoformat()} needs its time zone (e.g. 2027-01-31T00:00+00:00)",
                field="retain_until",
            )
        retain_until = requested or now + DEFAULT_RETAIN
        if not now < retain_until <= now + MAX_RETAIN:
            raise DomainError(
                "RetainUntilInvalid",
                f"retain-until {retain_until.isoformat()} must be after now and within 99 years",
                field="retain_until",
            )
        return retain_until

    def check_no_backup_running(self) -> None:
        if self.backup_job_id is not None:
            raise DomainError(
                "BackupAlreadyInProgress",
                f"a backup of VM {self.vm.display_name} is already running (job {self.backup_job_id}); "
                "wait for it to end",
                field="vm_name",
            )

    @event(BackupStarted)
    def start_backup(self, job_id: UUID, slot: datetime | None, retain_until: datetime | None) -> None:
        self.backup_job_id = job_id
        self.backup_retain_until = retain_until
        if slot is not None:
            self.last_slot = slot

    def backup_succeeded(self, job_id: UUID, recovery_point_id: UUID, taken_at: datetime, with_warnings: bool) -> None:
        status = ItemStatus.PROTECTED if self.status in ACTIVE else self.status
        self._backup_succeeded(job_id, recovery_point_id, taken_at, with_warnings, status)

    @event(BackupSucceeded)
    def _backup_succeeded(
        self, job_id: UUID, recovery_point_id: UUID, taken_at: datetime, with_warnings: bool, status: ItemStatus
    ) -> None:
        self.backup_job_id = None
        self.status = status
        self.last_backup_status = "completed_with_warnings" if with_warnings else "completed"
        self.last_backup_at = taken_at
        self.latest_recovery_point = recovery_point_id
        self.recovery_point_ids.append(recovery_point_id)

    def backup_failed(self, job_id: UUID, error_code: str) -> None:
        status = ItemStatus.PROTECTION_ERROR if self.status is ItemStatus.PROTECTED else self.status
        self._backup_failed(job_id, error_code, status)

    @event(BackupFailed)
    def _backup_failed(self, job_id: UUID, error_code: str, status: ItemStatus) -> None:
        self.backup_job_id = None
        self.last_backup_status = "failed"
        self.status = status

    @event(SlotsMissed)
    def slots_missed(self, slots: list[datetime], reason: str) -> None:
        self.last_slot = max(slots)

    @event(ProtectionStopped)
    def stop_protection(self, job_id: UUID, delete_data: bool, purge_at: datetime | None = None) -> None:
        if delete_data and purge_at is not None:
            self.status = ItemStatus.SOFT_DELETED
            self.purge_at = purge_at
        elif delete_data:
            self._forget_data()
        else:
            self.status = ItemStatus.PROTECTION_STOPPED
        self.policy_id = None
        self.policy_name = ""

    def _forget_data(self) -> None:
        self.status = ItemStatus.REGISTERED
        self.recovery_point_ids = []
        self.latest_recovery_point = None
        self.purge_at = None

    # Soft delete

    @property
    def soft_deleted(self) -> bool:
        return self.status is ItemStatus.SOFT_DELETED

    def check_not_soft_deleted(self, field: str) -> None:
        """A soft-deleted item's points are kept but cannot be restored."""
        if self.soft_deleted:
            raise DomainError(
                "VmSoftDeleted",
                f"VM {self.vm.display_name} is soft deleted (purged at {_iso(self.purge_at)}); "
                "undelete it to restore from its recovery points",
                field=field,
            )

    def check_can_undelete(self, now: datetime) -> None:
        if not self.soft_deleted:
            raise DomainError(
                "VmNotSoftDeleted",
                f"VM {self.vm.display_name} is not soft deleted (status: {self.status.value})",
                field="vm_name",
            )
        if self.purge_due(now):
            raise DomainError(
                "SoftDeleteWindowEnded",
                f"VM {self.vm.display_name}'s soft-delete window ended at {_iso(self.purge_at)}: "
                "its data is being purged",
                field="vm_name",
            )

    def purge_due(self, now: datetime) -> bool:
        return self.soft_deleted and self.purge_at is not None and self.purge_at <= now

    @event(Undeleted)
    def undelete(self, job_id: UUID) -> None:
        self.status = ItemStatus.PROTECTION_STOPPED
        self.purge_at = None

    @event(Purged)
    def purged(self, job_id: UUID) -> None:
        self._forget_data()


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "?"


ACTIVE = (
    ItemStatus.PROTECTED_INITIAL_BACKUP_PENDING,
    ItemStatus.PROTECTED,
    ItemStatus.PROTECTION_ERROR,
)
