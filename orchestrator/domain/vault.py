"""The vault: where VMs are registered and backup data is kept.

A vault holds what it was created as, its storage replication, which discovery is its latest (the
VMs that discovery saw are a `Discovery` of their own) and whether it was ever asked to protect a
VM. Which VMs it protects, and with which policy, the items say (`VirtualMachine`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, SnapshotState
from orchestrator.domain.values import DeploymentModel, Replication, VaultKind, VmRef
from orchestrator.errors import DomainError

if TYPE_CHECKING:
    from orchestrator.domain.discovery import Discovery
    from orchestrator.domain.item import VirtualMachine


def vault_id_for(subscription: str, name: str) -> UUID:
    """Vault names are unique per subscription, case-insensitively, so the id derives from both."""
    return uuid5(NAMESPACE_URL, f"/subscriptions/{subscription.lower()}/vaults/{name.lower()}")


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

    @staticmethod
    def check_name_free(subscription: str, name: str, existing: Vault | None) -> None:
        if existing is not None:
            raise DomainError(
                "VaultNameTaken",
                f"subscription {subscription!r} already has a vault named {name!r} "
                "(names are unique per subscription, ignoring case)",
                field="name",
            )

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
