"""The fabric port: how workers see and act on VMs. `LocalFabric` (an inventory of image files) is
the first implementation, `QemuFabric` (running QEMU/KVM VMs over QMP) the second; `Fabrics` routes
each subscription to the one its inventory entry names."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orchestrator.domain.values import Consistency, Finding
from orchestrator.fabric.inventory import FabricVm, KeyVaultSpec, VmSpec

BACKUP_SERVICE = "Backup Management Service"  # the principal key vault access policies name


class DiskReader(Protocol):
    def read_into(self, buffer: memoryview, offset: int) -> int:
        """Fill `buffer` with the disk's bytes from `offset`; how many (fewer at the end, 0 past it).
        Called from several threads at once."""
        ...


@dataclass
class CapturedDisk:
    """A disk of a point-in-time capture: its frozen content, and what is known of its changes."""

    name: str
    size: int
    reader: DiskReader
    fingerprint: str = ""  # what says the image is as the last point read it ("": never the same)
    # Byte ranges changed since the capture's base point (changed-block tracking); None: not known,
    # every block is read. `tracking` says which, in words, for the job's result.
    changed: list[tuple[int, int]] | None = None
    tracking: str = ""


def _nothing_to_confirm() -> None:
    return None


@dataclass
class Capture:
    consistency: Consistency
    warnings: list[Finding] = field(default_factory=list)  # the capture's findings, some added as it ends
    disks: list[CapturedDisk] = field(default_factory=list)
    # Called once the point is stored, after the capture ended: the fabric's change tracking moves on
    # to the point (until then, the changes since the base point are all kept).
    confirm: Callable[[], None] = _nothing_to_confirm


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

    def capture(self, vm: FabricVm, base_point: str | None, point: str) -> AbstractContextManager[Capture]:
        """The VM's disks as of one instant, for as long as the block runs: quiesced as the VM
        allows, each disk with its changes since `base_point` (the VM's last recovery point) when the
        fabric tracks them. `point`: the recovery point being taken. The capture's resources (the
        freeze included) are released when the block ends; once the point is stored, the caller calls
        `capture.confirm()`."""
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
