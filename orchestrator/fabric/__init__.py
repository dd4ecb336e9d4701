"""The fabric port: how workers see and act on VMs. `LocalFabric` is the first implementation."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol

from orchestrator.fabric.inventory import DiskSpec, FabricVm, KeyVaultSpec, VmSpec

BACKUP_SERVICE = "Backup Management Service"  # the principal key vault access policies name


class Fabric(Protocol):
    def list_vms(self, subscription: str) -> list[FabricVm]:
        """Every VM of the subscription, in every region."""
        ...

    def get_vm(self, vm_key: str) -> FabricVm:
        """One VM by key; raises OrchestratorError `VmNotFound` when it is gone."""
        ...

    def extension_version(self, vm: FabricVm) -> str | None:
        """The installed backup extension's version, or None."""
        ...

    def install_extension(self, vm: FabricVm) -> str:
        """Install the backup extension on a running VM; returns its version."""
        ...

    def disk_paths(self, vm_key: str) -> list[tuple[str, Path]]:
        """Each disk's name and a readable image of its current content."""
        ...

    def open_disk(self, vm: FabricVm, disk: DiskSpec) -> BinaryIO:
        """A disk's image opened for reading, checked as it was opened (not only by its path, which
        may change in between): `InventoryInvalid` when it is not a disk image this fabric may read."""
        ...

    def run_script(self, vm: FabricVm, script: Path, timeout: float) -> tuple[bool, str]:
        """Run a snapshot script in the VM; (succeeded, why not)."""
        ...

    def find_vm(self, subscription: str, name: str) -> FabricVm | None: ...

    def restored_disk_dir(self, subscription: str, name: str) -> Path:
        """Where a restore writes the disks of the VM it creates."""
        ...

    def create_vm(self, subscription: str, spec: VmSpec) -> FabricVm:
        """Create a VM from restored disks; refuses a name that exists."""
        ...

    def key_vault(self, subscription: str, name: str) -> KeyVaultSpec | None:
        """A key vault as it is now (its secrets and keys included), or None when it is gone."""
        ...

    def backup_key_material(self, vm: FabricVm) -> dict[str, bytes]:
        """What the key vault's backup operation gives the backup service for an encrypted VM:
        `{"bek_secret": ..., "kek_key": ...}` (no KEK for a BEK-only VM). Raises `KeyVaultNotFound`,
        `NotAuthorized` or `KeyOrSecretNotFound`."""
        ...

    def restore_key_material(
        self, subscription: str, key_vault: str, secrets: dict[str, bytes], keys: dict[str, bytes]
    ) -> dict[str, str]:
        """Put secrets and keys back into a key vault as the backup service; returns each one's
        outcome ("restored" or "present"). Raises `KeyVaultNotFound`, `NotAuthorized` or
        `KeyOrSecretExists` (same name, other value)."""
        ...
