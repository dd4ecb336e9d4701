"""One fabric for the workers, each subscription served by the implementation its inventory entry
names (`fabric: local`, the default, or `fabric: qemu`). Key vaults are the inventory's, whichever
fabric a subscription's VMs are on."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError
from orchestrator.fabric import Capture
from orchestrator.fabric.agent import AgentSettings
from orchestrator.fabric.inventory import FabricVm, KeyVaultSpec, VmSpec, inventory_subscriptions
from orchestrator.fabric.local import LocalFabric
from orchestrator.fabric.qemu import QemuFabric


class Fabrics:
    def __init__(self, local: LocalFabric, qemu: QemuFabric) -> None:
        self.local, self.qemu = local, qemu

    @classmethod
    def of(cls, settings: Settings) -> Fabrics:
        inventory = settings.fabric_path
        return cls(
            LocalFabric(inventory, settings.image_roots_for()),
            QemuFabric(
                inventory,
                restore_format=settings.qemu_restore_format,
                start_restored=settings.qemu_start_restored,
                agent=AgentSettings(
                    settings.qemu_agent_timeout, settings.qemu_agent_min_version, settings.qemu_freeze_timeout
                ),
            ),
        )

    @property
    def inventory_path(self) -> Path:
        return self.local.inventory_path

    def _of(self, subscription: str) -> LocalFabric | QemuFabric:
        try:
            subscriptions = inventory_subscriptions(self.local.inventory_path)
        except OrchestratorError:
            return self.local  # which says what is wrong with the inventory
        qemu = any(s.name == subscription and s.fabric == "qemu" for s in subscriptions)
        return self.qemu if qemu else self.local

    def _serving(self, vm: FabricVm) -> LocalFabric | QemuFabric:
        return self.qemu if vm.qemu is not None else self.local

    def list_vms(self, subscription: str) -> list[FabricVm]:
        return self._of(subscription).list_vms(subscription)

    def get_vm(self, vm_key: str) -> FabricVm:
        return self._of(vm_key.split("/", 1)[0]).get_vm(vm_key)

    def find_vm(self, subscription: str, name: str) -> FabricVm | None:
        return self._of(subscription).find_vm(subscription, name)

    def disk_paths(self, vm_key: str) -> list[tuple[str, Path]]:
        return self._of(vm_key.split("/", 1)[0]).disk_paths(vm_key)

    def extension_version(self, vm: FabricVm) -> str | None:
        return self._serving(vm).extension_version(vm)

    def install_extension(self, vm: FabricVm) -> str:
        return self._serving(vm).install_extension(vm)

    def capture(self, vm: FabricVm, base_point: str | None, point: str) -> AbstractContextManager[Capture]:
        return self._serving(vm).capture(vm, base_point, point)

    def run_script(self, vm: FabricVm, script: Path, timeout: float) -> tuple[bool, str]:
        return self._serving(vm).run_script(vm, script, timeout)

    def restored_disk_dir(self, subscription: str, name: str) -> Path:
        return self._of(subscription).restored_disk_dir(subscription, name)

    def create_vm(self, subscription: str, spec: VmSpec) -> FabricVm:
        return self._of(subscription).create_vm(subscription, spec)

    def key_vault(self, subscription: str, name: str) -> KeyVaultSpec | None:
        return self.local.key_vault(subscription, name)

    def backup_key_material(self, vm: FabricVm) -> dict[str, bytes]:
        return self.local.backup_key_material(vm)

    def restore_key_material(
        self, subscription: str, key_vault: str, secrets: dict[str, bytes], keys: dict[str, bytes]
    ) -> dict[str, str]:
        return self.local.restore_key_material(subscription, key_vault, secrets, keys)
