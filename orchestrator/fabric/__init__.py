"""The fabric port: how workers see and act on VMs. `LocalFabric` is the first implementation."""

from __future__ import annotations

from typing import Protocol

from orchestrator.fabric.inventory import FabricVm


class Fabric(Protocol):
    def list_vms(self, subscription: str) -> list[FabricVm]:
        """Every VM of the subscription, in every region."""
        ...

    def get_vm(self, vm_key: str) -> FabricVm:
        """One VM by key; raises OrchestratorError `VmNotFound` when it is gone."""
        ...

    def extension_version(self, vm_key: str) -> str | None:
        """The installed backup extension's version, or None."""
        ...

    def install_extension(self, vm_key: str) -> str:
        """Install the backup extension on a running VM; returns its version."""
        ...
