"""Real QEMU VMs for the tests: `qemu-system-x86_64` with disks and a QMP socket, no guest booted
(started paused, `-S`: QEMU's block layer, QMP, dirty bitmaps and its NBD server all work). The
tests write to the disks through the monitor's `qemu-io` (the disks' devices have `share-rw=on`),
as a guest's writes would go: through the drive, counted by its dirty bitmaps."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.fabric.qemu import answers
from orchestrator.fabric.qmp import Monitor
from tests.helpers import need

QEMU = "qemu-system-x86_64"
MIB = 1024 * 1024


def need_qemu() -> None:
    need(
        shutil.which(QEMU) is not None and shutil.which("qemu-img") is not None,
        f"{QEMU} and qemu-img are not installed (Debian: apt-get install qemu-system-x86 qemu-utils)",
    )


@dataclass
class Disk:
    name: str  # the drive id, which the fabric names the disk by
    format: str  # qcow2 or raw
    mib: int


@dataclass
class QemuVm:
    """A QEMU process; its QMP socket under a short directory of its own (a socket's path has at most
    107 bytes, more than a test's tmp_path may take)."""

    images: Path
    disks: list[Disk]
    sockets: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qvm-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def qmp(self) -> Path:
        return self.sockets / "vm.qmp"

    def image(self, disk: str) -> Path:
        spec = next(d for d in self.disks if d.name == disk)
        return self.images / f"{spec.name}.{spec.format}"

    def create_images(self) -> None:
        for disk in self.disks:
            if not self.image(disk.name).exists():
                subprocess.run(
                    ["qemu-img", "create", "-q", "-f", disk.format, str(self.image(disk.name)), f"{disk.mib}M"],
                    check=True,
                )

    def start(self) -> QemuVm:
        self.create_images()
        command = [QEMU, "-S", "-nodefaults", "-display", "none", "-machine", "accel=tcg", "-m", "64"]
        command += ["-qmp", f"unix:{self.qmp},server=on,wait=off"]
        for disk in self.disks:
            command += ["-drive", f"file={self.image(disk.name)},format={disk.format},if=none,id={disk.name}"]
            command += ["-device", f"virtio-blk-pci,drive={disk.name},share-rw=on"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not answers(self.qmp):  # its file comes a moment before QEMU listens on it
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"QEMU did not start: {err}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """A clean quit: QEMU stores the qcow2 disks' persistent bitmaps as it exits."""
        if self.process is not None and self.process.poll() is None:
            with Monitor(self.qmp) as qmp:
                qmp.execute("quit")
            self.process.wait(30)
        self.qmp.unlink(missing_ok=True)
        self.process = None

    def image_bitmaps(self, disk: str) -> dict[str, list[str]]:
        """The persistent bitmaps stored in a qcow2 image, with their flags (`in-use`: QEMU has the
        image open and has not stored the bitmap back)."""
        info = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(self.image(disk))], capture_output=True, check=True
        )
        stored = json.loads(info.stdout).get("format-specific", {}).get("data", {}).get("bitmaps") or []
        return {b["name"]: b["flags"] for b in stored}

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self.qmp.unlink(missing_ok=True)
        self.process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.sockets, ignore_errors=True)

    def write(self, disk: str, offset: int, data: bytes) -> None:
        """Write `data` at `offset` of a disk, through the drive (as the guest would)."""
        pattern = data[0]
        assert data == bytes([pattern]) * len(data), "qemu-io writes a repeated byte"
        self.hmp(f'qemu-io {disk} "write -P {pattern} {offset} {len(data)}"')

    def hmp(self, command: str) -> str:
        with Monitor(self.qmp) as qmp:
            out: str = qmp.execute("human-monitor-command", {"command-line": command})
        assert "error" not in out.lower() and "failed" not in out.lower(), out
        return out

    def bitmaps(self) -> dict[str, list[dict[str, Any]]]:
        with Monitor(self.qmp) as qmp:
            return {
                d["device"]: (d.get("inserted") or {}).get("dirty-bitmaps") or [] for d in qmp.execute("query-block")
            }

    def content(self, disk: str) -> bytes:
        """The disk's content now, as raw bytes: QEMU flushes the drive (a qcow2's metadata sits in
        QEMU's caches until then), and qemu-img reads the image, sharing QEMU's lock."""
        if self.process is not None:
            self.hmp(f'qemu-io {disk} "flush"')
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "disk.raw"
            spec = next(d for d in self.disks if d.name == disk)
            subprocess.run(
                ["qemu-img", "convert", "-U", "-f", spec.format, "-O", "raw", str(self.image(disk)), str(out)],
                check=True,
            )
            return out.read_bytes()


@contextmanager
def two_disk_vm(images: Path, os_mib: int, data_mib: int) -> Iterator[QemuVm]:
    """A running VM with a qcow2 OS disk `os0` and a raw data disk `data0`, each with a pattern
    written; QEMU stops and its sockets go as the block ends."""
    need_qemu()
    machine = QemuVm(images, [Disk("os0", "qcow2", os_mib), Disk("data0", "raw", data_mib)]).start()
    try:
        machine.write("os0", 0, b"\x11" * MIB)
        machine.write("data0", 3 * MIB, b"\x22" * (2 * MIB))
        yield machine
    finally:
        machine.close()


@contextmanager
def short_dir() -> Iterator[Path]:
    """A directory short enough for a restored VM's QMP socket (a Unix socket's path has at most 107
    bytes, fewer than a test's tmp_path leaves), removed as the block ends."""
    path = Path(tempfile.mkdtemp(prefix="qf-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def qemu_inventory(path: Path, vms: dict[str, Any], region: str = "japaneast", **extra: Any) -> Path:
    """An inventory whose subscription `default` is on the QEMU fabric, with these VMs (anything with
    a `qmp` socket: a QemuVm, a booted guest)."""
    entries = [
        {"name": name, "qmp": str(vm.qmp), "resource_group": "rg-qemu", "region": region, **extra}
        for name, vm in vms.items()
    ]
    path.mkdir(parents=True, exist_ok=True)
    inventory = path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump({"subscriptions": [{"name": "default", "fabric": "qemu", "qemu_vms": entries}]})
    )
    return inventory


def dump(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)
