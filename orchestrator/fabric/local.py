"""The local fabric: VMs from an inventory file, disks as image files, changes as state files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.fabric.inventory import FabricVm, PowerState, load_inventory


class LocalFabric:
    """Reads the inventory on every call, so an operator's edit is seen by the next job."""

    def __init__(self, inventory_path: Path) -> None:
        self.inventory_path = inventory_path
        self.state_dir = inventory_path.parent / "state"

    def list_vms(self, subscription: str) -> list[FabricVm]:
        return [vm for vm in load_inventory(self.inventory_path) if vm.subscription == subscription]

    def get_vm(self, vm_key: str) -> FabricVm:
        for vm in load_inventory(self.inventory_path):
            if vm.ref.key.lower() == vm_key.lower():
                return vm
        raise OrchestratorError(
            "VmNotFound", f"VM {vm_key} no longer exists in the fabric ({self.inventory_path})"
        )

    def extension_version(self, vm_key: str) -> str | None:
        state = self._state(vm_key)
        if "extension_version" in state:
            return str(state["extension_version"])
        vm = self.get_vm(vm_key)
        return vm.spec.extension.version if vm.spec.extension.installed else None

    def install_extension(self, vm_key: str) -> str:
        vm = self.get_vm(vm_key)
        if vm.spec.power_state is not PowerState.RUNNING:
            raise OrchestratorError(
                "VmNotRunning", f"VM {vm.ref.display_name} is {vm.spec.power_state.value}"
            )
        version = vm.spec.extension.version
        self._write_state(vm_key, {**self._state(vm_key), "extension_version": version})
        return version

    def _state_path(self, vm_key: str) -> Path:
        digest = hashlib.sha256(vm_key.lower().encode()).hexdigest()[:32]
        return self.state_dir / f"{digest}.json"

    def _state(self, vm_key: str) -> dict[str, object]:
        path = self._state_path(vm_key)
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_state(self, vm_key: str, state: dict[str, object]) -> None:
        """Write-then-rename, so a crash leaves the old state or the new, never half of one."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"vm": vm_key, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path(vm_key))
