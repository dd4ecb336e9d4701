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
import os
import stat
import subprocess
import time
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
from orchestrator.fabric.agent import AgentFacts, AgentSettings, check_minimum, probe, run_in_guest
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
from orchestrator.fabric.vmdef import (
    check_socket_path,
    command_line,
    convert_disks,
    domain_xml,
    socket_of,
    write_definition,
)

log = logging.getLogger(__name__)
OFF = "off"


class QemuFabric:
    """`restore_format`: the format (qcow2 or raw) of a restored VM's disks; `start_restored`: whether
    a restore starts the VM it makes."""

    def __init__(
        self,
        inventory_path: Path,
        timeout: float = 10.0,
        restore_format: str = "qcow2",
        start_restored: bool = False,
        agent: AgentSettings | None = None,
    ) -> None:
        self.inventory_path = inventory_path
        self.state_dir = inventory_path.parent / "state" / "qemu"
        self.restored_dir = self.state_dir / "restored"
        self.timeout = timeout
        self.restore_format, self.start_restored = restore_format, start_restored
        self.agent = agent or AgentSettings()

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
            found += self._restored(subscription)
        return found

    def _restored(self, subscription: str) -> list[QemuVmSpec]:
        """The VMs restores made in the subscription (`restored/<subscription>-<name>.json`)."""
        try:
            records = sorted(self.restored_dir.glob(f"{subscription}-*.json"))
        except OSError:
            return []
        vms = []
        for record in records:
            data = json.loads(record.read_text())
            if data["subscription"] == subscription:
                vms.append(QemuVmSpec.model_validate(data["vm"]))
        return vms

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
        running = facts["status"] not in (OFF, "shutdown")
        agent = probe(entry.guest_agent if running else None, self.agent.timeout)
        if entry.guest_agent is not None and not running:
            agent = AgentFacts(installed=True)
        spec = _spec(self.inventory_path, entry, facts, disks, agent)
        link = QemuLink(
            qmp=entry.qmp,
            status=facts["status"],
            disks=disks,
            guest_agent=entry.guest_agent,
            can_freeze=agent.ready and agent.can_freeze and check_minimum(agent.version, self.agent.minimum),
            agent_minimum=self.agent.minimum,
        )
        return FabricVm(subscription=subscription, spec=spec, base_dir=self.inventory_path.parent, qemu=link)

    def _state_path(self, subscription: str, entry: QemuVmSpec) -> Path:
        key = _ref(subscription, entry).key.lower()
        return self.state_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def _remember(self, subscription: str, entry: QemuVmSpec, facts: dict[str, Any]) -> None:
        path = self._state_path(subscription, entry)
        kept = {k: facts[k] for k in ("disks", "version", "memory_mib", "vcpus") if k in facts}
        record = json.dumps(kept, sort_keys=True).encode()
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
            with live_capture(vm, base_point, point, self.timeout, self.agent, self.state_dir / "captures") as capture:
                yield capture

    def restored_disk_dir(self, subscription: str, name: str) -> Path:
        folder = self.restored_dir / f"{subscription}-{name}"
        check_socket_path(folder, name)
        return folder

    def create_vm(self, subscription: str, spec: VmSpec) -> FabricVm:
        """A VM from restored (raw) disks: converted to the restore format, its definition written
        beside them, recorded as a VM of the subscription (stopped, with those disks), and started
        when the settings say so. Refuses a name the subscription has."""
        if any(entry.name.lower() == spec.name.lower() for entry in self.entries(subscription)):
            raise OrchestratorError("RestoreTargetExists", f"a VM named {spec.name!r} exists in the fabric")
        folder = self.restored_disk_dir(subscription, spec.name)
        sizes = {disk.name: disk.image.stat().st_size for disk in spec.disks}  # raw: the virtual size
        images = convert_disks(spec, self.restore_format)
        socket = socket_of(folder, spec.name)
        script, _ = write_definition(folder, spec, command_line(spec, images, socket), domain_xml(spec, images, socket))
        entry = QemuVmSpec(
            name=spec.name, qmp=socket, resource_group=spec.resource_group, region=spec.region, os=spec.os
        )
        disks = {
            disk.name: {
                "device": disk.name,
                "node": "",
                "format": fmt,
                "size": sizes[disk.name],
                "image": str(image),
            }
            for disk in spec.disks
            for image, fmt in [images[disk.name]]
        }
        if self.start_restored:
            _start(script, socket, self.timeout)
        self._remember(subscription, entry, {"disks": disks, "version": ""})
        record = {"subscription": subscription, "vm": json.loads(entry.model_dump_json())}
        safefs.make_dirs(self.restored_dir)
        if not safefs.write_new(self.restored_dir / f"{subscription}-{spec.name}.json", json.dumps(record).encode()):
            raise OrchestratorError("RestoreTargetExists", f"a VM named {spec.name!r} exists in the fabric")
        return self._vm(subscription, entry)

    def run_script(self, vm: FabricVm, script: Path, timeout: float) -> tuple[bool, str]:
        """Run a program in the guest, through qemu-guest-agent."""
        if vm.qemu is None or vm.qemu.guest_agent is None:
            return False, f"VM {vm.ref.display_name} has no qemu-guest-agent channel to run {script.name} through"
        return run_in_guest(vm.qemu.guest_agent, script, timeout)


def _start(script: Path, socket: Path, timeout: float) -> None:
    """Start a restored VM (its own session, so it outlives the worker) and wait for its monitor.
    QEMU's output goes to `<name>.log` beside its definition (a pipe would close with the worker)."""
    log_path = script.with_suffix(".log")
    with os.fdopen(safefs.create(log_path), "wb") as output:
        process = subprocess.Popen([str(script)], stdout=output, stderr=output, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not answers(socket):  # the socket's file comes a moment before QEMU listens on it
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
            why = log_path.read_text(errors="replace").strip()[-300:] or "it did not open its monitor in time"
            raise OrchestratorError("QemuStartFailed", f"the restored VM did not start: {why}")
        time.sleep(0.05)


def answers(socket: Path) -> bool:
    """Whether a QEMU monitor listens at `socket` (and greets)."""
    if not socket.exists():
        return False
    try:
        with Monitor(socket, 2.0):
            return True
    except QemuError:
        return False


def _facts(qmp: Monitor) -> dict[str, Any]:
    status = str(qmp.execute("query-status")["status"])
    version = qmp.execute("query-version")["qemu"]
    memory = int(qmp.execute("query-memory-size-summary")["base-memory"]) // (1024 * 1024)
    vcpus = len(qmp.execute("query-cpus-fast"))
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
            "encrypted": bool(inserted.get("encrypted")),
        }
    release = f"{version['major']}.{version['minor']}.{version['micro']}"
    return {"status": status, "version": release, "disks": disks, "memory_mib": memory, "vcpus": vcpus}


def _spec(
    path: Path, entry: QemuVmSpec, facts: dict[str, Any], disks: dict[str, QemuDisk], agent: AgentFacts
) -> VmSpec:
    os_disk = entry.os_disk or next(iter(disks), None)
    status, version = facts["status"], facts["version"]
    try:
        return VmSpec(
            name=entry.name,
            resource_group=entry.resource_group,
            region=entry.region,
            os=entry.os,
            power_state=PowerState.STOPPED if status in (OFF, "shutdown") else PowerState.RUNNING,
            agent=AgentSpec(installed=agent.installed, version=_dotted(agent.version), ready=agent.ready),
            freeze=entry.freeze,
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
            memory_mib=facts.get("memory_mib"),
            vcpus=facts.get("vcpus"),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InventoryError(
            "InventoryInvalid",
            f"{path}: QEMU VM {entry.name!r} ({entry.qmp}): {'.'.join(map(str, err['loc']))}: {err['msg']}",
            field=".".join(map(str, err["loc"])),
        ) from None


def _dotted(version: str) -> str:
    """An agent's version as the inventory's rule wants it (dotted digits), "" when it is not one."""
    return version if version and all(part.isdigit() for part in version.split(".")) else ""


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
        agent = socket.with_suffix(".qga")
        vms.append(
            QemuVmSpec(
                name=socket.stem,
                qmp=socket,
                guest_agent=agent if agent.exists() else None,
                resource_group=resource_group,
                region=region,
                os=os,
            )
        )
    return vms
