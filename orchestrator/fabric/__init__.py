"""The fabric port: how workers see and act on VMs. `LocalFabric` is the first implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from orchestrator.fabric.inventory import FabricVm, VmSpec


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
