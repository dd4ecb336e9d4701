"""The vault: where VMs are registered and backup data is kept.

A vault holds what it was created as, its storage replication, which discovery is its latest (the
VMs that discovery saw are a `Discovery` of their own) and whether it was ever asked to protect a
VM. Which VMs it protects, and with which policy, the items say (`VirtualMachine`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, SnapshotState
from orchestrator.domain.names import vault_id_for
from orchestrator.domain.values import DeploymentModel, Immutability, Replication, SoftDelete, VaultKind, VmRef
from orchestrator.errors import DomainError

if TYPE_CHECKING:
    from orchestrator.domain.discovery import Discovery
    from orchestrator.domain.item import VirtualMachine


class VaultState(SnapshotState):
    name: str
    subscription: str
    region: str
    resource_group: str
    kind: VaultKind
    replication: Replication
    backup_goal: str
    discovered_at_job: UUID | None
    protection_started: bool
    soft_delete: SoftDelete = SoftDelete.ENABLED  # (a snapshot taken before deletion protection has none)
    soft_delete_days: int = 14
    immutability: Immutability = Immutability.DISABLED
    guard_id: UUID | None = None
    guard_name: str = ""
    deleted: bool = False


SOFT_DELETE_DAYS = range(14, 181)  # how long soft-deleted data may be kept, in days (14 by default)


class Vault(Aggregate):
    TOPIC = "backup.vault"
    snapshot_state = VaultState
    # 2: the inventory and the protected item count left the vault (issue 15); see upcast_v1_v2.
    class_version: ClassVar[int] = 2

    class Created(Aggregate.Created):
        TOPIC = "backup.vault.created"
        name: str
        subscription: str
        region: str
        resource_group: str
        kind: VaultKind
        replication: Replication
        backup_goal: str

    class ReplicationChanged(Aggregate.Event):
        TOPIC = "backup.vault.replication_changed"
        replication: Replication

    class SoftDeleteChanged(Aggregate.Event):
        TOPIC = "backup.vault.soft_delete_changed"
        state: SoftDelete
        retention_days: int

    class ImmutabilityChanged(Aggregate.Event):
        TOPIC = "backup.vault.immutability_changed"
        state: Immutability

    class Deleted(Aggregate.Event):
        """The vault is gone (it held no VM any more); its name is not made again."""

        TOPIC = "backup.vault.deleted"

    class GuardAttached(Aggregate.Event):
        TOPIC = "backup.vault.guard_attached"
        guard_id: UUID
        guard_name: str

    class GuardDetached(Aggregate.Event):
        TOPIC = "backup.vault.guard_detached"

    class Discovered(Aggregate.Event):
        """A discovery job reported: its VMs are the `Discovery` of that job."""

        TOPIC = "backup.vault.discovered"
        job_id: UUID

    class ProtectionStarted(Aggregate.Event):
        """The vault was asked to protect a VM for the first time."""

        TOPIC = "backup.vault.protection_started"

    class InventoryRecorded(Aggregate.Event):
        """History: a discovery's VMs, when the vault held them. Read as `Discovered`, and by
        `Orchestrator.discovery_of` for a vault whose latest discovery is one of these."""

        TOPIC = "backup.vault.inventory_recorded"
        job_id: UUID
        vms: list[VmRef]

    class ProtectedItemsCounted(Aggregate.Event):
        """History: the count of protected items the vault once kept. Read as `ProtectionStarted`."""

        TOPIC = "backup.vault.protected_items_counted"
        count: int

    @staticmethod
    def create_id(subscription: str, name: str) -> UUID:
        return vault_id_for(subscription, name)

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A snapshot of a vault that held its inventory and counted its protected items."""
        state.pop("inventory", None)
        state["protection_started"] = bool(state.pop("protected_item_count", 0))

    @event(Created)
    def __init__(
        self,
        name: str,
        subscription: str,
        region: str,
        resource_group: str,
        kind: VaultKind,
        replication: Replication,
        backup_goal: str,
    ) -> None:
        self.name = name
        self.subscription = subscription
        self.region = region
        self.resource_group = resource_group
        self.kind = kind
        self.replication = replication
        self.backup_goal = backup_goal
        self.discovered_at_job: UUID | None = None
        self.protection_started = False
        self.soft_delete = SoftDelete.ENABLED
        self.soft_delete_days = SOFT_DELETE_DAYS.start
        self.immutability = Immutability.DISABLED
        self.guard_id: UUID | None = None
        self.guard_name = ""
        self.deleted = False

    @staticmethod
    def check_name_free(subscription: str, name: str, existing: Vault | None) -> None:
        """`existing`: the vault of that name, deleted ones too (a vault's id derives from its name,
        and its history stays: a deleted vault's name is not made again)."""
        if existing is not None and existing.deleted:
            raise DomainError(
                "VaultNameTaken",
                f"subscription {subscription!r} had a vault named {name!r}, deleted: a vault's name is kept "
                "with its history and not made again; choose another",
                field="name",
            )
        if existing is not None:
            raise DomainError(
                "VaultNameTaken",
                f"subscription {subscription!r} already has a vault named {name!r} "
                "(names are unique per subscription, ignoring case)",
                field="name",
            )

    def check_deletable(self, items: Iterable[VirtualMachine]) -> None:
        """`items`: the vault's items. A vault is deleted empty: no VM registered or being
        registered, protected, stopped with its data kept or soft deleted (each must be unregistered,
        after its data is deleted, and soft-deleted data purged)."""
        held = sorted(f"{item.vm.display_name} ({item.status.value})" for item in items if item.status.holds_vm)
        if held:
            raise DomainError(
                "VaultNotEmpty",
                f"vault {self.name!r} still holds {len(held)} VM(s): {', '.join(held[:10])}"
                + (" and more" if len(held) > 10 else "")
                + "; stop their protection with their data deleted, wait for soft-deleted data's purge, and "
                "unregister them first",
                field="vault_id",
            )

    @event(Deleted)
    def delete(self) -> None:
        self.deleted = True

    # Replication

    def check_replication_changeable(self, items: Iterable[VirtualMachine]) -> None:
        """`items`: the vault's items (needed only once the vault was asked to protect one)."""
        protected_items = sum(item.holds_protected_data for item in items) if self.protection_started else 0
        if protected_items:
            raise DomainError(
                "ReplicationLocked",
                f"vault {self.name!r} already protects {protected_items} item(s); "
                "storage replication can only be changed before the first item is protected",
                field="replication",
            )

    @event(ReplicationChanged)
    def change_replication(self, replication: Replication) -> None:
        self.replication = replication

    # Discovery and registration

    @event(Discovered)
    def discovered(self, job_id: UUID) -> None:
        self.discovered_at_job = job_id

    @event(InventoryRecorded)
    def _inventory_recorded(self, job_id: UUID, vms: list[VmRef]) -> None:
        self.discovered_at_job = job_id

    def check_discovered(self, latest: Discovery | None) -> Discovery:
        """The vault's latest discovery (`latest`): registering needs one."""
        if latest is None:
            raise DomainError(
                "DiscoveryRequired",
                f"vault {self.name!r} has not discovered VMs yet; run discover first",
                field="vault_id",
            )
        return latest

    def check_can_hold(self, vm: VmRef) -> None:
        """A vault protects VMs of its own region, and a classic vault classic VMs only."""
        if vm.region != self.region:
            raise DomainError(
                "RegionMismatch",
                f"VM {vm.display_name} is in region {vm.region!r} but vault {self.name!r} is in "
                f"{self.region!r}; a vault protects VMs of its own region only",
                field="vm_names",
            )
        if self.kind is VaultKind.BACKUP_VAULT and vm.deployment_model is not DeploymentModel.CLASSIC:
            raise DomainError(
                "VmNotClassic",
                f"VM {vm.display_name} is a Resource Manager VM; a classic backup vault takes classic "
                "VMs only: use a Recovery Services vault",
                field="vm_names",
            )

    # Protection and restore

    def note_protection_requested(self) -> bool:
        """Whether the vault changed: the first protection request marks it (once)."""
        if self.protection_started:
            return False
        self._protection_started()
        return True

    @event(ProtectionStarted)
    def _protection_started(self) -> None:
        self.protection_started = True

    @event(ProtectedItemsCounted)
    def _protected_items_counted(self, count: int) -> None:
        self.protection_started = self.protection_started or count > 0

    def check_restore_region(self, region: str) -> None:
        if region and region != self.region:
            raise DomainError(
                "CrossRegionRestoreUnsupported",
                f"restore to region {region!r} is refused: the vault and its VMs are in {self.region!r}",
                field="region",
            )

    # Deletion protection

    def check_soft_delete_change(self, state: SoftDelete, retention_days: int) -> bool:
        """Whether setting soft delete to `state`, keeping deleted data `retention_days` days,
        changes the vault: the days are 14 to 180, and `always_on` stays on."""
        if retention_days not in SOFT_DELETE_DAYS:
            raise DomainError(
                "SoftDeleteRetentionInvalid",
                f"soft-deleted data is kept {SOFT_DELETE_DAYS.start} to {SOFT_DELETE_DAYS.stop - 1} days, "
                f"not {retention_days}",
                field="retention_days",
            )
        if self.soft_delete is SoftDelete.ALWAYS_ON and state is not SoftDelete.ALWAYS_ON:
            raise DomainError(
                "SoftDeleteAlwaysOn",
                f"soft delete of vault {self.name!r} is always on: it cannot be {state.value} again",
                field="state",
            )
        return (state, retention_days) != (self.soft_delete, self.soft_delete_days)

    def soft_delete_weakened_by(self, state: SoftDelete, retention_days: int) -> bool:
        """Whether the change disables soft delete or shortens its window: a critical operation."""
        if self.soft_delete is SoftDelete.DISABLED:
            return False
        return state is SoftDelete.DISABLED or retention_days < self.soft_delete_days

    @event(SoftDeleteChanged)
    def change_soft_delete(self, state: SoftDelete, retention_days: int) -> None:
        self.soft_delete = state
        self.soft_delete_days = retention_days

    def soft_delete_purge_at(self, now: datetime) -> datetime | None:
        """When data deleted `now` is purged: after the window in force now (None: at once)."""
        if self.soft_delete is SoftDelete.DISABLED:
            return None
        return now + timedelta(days=self.soft_delete_days)

    def check_immutability_change(self, state: Immutability) -> bool:
        """Whether setting immutability to `state` changes the vault: disabled and enabled go either
        way, enabled goes to locked, and locked stays."""
        if self.immutability is Immutability.LOCKED and state is not Immutability.LOCKED:
            raise DomainError(
                "ImmutabilityLocked",
                f"vault {self.name!r} is locked immutable: immutability cannot be {state.value} again",
                field="state",
            )
        if self.immutability is Immutability.DISABLED and state is Immutability.LOCKED:
            raise DomainError(
                "ImmutabilityNotEnabled",
                f"vault {self.name!r} is not immutable yet: enable immutability before locking it",
                field="state",
            )
        return state is not self.immutability

    @event(ImmutabilityChanged)
    def change_immutability(self, state: Immutability) -> None:
        self.immutability = state

    @property
    def immutable(self) -> bool:
        return self.immutability is not Immutability.DISABLED

    def check_mutable(self, what: str, field: str) -> None:
        """Refuse `what` (deleting or shortening backup data) while the vault is immutable."""
        if self.immutable:
            raise DomainError(
                "VaultImmutable",
                f"vault {self.name!r} is immutable ({self.immutability.value}): {what} is refused",
                field=field,
            )

    # Multi-user authorization

    def check_guard_attachable(self, guard_id: UUID) -> bool:
        """Whether attaching the guard changes the vault: one guard per vault, detached first."""
        if self.guard_id is not None and self.guard_id != guard_id:
            raise DomainError(
                "GuardAlreadyAttached",
                f"vault {self.name!r} has resource guard {self.guard_name!r} attached: detach it first",
                field="guard",
            )
        return self.guard_id is None

    @event(GuardAttached)
    def attach_guard(self, guard_id: UUID, guard_name: str) -> None:
        self.guard_id = guard_id
        self.guard_name = guard_name

    def check_guard_attached(self, guard_id: UUID | None = None) -> UUID:
        """The vault's guard (and, given `guard_id`, that it is that one)."""
        if self.guard_id is None or (guard_id is not None and guard_id != self.guard_id):
            raise DomainError(
                "GuardNotAttached",
                f"vault {self.name!r} has "
                + (
                    f"resource guard {self.guard_name!r} attached, not that one"
                    if self.guard_id
                    else "no resource guard"
                ),
                field="guard",
            )
        return self.guard_id

    @event(GuardDetached)
    def detach_guard(self) -> None:
        self.guard_id = None
        self.guard_name = ""
