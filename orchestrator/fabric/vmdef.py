"""A QEMU VM made from a restore: its disks converted to the format the settings ask for (qcow2 or
raw, by `qemu-img convert`), and its definition written beside them, as a QEMU command line
(`<name>.sh`) and a libvirt domain (`<name>.xml`). Every file is new (never replacing one: the
restore's folder is its own, claimed before anything was written), made 0600 (the script 0700)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from orchestrator import safefs
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.inventory import VmSpec

SOCKET_MAX = 107  # bytes of a Unix socket's path
DEFAULT_MEMORY_MIB, DEFAULT_VCPUS = 1024, 1


def socket_of(folder: Path, name: str) -> Path:
    return folder / f"{name}.qmp"


def check_socket_path(folder: Path, name: str) -> None:
    path = socket_of(folder, name)
    if len(os.fsencode(path)) > SOCKET_MAX:
        raise OrchestratorError(
            "QemuSocketPathTooLong",
            (
                f"the restored VM's QMP socket {path} would be longer than a Unix socket's {SOCKET_MAX} bytes: "
                "keep the fabric's inventory in a shorter directory"
            ),
        )


def convert_disks(spec: VmSpec, disk_format: str) -> dict[str, tuple[Path, str]]:
    """Each restored (raw) disk as `disk_format`: {disk name: (image, format)}. A qcow2 is written
    under a temporary name, then linked to its own (never replacing a file), the raw one removed."""
    images: dict[str, tuple[Path, str]] = {}
    for disk in spec.disks:
        raw = disk.image
        if disk_format == "raw":
            images[disk.name] = (raw, "raw")
            continue
        target = raw.with_name(f"{disk.name}.qcow2")
        partial = raw.with_name(f".converting-{disk.name}.qcow2")
        done = subprocess.run(
            ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(partial)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            why = done.stderr.decode(errors="replace").strip()[:300]
            raise OrchestratorError("RestoreFailed", f"qemu-img could not convert disk {disk.name} to qcow2: {why}")
        safefs.tighten(partial, 0o600)
        try:
            os.link(partial, target)
        except FileExistsError:
            raise OrchestratorError(
                "RestoreTargetExists", f"{target} exists; a restore never replaces a file"
            ) from None
        finally:
            partial.unlink(missing_ok=True)
        raw.unlink()
        images[disk.name] = (target, "qcow2")
    return images


def command_line(spec: VmSpec, images: dict[str, tuple[Path, str]], socket: Path) -> list[str]:
    memory, vcpus = spec.memory_mib or DEFAULT_MEMORY_MIB, spec.vcpus or DEFAULT_VCPUS
    line = ["qemu-system-x86_64", "-name", spec.name, "-machine", "q35,accel=kvm:tcg"]
    line += ["-m", str(memory), "-smp", str(vcpus), "-display", "none"]
    line += ["-qmp", f"unix:{socket},server=on,wait=off", "-nic", "user,model=virtio-net-pci"]
    for disk in spec.disks:
        image, fmt = images[disk.name]
        line += ["-drive", f"file={_comma_safe(image)},format={fmt},if=none,id={disk.name}"]
        boot = ",bootindex=0" if disk.role == "os" else ""
        line += ["-device", f"virtio-blk-pci,drive={disk.name}{boot}"]
    return line


def domain_xml(spec: VmSpec, images: dict[str, tuple[Path, str]], socket: Path) -> str:
    """A libvirt domain for the VM, with the QMP socket the fabric reaches it through."""
    memory, vcpus = spec.memory_mib or DEFAULT_MEMORY_MIB, spec.vcpus or DEFAULT_VCPUS
    disks = []
    for index, disk in enumerate(spec.disks):
        image, fmt = images[disk.name]
        boot = "<boot order='1'/>" if disk.role == "os" else ""
        disks.append(
            f"    <disk type='file' device='disk'><driver name='qemu' type={quoteattr(fmt)}/>"
            f"<source file={quoteattr(str(image))}/><target dev='vd{chr(ord('a') + index)}' bus='virtio'/>"
            f"{boot}<alias name={quoteattr('ua-' + disk.name)}/></disk>"
        )
    return "\n".join(
        [
            "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
            f"  <name>{escape(spec.name)}</name>",
            f"  <memory unit='MiB'>{memory}</memory>",
            f"  <vcpu>{vcpus}</vcpu>",
            "  <os><type arch='x86_64' machine='q35'>hvm</type></os>",
            "  <devices>",
            *disks,
            "    <interface type='user'><model type='virtio'/></interface>",
            "  </devices>",
            "  <qemu:commandline>",
            "    <qemu:arg value='-qmp'/>",
            f"    <qemu:arg value={quoteattr(f'unix:{socket},server=on,wait=off')}/>",
            "  </qemu:commandline>",
            "</domain>",
            "",
        ]
    )


def write_definition(folder: Path, spec: VmSpec, line: list[str], xml: str) -> tuple[Path, Path]:
    script, domain = folder / f"{spec.name}.sh", folder / f"{spec.name}.xml"
    for path, data, mode in (
        (script, f'#!/bin/sh\nexec {shlex.join(line)} "$@"\n', 0o700),
        (domain, xml, 0o600),
    ):
        if not safefs.write_new(path, data.encode(), mode=mode):
            raise OrchestratorError("RestoreTargetExists", f"{path} exists; a restore never replaces a file")
    return script, domain


def _comma_safe(path: Path) -> str:
    """A path as QEMU's option syntax wants it: a comma doubled."""
    return str(path).replace(",", ",,")
