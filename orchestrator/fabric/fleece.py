"""A running QEMU VM's disks as of one instant, and what changed in them since the last point.

In one QMP `transaction` (atomic: no guest write falls between its actions), for every disk: a new
dirty bitmap `orch-<point>.<nonce>` starts recording, the bitmaps of earlier points stop, and a
`blockdev-backup sync=none` job starts copying, before each guest write, the old content of what
the guest overwrites into a fleecing overlay (a qcow2 file whose backing is the disk). The overlay is
then exported read-only over QEMU's NBD server: it reads as the disk stood at the transaction while
the guest goes on writing.

Changed-block tracking: the blocks changed since point P are those recorded by P's bitmap, and by
any later bitmap (a backup that failed or was killed after its transaction leaves its point's bitmap
recording, and P's stopped: together they cover every write since P). The bitmaps are merged into a
temporary one exported with the overlay, and NBD_CMD_BLOCK_STATUS reads it. When P's bitmap is
missing (QEMU restarted: a raw disk's bitmaps live only in QEMU's memory; a qcow2's persist in the
image, unless QEMU stopped uncleanly, which marks them inconsistent), the disk is read whole, with
the reason. Only once the point is stored (`Capture.confirm`) are the earlier bitmaps removed: until
then, a failed backup loses no change.

Everything the capture adds to QEMU is named `orch-*` and removed as it ends; what a killed worker
left behind is removed by the next capture before it starts (its overlays are in the fabric's
`state/qemu/captures/`, QEMU's NBD server listens on an abstract socket: no file to leave).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from orchestrator import safefs
from orchestrator.domain.values import Consistency, Finding
from orchestrator.fabric import Capture, CapturedDisk
from orchestrator.fabric.agent import AgentSettings, frozen
from orchestrator.fabric.inventory import FabricVm, QemuDisk
from orchestrator.fabric.nbd import NbdClient
from orchestrator.fabric.qmp import Monitor, QemuError

log = logging.getLogger(__name__)
PREFIX = "orch-"
TEMPORARY = f"{PREFIX}tmp-"
FLEECE = f"{PREFIX}fleece-"
DIRTY = 1  # NBD block status flag of a qemu:dirty-bitmap context: the range is dirty


def new_bitmap(point: str) -> str:
    """A bitmap recording from `point` on: each attempt at a point makes its own (a retried job's
    point has the same id as its killed attempt's, whose bitmap may still be recording)."""
    return f"{PREFIX}{point}.{secrets.token_hex(4)}"


def since(name: str, point: str) -> bool:
    """Whether the bitmap `name` records from `point` on."""
    return name.startswith(f"{PREFIX}{point}.")


class NbdReader:
    """An NBD export read by many threads, each on a connection of its own."""

    def __init__(self, socket: Path | str, export: str) -> None:
        self.socket, self.export = socket, export
        self._local = threading.local()
        self._clients: list[NbdClient] = []
        self._lock = threading.Lock()

    def read_into(self, buffer: memoryview, offset: int) -> int:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = NbdClient(self.socket, self.export)
            with self._lock:
                self._clients.append(client)
        got: int = client.read_into(buffer, offset)
        return got

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


@contextmanager
def live_capture(
    vm: FabricVm, base_point: str | None, point: str, timeout: float, agent: AgentSettings, work_root: Path
) -> Iterator[Capture]:
    """`work_root`: where the overlays go, a directory per capture (`<VM's digest>-<random>`); a
    killed capture's of the same VM is removed first (one backup of a VM runs at a time)."""
    assert vm.qemu is not None
    link, name = vm.qemu, vm.ref.display_name
    work = _work_dir(work_root, vm)
    capture = Capture(consistency=Consistency.CRASH)
    disks = [(spec.name, link.disks[spec.name]) for spec in vm.spec.disks]
    readers: list[NbdReader] = []
    bitmap = new_bitmap(point)
    try:
        with Monitor(link.qmp, timeout) as qmp:
            remove_leftovers(qmp)
            disks = _current(qmp, disks)
            plans = [_plan(qmp, disk_name, disk, base_point, name, capture) for disk_name, disk in disks]
            for index, (_, disk) in enumerate(disks):
                _add_overlay(qmp, work, index, disk)
            with _quiesced(vm, capture, agent):
                qmp.execute("transaction", {"actions": _actions(disks, plans, bitmap)})
            socket = f"@orch-nbd-{secrets.token_hex(8)}"  # abstract: no file, nothing left if killed
            _start_nbd(qmp, socket)
            for index, ((disk_name, disk), plan) in enumerate(zip(disks, plans, strict=True)):
                readers.append(NbdReader(socket, f"{FLEECE}{index}"))
                capture.disks.append(_export(qmp, readers[-1], disk_name, disk, plan, base_point))
        capture.confirm = lambda: _drop_older_bitmaps(link.qmp, timeout, [d for _, d in disks], bitmap)
        yield capture
    finally:
        for reader in readers:
            reader.close()
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, work, True)
            try:
                with Monitor(link.qmp, timeout) as qmp:
                    remove_leftovers(qmp)
            except QemuError as exc:  # the next capture removes what is left
                log.warning("capture of VM %s not cleaned up: %s", name, exc.message)


def drive_id(device: dict[str, Any]) -> str:
    """What names a drive across node changes: its id, or (a -blockdev disk) its device's path."""
    return str(device.get("device") or device.get("qdev") or "")


@contextmanager
def _quiesced(vm: FabricVm, capture: Capture, agent: AgentSettings) -> Iterator[None]:
    """The guest frozen for the transaction when its agent can freeze it; crash-consistent otherwise
    (the prechecks' warnings say why)."""
    assert vm.qemu is not None
    if vm.qemu.guest_agent is None or not vm.qemu.can_freeze:
        capture.consistency = Consistency.CRASH
        yield
        return
    with frozen(vm, vm.qemu.guest_agent, capture, agent.freeze_timeout, agent.timeout):
        yield


def _current(qmp: Monitor, disks: list[tuple[str, QemuDisk]]) -> list[tuple[str, QemuDisk]]:
    """Each disk's top node as QEMU has it now, a killed capture's filters removed (a backup job
    puts a copy-before-write filter above its disk, which QEMU then reports as the drive's node)."""
    now = {drive_id(d): d.get("inserted") or {} for d in qmp.execute("query-block")}
    current = []
    for name, disk in disks:
        inserted = now.get(disk.device)
        if not inserted:
            raise QemuError("QemuDiskGone", f"QEMU has no drive {disk.device!r} any more")
        update = {"node": inserted["node-name"], "format": inserted["image"]["format"]}
        current.append((name, disk.model_copy(update=update)))
    return current


def _plan(
    qmp: Monitor, disk_name: str, disk: QemuDisk, base_point: str | None, vm_name: str, capture: Capture
) -> dict[str, Any]:
    """What the disk's bitmaps allow: {"since": [bitmap names to merge]} for an incremental read,
    or {"since": None, "why": reason} for a whole one."""
    bitmaps = [b for b in node_bitmaps(qmp, disk.node) if b["name"].startswith(PREFIX)]
    ours = [b for b in bitmaps if not b["name"].startswith(TEMPORARY)]
    bad = [b["name"] for b in ours if b.get("inconsistent")]
    for bitmap in bad:  # an inconsistent bitmap can only be removed
        qmp.execute("block-dirty-bitmap-remove", {"node": disk.node, "name": bitmap})
    if base_point is None:
        return {"since": None, "why": "read whole: the first point of this VM", "stop": _names(ours, bad)}
    if bad:
        why = f"read whole: its dirty bitmap is inconsistent (QEMU stopped uncleanly since point {base_point})"
    elif not any(since(name, base_point) for name in _names(ours, bad)):
        why = (
            f"read whole: it has no dirty bitmap since point {base_point} (QEMU restarted, or the VM runs "
            "another image; a raw disk's bitmap lives only while QEMU runs)"
        )
    else:
        return {"since": _names(ours, bad), "stop": _names(ours, bad)}
    capture.warnings.append(Finding(code="ChangeTrackingReset", message=f"VM {vm_name} disk {disk_name}: {why}"))
    return {"since": None, "why": why, "stop": _names(ours, bad)}


def _names(bitmaps: list[dict[str, Any]], bad: list[str]) -> list[str]:
    return [b["name"] for b in bitmaps if b["name"] not in bad]


def node_bitmaps(qmp: Monitor, node: str) -> list[dict[str, Any]]:
    for device in qmp.execute("query-block"):
        inserted = device.get("inserted") or {}
        if inserted.get("node-name") == node:
            return list(inserted.get("dirty-bitmaps") or [])
    raise QemuError("QemuDiskGone", f"QEMU has no block node {node!r} any more")


def _add_overlay(qmp: Monitor, work: Path, index: int, disk: QemuDisk) -> None:
    overlay = work / f"fleece-{index}.qcow2"
    done = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), str(disk.size)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise QemuError("QemuCommandFailed", f"qemu-img create: {done.stderr.decode(errors='replace').strip()}")
    qmp.execute(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": f"{FLEECE}{index}",
            "file": {"driver": "file", "filename": str(overlay)},
            "backing": disk.node,
        },
    )


def _actions(disks: list[tuple[str, QemuDisk]], plans: list[dict[str, Any]], bitmap: str) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    for index, ((_, disk), plan) in enumerate(zip(disks, plans, strict=True)):
        persistent = disk.format == "qcow2"  # only a qcow2 image can keep a bitmap across restarts
        actions.append(
            {
                "type": "block-dirty-bitmap-add",
                "data": {"node": disk.node, "name": bitmap, "persistent": persistent},
            }
        )
        for earlier in plan["stop"]:
            actions.append({"type": "block-dirty-bitmap-disable", "data": {"node": disk.node, "name": earlier}})
        actions.append(
            {
                "type": "blockdev-backup",
                "data": {
                    "device": disk.node,
                    "target": f"{FLEECE}{index}",
                    "sync": "none",
                    "job-id": f"{FLEECE}{index}",
                },
            }
        )
    return actions


def _work_dir(root: Path, vm: FabricVm) -> Path:
    mine = hashlib.sha256(vm.ref.key.lower().encode()).hexdigest()[:16]
    safefs.make_dirs(root)
    for stale in root.glob(f"{mine}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{mine}-", dir=root))


def _nbd_address(socket: str) -> dict[str, Any]:
    return {"type": "unix", "data": {"path": socket.removeprefix("@"), "abstract": True}}


def _start_nbd(qmp: Monitor, socket: str) -> None:
    try:
        qmp.execute("nbd-server-start", {"addr": _nbd_address(socket)})
    except QemuError as exc:
        if "already running" not in exc.message:
            raise
        exports = qmp.execute("query-block-exports")
        if any(not e["id"].startswith(PREFIX) for e in exports):
            raise QemuError(
                "QemuNbdServerInUse",
                "QEMU's NBD server is in use by another tool's exports; the backup needs it (one per QEMU)",
            ) from None
        qmp.execute("nbd-server-stop")  # a killed capture's, exporting nothing now
        qmp.execute("nbd-server-start", {"addr": _nbd_address(socket)})


def _export(
    qmp: Monitor, reader: NbdReader, disk_name: str, disk: QemuDisk, plan: dict[str, Any], base_point: str | None
) -> CapturedDisk:
    """Export the disk's overlay as `reader.export`, with its merged bitmap when read incrementally."""
    export = reader.export
    options: dict[str, Any] = {"type": "nbd", "id": export, "node-name": export, "name": export, "writable": False}
    merged = f"{TEMPORARY}{export.removeprefix(FLEECE)}"
    if plan["since"] is not None:
        qmp.execute(
            "block-dirty-bitmap-add", {"node": disk.node, "name": merged, "persistent": False, "disabled": True}
        )
        qmp.execute("block-dirty-bitmap-merge", {"node": disk.node, "target": merged, "bitmaps": plan["since"]})
        options["bitmaps"] = [merged]
    qmp.execute("block-export-add", options)
    if plan["since"] is None:
        return CapturedDisk(disk_name, disk.size, reader, tracking=plan["why"])
    with NbdClient(reader.socket, export, f"qemu:dirty-bitmap:{merged}") as client:
        changed = [(at, size) for at, size, flags in client.extents(0, disk.size) if flags & DIRTY]
    done = sum(size for _, size in changed)
    return CapturedDisk(
        disk_name,
        disk.size,
        reader,
        changed=changed,
        tracking=f"changes since point {base_point}: {done} of {disk.size} bytes (dirty bitmap)",
    )


def remove_leftovers(qmp: Monitor) -> None:
    """Remove every export, job, overlay and temporary bitmap a capture adds (this one's, as it
    ends, or a killed one's), and QEMU's NBD server when it exports nothing else."""
    for export in qmp.execute("query-block-exports"):
        if export["id"].startswith(PREFIX):
            qmp.execute("block-export-del", {"id": export["id"], "mode": "hard"})
    for job in qmp.execute("query-block-jobs"):
        if job["device"].startswith(PREFIX):
            qmp.execute("block-job-cancel", {"device": job["device"], "force": True})
    _wait(qmp, lambda: not any(e["id"].startswith(PREFIX) for e in qmp.execute("query-block-exports")))
    _wait(qmp, lambda: not any(j["device"].startswith(PREFIX) for j in qmp.execute("query-block-jobs")))
    for node in qmp.execute("query-named-block-nodes", {"flat": True}):
        if node["node-name"].startswith(FLEECE):
            qmp.execute("blockdev-del", {"node-name": node["node-name"]})
    for device in qmp.execute("query-block"):
        inserted = device.get("inserted") or {}
        for bitmap in inserted.get("dirty-bitmaps") or []:
            if bitmap["name"].startswith(TEMPORARY):
                qmp.execute("block-dirty-bitmap-remove", {"node": inserted["node-name"], "name": bitmap["name"]})
    if not qmp.execute("query-block-exports"):
        with contextlib.suppress(QemuError):  # none was running
            qmp.execute("nbd-server-stop")


def _drop_older_bitmaps(socket: Path, timeout: float, disks: list[QemuDisk], bitmap: str) -> None:
    """The point is stored: the bitmaps that led to it are done with; `bitmap`, its own, records on.
    Left in place when QEMU does not answer: the next backup reads their union, a little more."""
    try:
        with Monitor(socket, timeout) as qmp:
            for disk in disks:
                for found in node_bitmaps(qmp, disk.node):
                    name = found["name"]
                    if name.startswith(PREFIX) and name != bitmap:
                        qmp.execute("block-dirty-bitmap-remove", {"node": disk.node, "name": name})
    except QemuError as exc:
        log.warning("earlier bitmaps of %s not removed: %s", socket, exc.message)


def _wait(qmp: Monitor, done: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise QemuError("QemuCommandFailed", f"QEMU at {qmp.socket} did not release a backup's export or job")
        time.sleep(0.05)
