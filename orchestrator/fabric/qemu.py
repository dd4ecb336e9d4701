"""The QEMU fabric: running QEMU/KVM VMs, reached through their QMP sockets.

A subscription with `fabric: qemu` names its VMs (`qemu_vms`: a name, a QMP socket, a resource
group and a region) or host directories of QMP sockets (`qmp_dirs`: every `<name>.qmp` is a VM).
Everything else is read from QEMU as each job runs: the disks (`query-block`: each drive's id, top
node, format, image and virtual size), the run state (`query-status`) and QEMU's version, which
stands for the backup extension's (QEMU itself takes the point-in-time copies).

Azure's concepts, mapped: a VM whose QEMU answers is running (paused and prelaunch included: its
disks are in QEMU's hands); one whose QEMU does not answer is stopped, with the disks QEMU last
reported (kept in `state/qemu/`), read offline. The VM agent is qemu-guest-agent; a VM without a
guest-agent channel is backed up crash-consistent, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator import safefs
from orchestrator.domain.names import VM
from orchestrator.domain.values import DeploymentModel, VmRef
from orchestrator.errors import InventoryError, OrchestratorError
from orchestrator.fabric import Capture
from orchestrator.fabric.fleece import drive_id, live_capture
from orchestrator.fabric.inventory import (
    GIB,
    AgentSpec,
    DiskSpec,
    ExtensionSpec,
    FabricVm,
    PowerState,
    QemuDisk,
    QemuLink,
    QemuVmSpec,
    VmSpec,
    inventory_subscriptions,
)
from orchestrator.fabric.offline import offline_capture
from orchestrator.fabric.qmp import Monitor, QemuError

log = logging.getLogger(__name__)
OFF = "off"


class QemuFabric:
    def __init__(self, inventory_path: Path, timeout: float = 10.0) -> None:
        self.inventory_path = inventory_path
        self.state_dir = inventory_path.parent / "state" / "qemu"
        self.timeout = timeout

    # -- finding VMs ------------------------------------------------------------------------------

    def entries(self, subscription: str) -> list[QemuVmSpec]:
        """The subscription's QEMU VMs as the inventory names them (and its socket directories hold)."""
        found: list[QemuVmSpec] = []
        for sub in inventory_subscriptions(self.inventory_path):
            if sub.name != subscription or sub.fabric != "qemu":
                continue
            found += sub.qemu_vms
            for folder in sub.qmp_dirs:
                found += _socket_dir_vms(folder.path, folder.resource_group, folder.region, folder.os)
        return found

    def list_vms(self, subscription: str) -> list[FabricVm]:
        vms = []
        for entry in self.entries(subscription):
            try:
                vms.append(self._vm(subscription, entry))
            except QemuError as exc:  # unreachable and never seen: nothing is known of its disks yet
                log.warning("QEMU VM %s not listed: %s", entry.name, exc.message)
        return vms

    def get_vm(self, vm_key: str) -> FabricVm:
        subscription = vm_key.split("/", 1)[0]
        for entry in self.entries(subscription):
            if _ref(subscription, entry).key.lower() == vm_key.lower():
                return self._vm(subscription, entry)
        raise OrchestratorError("VmNotFound", f"VM {vm_key} no longer exists in the fabric ({self.inventory_path})")

    def find_vm(self, subscription: str, name: str) -> FabricVm | None:
        for entry in self.entries(subscription):
            if entry.name.lower() == name.lower():
                return self._vm(subscription, entry)
        return None

    def _vm(self, subscription: str, entry: QemuVmSpec) -> FabricVm:
        """The VM as QEMU reports it now, or as it last did when QEMU does not answer."""
        try:
            with Monitor(entry.qmp, self.timeout) as qmp:
                facts = _facts(qmp)
            self._remember(subscription, entry, facts)
        except QemuError as exc:
            if exc.code != "QemuUnreachable":
                raise
            facts = {**self._remembered(subscription, entry, exc), "status": OFF}
        disks = {name: QemuDisk.model_validate(d) for name, d in facts["disks"].items()}
        spec = _spec(self.inventory_path, entry, facts["status"], facts["version"], disks)
        link = QemuLink(qmp=entry.qmp, status=facts["status"], disks=disks)
        return FabricVm(subscription=subscription, spec=spec, base_dir=self.inventory_path.parent, qemu=link)

    def _state_path(self, subscription: str, entry: QemuVmSpec) -> Path:
        key = _ref(subscription, entry).key.lower()
        return self.state_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def _remember(self, subscription: str, entry: QemuVmSpec, facts: dict[str, Any]) -> None:
        path = self._state_path(subscription, entry)
        record = json.dumps({"disks": facts["disks"], "version": facts["version"]}, sort_keys=True).encode()
        try:
            if path.read_bytes() == record:
                return
        except OSError:
            pass
        safefs.make_dirs(path.parent)
        safefs.write_replacing(path, record)

    def _remembered(self, subscription: str, entry: QemuVmSpec, why: QemuError) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._state_path(subscription, entry).read_text())
        except (OSError, ValueError):
            raise why from None
        return data

    # -- acting on them ---------------------------------------------------------------------------

    def extension_version(self, vm: FabricVm) -> str | None:
        return vm.spec.extension.version if vm.spec.extension.installed else None

    def install_extension(self, vm: FabricVm) -> str:
        """Nothing to install: QEMU takes the copies. Its version stands for the extension's."""
        return vm.spec.extension.version

    def disk_paths(self, vm_key: str) -> list[tuple[str, Path]]:
        vm = self.get_vm(vm_key)
        return [(disk.name, vm.disk_path(disk)) for disk in vm.spec.disks]

    @contextmanager
    def capture(self, vm: FabricVm, base_point: str | None, point: str) -> Iterator[Capture]:
        assert vm.qemu is not None
        if vm.qemu.status == OFF:
            with offline_capture(vm, self.timeout, point) as capture:
                yield capture
        else:
            with live_capture(vm, base_point, point, self.timeout) as capture:
                yield capture

    def restored_disk_dir(self, subscription: str, name: str) -> Path:
        raise OrchestratorError(
            "RestoreAsVmUnavailable",
            (
                f"restoring a QEMU VM of subscription {subscription!r} as a new VM is not available yet: "
                "restore its disks into a folder (backupctl restore RP --disks-to DIR); they are raw images"
            ),
        )

    def create_vm(self, subscription: str, spec: VmSpec) -> FabricVm:
        self.restored_disk_dir(subscription, spec.name)
        raise AssertionError("unreachable")

    def run_script(self, vm: FabricVm, script: Path, timeout: float) -> tuple[bool, str]:
        return False, f"VM {vm.ref.display_name} has no qemu-guest-agent channel to run {script.name} through"


def _facts(qmp: Monitor) -> dict[str, Any]:
    status = str(qmp.execute("query-status")["status"])
    version = qmp.execute("query-version")["qemu"]
    disks: dict[str, dict[str, Any]] = {}
    for device in qmp.execute("query-block"):
        inserted = device.get("inserted")
        if not inserted or inserted.get("ro"):  # an empty drive, a CD-ROM: not a disk to back up
            continue
        name = device.get("device") or inserted["node-name"]
        disks[name] = {
            "device": drive_id(device),
            "node": inserted["node-name"],
            "format": inserted["image"]["format"],
            "size": int(inserted["image"]["virtual-size"]),
            "image": inserted["image"]["filename"],
        }
    return {"status": status, "version": f"{version['major']}.{version['minor']}.{version['micro']}", "disks": disks}


def _spec(path: Path, entry: QemuVmSpec, status: str, version: str, disks: dict[str, QemuDisk]) -> VmSpec:
    os_disk = entry.os_disk or next(iter(disks), None)
    try:
        return VmSpec(
            name=entry.name,
            resource_group=entry.resource_group,
            region=entry.region,
            os=entry.os,
            power_state=PowerState.STOPPED if status in (OFF, "shutdown") else PowerState.RUNNING,
            agent=AgentSpec(installed=False, version="", ready=False),
            extension=ExtensionSpec(installed=status != OFF, version=f"QEMU {version}"),
            disks=[
                DiskSpec(
                    name=name,
                    image=Path(disk.image),
                    size_gb=max(1, math.ceil(disk.size / GIB)),
                    role="os" if name == os_disk else "data",
                )
                for name, disk in disks.items()
            ],
            network=entry.network,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InventoryError(
            "InventoryInvalid",
            f"{path}: QEMU VM {entry.name!r} ({entry.qmp}): {'.'.join(map(str, err['loc']))}: {err['msg']}",
            field=".".join(map(str, err["loc"])),
        ) from None


def _ref(subscription: str, entry: QemuVmSpec) -> VmRef:
    return VmRef(
        subscription=subscription,
        name=entry.name,
        resource_group=entry.resource_group,
        region=entry.region,
        deployment_model=DeploymentModel.RESOURCE_MANAGER,
    )


def _socket_dir_vms(folder: Path, resource_group: str, region: str, os: Any) -> list[QemuVmSpec]:
    vms = []
    try:
        sockets = sorted(folder.glob("*.qmp"))
    except OSError:
        return []
    for socket in sockets:
        try:
            if not stat.S_ISSOCK(socket.lstat().st_mode):
                continue
            VM.check(socket.stem, "name")
        except (OSError, OrchestratorError) as exc:
            log.warning("QMP socket %s is not a VM: %s", socket, exc)
            continue
        vms.append(QemuVmSpec(name=socket.stem, qmp=socket, resource_group=resource_group, region=region, os=os))
    return vms
