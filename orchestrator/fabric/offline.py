"""A stopped QEMU VM's disks, read offline: each image exported read-only by `qemu-nbd` (qcow2 and
raw alike: QEMU's own block layer reads the format) and read over NBD. Nothing writes to a stopped
VM's disks, so the images are the point; it is crash-consistent (no guest ran to quiesce).

qemu-nbd takes QEMU's image lock: an image a running QEMU holds for writing is refused
(`QemuImageInUse`) rather than read while it changes. Once the point is stored, a qcow2 image gets
the point's dirty bitmap (`qemu-img bitmap --add`), so the first backup after the VM starts again is
incremental; raw images cannot keep one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.domain.values import Consistency
from orchestrator.fabric import Capture, CapturedDisk
from orchestrator.fabric.fleece import PREFIX, NbdReader, new_bitmap, since
from orchestrator.fabric.inventory import FabricVm, QemuDisk, image_problem
from orchestrator.fabric.qmp import QemuError

log = logging.getLogger(__name__)
WHY = "read whole: the VM is off (a disk's dirty bitmap is read only while QEMU runs it)"


@contextmanager
def offline_capture(vm: FabricVm, timeout: float, point: str = "") -> Iterator[Capture]:
    assert vm.qemu is not None
    work = Path(tempfile.mkdtemp(prefix="orch-"))
    servers: list[subprocess.Popen[bytes]] = []
    readers: list[NbdReader] = []
    disks = [vm.qemu.disks[spec.name] for spec in vm.spec.disks]
    try:
        capture = Capture(consistency=Consistency.CRASH)
        for index, (spec, disk) in enumerate(zip(vm.spec.disks, disks, strict=True)):
            socket = work / f"disk-{index}.sock"
            servers.append(_serve(disk, socket))
            _wait_for(socket, servers[-1], timeout, disk)
            readers.append(NbdReader(socket, ""))
            capture.disks.append(CapturedDisk(spec.name, disk.size, readers[-1], tracking=WHY))
        capture.confirm = lambda: _track_all(disks, point)
        yield capture
    finally:
        for reader in readers:
            reader.close()
        for server in servers:  # their image locks go with them, before `confirm` writes a bitmap
            server.terminate()
            server.wait(timeout)
        shutil.rmtree(work, ignore_errors=True)


def _serve(disk: QemuDisk, socket: Path) -> subprocess.Popen[bytes]:
    image = _checked(disk)
    return subprocess.Popen(
        [
            "qemu-nbd",
            "--read-only",
            "--persistent",
            "--shared=8",
            f"--format={disk.format}",
            f"--socket={socket}",
            image,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _checked(disk: QemuDisk) -> str:
    """The image QEMU last reported, if it is a regular file or a disk (never a kernel file): the
    inventory's rule for images, wherever the file is (QEMU's VM chose it)."""
    problem = image_problem(Path(disk.image), (Path("/"),))
    if problem is not None:
        raise QemuError("QemuImageMissing", f"disk {disk.device}: {problem}")
    return os.path.realpath(disk.image)


def _wait_for(socket: Path, server: subprocess.Popen[bytes], timeout: float, disk: QemuDisk) -> None:
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if server.poll() is not None:
            why = (server.stderr.read() if server.stderr else b"").decode(errors="replace").strip()
            code = "QemuImageInUse" if "lock" in why else "QemuImageMissing"
            raise QemuError(code, f"disk {disk.device} ({disk.image}) cannot be read offline: {why[:300]}")
        if time.monotonic() > deadline:
            raise QemuError("QemuImageMissing", f"qemu-nbd did not serve {disk.image} within {timeout:g}s")
        time.sleep(0.02)


def _track_all(disks: list[QemuDisk], point: str) -> None:
    for disk in disks:
        if disk.format == "qcow2" and point:
            _track_from(disk, point)


def _track_from(disk: QemuDisk, point: str) -> None:
    """Give the image the point's bitmap and drop the earlier ones (the VM is off: nothing writes)."""
    listed = _qemu_img("info", "--output=json", disk.image)
    if listed is None:
        return
    info = json.loads(listed or "{}")
    bitmaps = [b["name"] for b in (info.get("format-specific", {}).get("data", {}).get("bitmaps") or [])]
    for name in bitmaps:
        if name.startswith(PREFIX) and not since(name, point):
            _qemu_img("bitmap", "--remove", disk.image, name)
    if not any(since(name, point) for name in bitmaps):
        _qemu_img("bitmap", "--add", disk.image, new_bitmap(point))


def _qemu_img(*args: str) -> str | None:
    """qemu-img's output, or None (logged: the next backup then reads the disk whole, and says why)."""
    done = subprocess.run(["qemu-img", *args], capture_output=True, check=False, text=True)
    if done.returncode != 0:
        log.warning("qemu-img %s failed: %s", args[0], done.stderr.strip()[:300])
        return None
    return done.stdout
