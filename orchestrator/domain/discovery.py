"""A discovery: the VMs one discovery job saw in its vault's subscription (all regions), written
once by the job's report and read by registration, protection and restore. One per job, so a
vault stays small however many VMs its subscription holds, and a new discovery replaces nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate
from orchestrator.domain.values import VmRef
from orchestrator.errors import DomainError

if TYPE_CHECKING:
    from orchestrator.domain.item import VirtualMachine
    from orchestrator.domain.vault import Vault

ItemLookup = Callable[[str], "VirtualMachine | None"]


def discovery_id_for(job_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"/jobs/{job_id}/discovery")


class Discovery(Aggregate):
    TOPIC = "backup.discovery"

    class Created(Aggregate.Created):
        TOPIC = "backup.discovery.created"
        vault_id: UUID
        job_id: UUID
        vms: list[VmRef]

    @staticmethod
    def create_id(vault_id: UUID, job_id: UUID, vms: list[VmRef]) -> UUID:
        return discovery_id_for(job_id)

    @event(Created)
    def __init__(self, vault_id: UUID, job_id: UUID, vms: list[VmRef]) -> None:
        self.vault_id = vault_id
        self.job_id = job_id
        self.vms = list(vms)

    def find(self, name: str) -> list[VmRef]:
        """VMs matching `name` or `qualifier/name` (cloud service or resource group)."""
        return [vm for vm in self.vms if vm.answers_to(name)]

    def resolve(self, vault: Vault, name: str) -> VmRef:
        """The one VM `name` designates, which `vault` may hold."""
        matches = self.find(name)
        if not matches:
            raise DomainError(
                "VmNotFound",
                f"VM {name!r} does not exist in subscription {vault.subscription!r} as of the last "
                "discovery; check the name, or run discover again if the VM was created since",
                field="vm_names",
            )
        if len(matches) > 1:
            choices = ", ".join(sorted(vm.display_name for vm in matches))
            raise DomainError(
                "VmNameAmbiguous",
                f"several VMs are named {name!r} ({choices}); name one as <cloud service>/<vm>",
                field="vm_names",
            )
        vault.check_can_hold(matches[0])
        return matches[0]

    def check_no_vm_named(self, name: str) -> None:
        """A restore creates a new VM, never one over a VM that exists."""
        if self.find(name):
            raise DomainError(
                "RestoreTargetExists",
                f"a VM named {name!r} exists; restore creates a new VM and never "
                "replaces one: choose another name, or restore disks",
                field="target_vm_name",
            )

    def summary(self, vault: Vault, item_of: ItemLookup) -> dict[str, Any]:
        """Discovery's answer: the VMs of the vault's region not yet registered anywhere, and why
        every other VM of the subscription was not listed."""
        new: list[str] = []
        excluded: list[dict[str, str]] = []
        for vm in self.vms:
            item = item_of(vm.key)
            if vm.region != vault.region:
                excluded.append({"vm": vm.display_name, "reason": f"in region {vm.region}"})
            elif item is not None and item.status.holds_vm:
                where = "this vault" if item.vault_id == vault.id else f"vault {item.vault_name}"
                excluded.append({"vm": vm.display_name, "reason": f"already {item.status.value} in {where}"})
            else:
                new.append(vm.display_name)
        return {"new_vms": sorted(new), "excluded": excluded, "scanned": len(self.vms)}
