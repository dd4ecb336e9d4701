"""The vault: where VMs are registered and backup data is kept."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, SnapshotState
from orchestrator.domain.values import Replication, VaultKind, VmRef
from orchestrator.errors import DomainError


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
    protected_item_count: int
    inventory: list[VmRef]
    discovered_at_job: UUID | None


class Vault(Aggregate):
    TOPIC = "backup.vault"
    snapshot_state = VaultState

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

    class InventoryRecorded(Aggregate.Event):
        TOPIC = "backup.vault.inventory_recorded"
        job_id: UUID
        vms: list[VmRef]

    class ProtectedItemsCounted(Aggregate.Event):
        TOPIC = "backup.vault.protected_items_counted"
        count: int

    @staticmethod
    def create_id(subscription: str, name: str) -> UUID:
        return vault_id_for(subscription, name)

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
        self.protected_item_count = 0
        self.inventory: list[VmRef] = []
        self.discovered_at_job: UUID | None = None

    def check_replication_changeable(self) -> None:
        if self.protected_item_count:
            raise DomainError(
                "ReplicationLocked",
                f"vault {self.name!r} already protects {self.protected_item_count} item(s); "
                "storage replication can only be changed before the first item is protected",
                field="replication",
            )

    @event(ProtectedItemsCounted)
    def count_protected_items(self, count: int) -> None:
        self.protected_item_count = count

    @event(ReplicationChanged)
    def change_replication(self, replication: Replication) -> None:
        self.replication = replication

    @event(InventoryRecorded)
    def record_inventory(self, job_id: UUID, vms: list[VmRef]) -> None:
        """What the last discovery saw in the vault's subscription (all regions)."""
        self.inventory = list(vms)
        self.discovered_at_job = job_id

    def find_in_inventory(self, name: str) -> list[VmRef]:
        """VMs matching `name` or `qualifier/name` (cloud service or resource group)."""
        return [vm for vm in self.inventory if vm.answers_to(name)]
