"""The registration rules, which read the vault's last discovery and the VMs' items."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.domain.item import VirtualMachine
from orchestrator.domain.values import DeploymentModel, VaultKind, VmRef
from orchestrator.domain.vault import Vault
from orchestrator.errors import DomainError, for_each_vm

ItemLookup = Callable[[str], "VirtualMachine | None"]


def plan_registrations(
    vault: Vault, vm_names: list[str], item_of: ItemLookup
) -> list[tuple[VmRef, VirtualMachine | None]]:
    """Resolve every name to a VM that may join `vault`, or refuse the whole request."""
    if vault.discovered_at_job is None and vm_names:
        raise DomainError(
            "DiscoveryRequired",
            f"vault {vault.name!r} has not discovered VMs yet; run discover first",
            field="vault_id",
        )

    def plan(name: str) -> tuple[VmRef, VirtualMachine | None]:
        vm = resolve_vm(vault, name)
        item = item_of(vm.key)
        if item is not None:
            item.check_can_register(vault.id)
        return vm, item

    plans = {vm.key: (vm, item) for vm, item in for_each_vm(vm_names, "registered", plan)}
    return list(plans.values())


def resolve_vm(vault: Vault, name: str) -> VmRef:
    matches = vault.find_in_inventory(name)
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
    vm = matches[0]
    if vm.region != vault.region:
        raise DomainError(
            "RegionMismatch",
            f"VM {vm.display_name} is in region {vm.region!r} but vault {vault.name!r} is in "
            f"{vault.region!r}; a vault protects VMs of its own region only",
            field="vm_names",
        )
    if vault.kind is VaultKind.BACKUP_VAULT and vm.deployment_model is not DeploymentModel.CLASSIC:
        raise DomainError(
            "VmNotClassic",
            f"VM {vm.display_name} is a Resource Manager VM; a classic backup vault takes classic "
            "VMs only: use a Recovery Services vault",
            field="vm_names",
        )
    return vm


def summarize_inventory(vault: Vault, item_of: ItemLookup) -> dict[str, Any]:
    """Discovery's answer: the VMs of the vault's region not yet registered anywhere, and why
    every other VM of the subscription was not listed."""
    new: list[str] = []
    excluded: list[dict[str, str]] = []
    for vm in vault.inventory:
        item = item_of(vm.key)
        if vm.region != vault.region:
            excluded.append({"vm": vm.display_name, "reason": f"in region {vm.region}"})
        elif item is not None and item.status.holds_vm:
            where = "this vault" if item.vault_id == vault.id else f"vault {item.vault_name}"
            excluded.append({"vm": vm.display_name, "reason": f"already {item.status.value} in {where}"})
        else:
            new.append(vm.display_name)
    return {"new_vms": sorted(new), "excluded": excluded, "scanned": len(vault.inventory)}
