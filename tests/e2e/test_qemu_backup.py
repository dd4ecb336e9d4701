"""Running QEMU VMs backed up through the client on the embedded default: point-in-time copies over
NBD, dirty-bitmap incrementals and their fallbacks, offline reads of a stopped VM, restores of each
point as disks equal to the disks as they stood at the point."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client, OrchestratorError
from orchestrator.fabric.fleece import since
from orchestrator.fabric.qemu import QemuFabric, answers
from orchestrator.fabric.qmp import Monitor
from tests.qemu import MIB, QemuVm, need_qemu, qemu_inventory, two_disk_vm
from tests.qemu import short_dir as short_fabric_dir

OS = {"type": "linux", "version": "Debian 12"}


@pytest.fixture
def vm(bulk: Path) -> Iterator[QemuVm]:
    with two_disk_vm(bulk, 64, 32) as machine:
        yield machine


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with short_fabric_dir() as path:
        yield path


def _client(tmp_path: Path, short_dir: Path, vm: QemuVm, **settings: Any) -> Client:
    inventory = qemu_inventory(short_dir / "fabric", {"qvm1": vm}, os=OS)
    return Client(data_dir=tmp_path / "data", fabric=inventory, **settings)


def _protect(client: Client) -> str:
    vault = client.create_vault("vault-q", "japaneast", "rg")
    assert client.wait(client.discover(vault)).result["new_vms"] == ["qvm1"]
    assert {j.status for j in client.wait_all(client.register(vault, ["qvm1"]))} == {"completed_with_warnings"}
    assert {j.status for j in client.wait_all(client.protect(vault, ["qvm1"]))} == {"completed_with_warnings"}
    return vault


@pytest.fixture
def qclient(tmp_path: Path, short_dir: Path, vm: QemuVm) -> Iterator[tuple[Client, str]]:
    with _client(tmp_path, short_dir, vm) as client:
        yield client, _protect(client)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _state(vm: QemuVm) -> dict[str, str]:
    return {d.name: _sha(vm.content(d.name)) for d in vm.disks}


def _backup(client: Client, vault: str) -> dict[str, object]:
    job = client.wait(client.backup_now(vault, "qvm1"))
    assert job.status == "completed_with_warnings", job.error_message
    assert "VmAgentNotInstalled" in {w["code"] for w in job.warnings}
    return job.result


def _restored(client: Client, rp_id: str, out: Path, name: str) -> dict[str, str]:
    job = client.wait(client.restore(rp_id, name, mode="disks", target_dir=out))
    assert job.status == "completed", job.error_message
    return {disk: _sha(Path(path).read_bytes()) for disk, path in job.result["disks"].items()}


def test_a_running_vm_is_read_incrementally_after_one_percent_changes(
    qclient: tuple[Client, str], vm: QemuVm, bulk: Path
) -> None:
    client, vault = qclient
    first_state = _state(vm)
    first = _backup(client, vault)
    assert first["consistency"] == "crash"
    assert first["read_bytes"] == first["logical_bytes"] == 96 * MIB
    # 1% of the VM's 96 MiB, scattered over both disks (qcow2 and raw)
    for offset in (5 * MIB, 20 * MIB + 4096, 40 * MIB):
        vm.write("os0", offset, b"\x33" * (192 * 1024))
    vm.write("data0", 30 * MIB, b"\x44" * (400 * 1024))
    second_state = _state(vm)
    second = _backup(client, vault)
    changed = 3 * 192 * 1024 + 400 * 1024
    assert changed <= second["read_bytes"] <= 2 * changed + 8 * 256 * 1024  # the blocks the writes touch
    assert second["read_bytes"] < 0.03 * second["logical_bytes"]
    assert all("dirty bitmap" in how for how in second["tracking"].values()), second["tracking"]

    out = bulk / "out"
    assert _restored(client, first["recovery_point_id"], out, "first") == first_state
    assert _restored(client, second["recovery_point_id"], out, "second") == second_state
    # the bitmaps left: one per disk, the newest point's, recording
    bitmaps = vm.bitmaps()
    assert {d: len(bm) for d, bm in bitmaps.items()} == {"os0": 1, "data0": 1}
    assert all(since(bm[0]["name"], str(second["recovery_point_id"])) for bm in bitmaps.values())


WRITER_AT, WRITER_SIZE = 20 * MIB, 64 * 1024  # data0's region the writer keeps rewriting


class Writer:
    """Rewrites one region of data0 through QEMU, a new byte each time, until stopped: the disks
    change while the backups run."""

    def __init__(self, vm: QemuVm) -> None:
        self.vm, self.writes = vm, 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.writes += 1
            self.vm.write("data0", WRITER_AT, bytes([self.writes % 250 + 1]) * WRITER_SIZE)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(30)


def _masked(data: bytes, disk: str) -> tuple[str, bytes]:
    """A disk's content with the writer's region cut out (its digest), and that region."""
    if disk != "data0":
        return _sha(data), b""
    return _sha(data[:WRITER_AT] + data[WRITER_AT + WRITER_SIZE :]), data[WRITER_AT : WRITER_AT + WRITER_SIZE]


def _expected(vm: QemuVm) -> dict[str, str]:
    return {d.name: _masked(vm.content(d.name), d.name)[0] for d in vm.disks}


def _as_restored(images: dict[str, tuple[Path, str]]) -> dict[str, str]:
    """The restored disks' digests, the writer's region cut out; that region holds one write, whole."""
    found = {}
    for disk, (image, fmt) in images.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "disk.raw"
            subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(image), str(out)], check=True)
            found[disk], region = _masked(out.read_bytes(), disk)
        assert len(set(region)) <= 1, "the writer's region is not one write: the copy is not of one instant"
    return found


def test_a_vm_under_a_writer_restores_each_point_as_disks_and_as_vms(
    qclient: tuple[Client, str], vm: QemuVm, bulk: Path
) -> None:
    """Known patterns written before each point, a writer rewriting another region all along: each
    point, restored as disks and as a new VM, holds the patterns and one whole write of the writer."""
    client, vault = qclient
    expected, points = [], []
    with Writer(vm) as writer:
        for step in range(2):  # the initial backup, then one after 1% changed
            for offset in (step * 8 * MIB, 30 * MIB + step * MIB):
                vm.write("os0", offset, bytes([0x60 + step]) * (320 * 1024))
            vm.write("data0", 5 * MIB + step * MIB, bytes([0x70 + step]) * (320 * 1024))
            expected.append(_expected(vm))
            points.append(str(_backup(client, vault)["recovery_point_id"]))
    assert writer.writes > 2
    for index, point in enumerate(points):
        as_disks = client.wait(client.restore(point, f"d{index}", mode="disks", target_dir=bulk / "out"))
        assert as_disks.status == "completed", as_disks.error_message
        disks = {n: (Path(p), "raw") for n, p in as_disks.result["disks"].items()}
        assert _as_restored(disks) == expected[index]
        as_vm = client.wait(client.restore(point, f"vm{index}"))
        assert as_vm.status == "completed", as_vm.error_message
        made = client._runtime.fabric.find_vm("default", f"vm{index}")
        assert made is not None and made.qemu is not None
        assert _as_restored({n: (Path(d.image), d.format) for n, d in made.qemu.disks.items()}) == expected[index]


def test_the_copy_is_of_one_instant_while_the_guest_writes(tmp_path: Path, vm: QemuVm) -> None:
    fabric = QemuFabric(qemu_inventory(tmp_path / "fabric", {"qvm1": vm}, os=OS))
    [machine] = fabric.list_vms("default")
    before = vm.content("os0")
    with fabric.capture(machine, None, "p1") as capture:
        vm.write("os0", 0, b"\x99" * MIB)  # after the instant: the copy must not see it
        vm.write("os0", 60 * MIB, b"\x98" * MIB)
        disk = next(d for d in capture.disks if d.name == "os0")
        seen = bytearray(disk.size)
        view = memoryview(seen)
        for offset in range(0, disk.size, 4 * MIB):
            assert disk.reader.read_into(view[offset : offset + 4 * MIB], offset) == 4 * MIB
    assert bytes(seen) == before
    assert vm.content("os0")[:MIB] == b"\x99" * MIB
    # everything the capture added to QEMU is gone but its point's bitmaps
    with_bitmaps = vm.bitmaps()
    assert all(len(bm) == 1 and since(bm[0]["name"], "p1") for bm in with_bitmaps.values())


def test_a_restarted_qemu_keeps_the_qcow2_bitmap_and_reads_the_raw_disk_whole(
    qclient: tuple[Client, str], vm: QemuVm, bulk: Path
) -> None:
    client, vault = qclient
    _backup(client, vault)
    vm.stop()  # a clean quit stores the qcow2 disk's persistent bitmap in the image
    vm.start()
    vm.write("os0", 8 * MIB, b"\x55" * (256 * 1024))
    vm.write("data0", 8 * MIB, b"\x66" * (256 * 1024))
    state = _state(vm)
    job = client.wait(client.backup_now(vault, "qvm1"))
    tracking = job.result["tracking"]
    assert "dirty bitmap" in tracking["os0"]
    assert tracking["data0"].startswith("read whole: it has no dirty bitmap since point")
    resets = [w for w in job.warnings if w["code"] == "ChangeTrackingReset"]
    assert len(resets) == 1 and "data0" in resets[0]["message"]
    assert job.result["read_bytes"] == 32 * MIB + 256 * 1024
    assert _restored(client, job.result["recovery_point_id"], bulk / "out", "after-restart") == state


def test_a_killed_qemu_leaves_an_inconsistent_bitmap_and_the_disk_is_read_whole(
    qclient: tuple[Client, str], vm: QemuVm, bulk: Path
) -> None:
    client, vault = qclient
    _backup(client, vault)
    vm.stop()  # the bitmap is stored in the image,
    vm.start()  # marked in use as QEMU loads it,
    deadline = time.monotonic() + 30
    while not all("in-use" in flags for flags in vm.image_bitmaps("os0").values()):
        assert time.monotonic() < deadline, vm.image_bitmaps("os0")
        time.sleep(0.05)
    assert vm.image_bitmaps("os0")
    vm.kill()  # and never stored again: inconsistent when QEMU next opens the image
    vm.start()
    vm.write("os0", 9 * MIB, b"\x57" * 4096)
    state = _state(vm)
    job = client.wait(client.backup_now(vault, "qvm1"))
    assert job.result["tracking"]["os0"].startswith("read whole: its dirty bitmap is inconsistent")
    assert job.result["read_bytes"] == 96 * MIB
    assert _restored(client, job.result["recovery_point_id"], bulk / "out", "after-kill") == state
    assert vm.bitmaps()["os0"] == [b for b in vm.bitmaps()["os0"] if not b.get("inconsistent")]


def test_a_backup_that_dies_after_its_instant_loses_no_change(
    short_dir: Path, qclient: tuple[Client, str], vm: QemuVm, bulk: Path
) -> None:
    """A capture left open (its worker gone: export, job, overlay and bitmaps left in QEMU), then
    writes: the next backup removes what was left and still reads every change since the last point."""
    client, vault = qclient
    first = _backup(client, vault)
    vm.write("os0", 12 * MIB, b"\x71" * 4096)
    fabric = QemuFabric(short_dir / "fabric" / "inventory.yaml")
    abandoned = fabric.capture(fabric.get_vm(fabric.list_vms("default")[0].ref.key), first["recovery_point_id"], "gone")
    abandoned.__enter__()  # never left: as a killed worker's
    vm.write("os0", 30 * MIB, b"\x72" * 4096)
    vm.write("data0", 1 * MIB, b"\x73" * 4096)
    state = _state(vm)
    job = client.wait(client.backup_now(vault, "qvm1"))
    assert job.status == "completed_with_warnings", job.error_message
    assert all("dirty bitmap" in how for how in job.result["tracking"].values()), job.result["tracking"]
    assert job.result["read_bytes"] <= 3 * 256 * 1024
    assert _restored(client, job.result["recovery_point_id"], bulk / "out", "after-death") == state
    abandoned.__exit__(None, None, None)  # its temporary directory goes (QEMU has nothing of it left)


def test_a_failed_backup_keeps_the_changes_for_the_next(
    short_dir: Path, qclient: tuple[Client, str], vm: QemuVm, bulk: Path
) -> None:
    client, vault = qclient
    first = _backup(client, vault)
    fabric = QemuFabric(short_dir / "fabric" / "inventory.yaml")
    machine = fabric.list_vms("default")[0]
    vm.write("os0", 2 * MIB, b"\x81" * 4096)
    with pytest.raises(RuntimeError), fabric.capture(machine, first["recovery_point_id"], "failed"):
        vm.write("os0", 4 * MIB, b"\x82" * 4096)
        raise RuntimeError("the vault store went away")
    names = [b["name"] for b in vm.bitmaps()["os0"]]  # nothing dropped
    assert len(names) == 2
    assert {
        ("failed" if since(n, "failed") else "first" if since(n, first["recovery_point_id"]) else n) for n in names
    } == {
        "failed",
        "first",
    }
    state = _state(vm)
    job = client.wait(client.backup_now(vault, "qvm1"))
    assert "dirty bitmap" in job.result["tracking"]["os0"]
    assert _restored(client, job.result["recovery_point_id"], bulk / "out", "after-failure") == state


def test_a_stopped_vm_is_read_offline_and_tracked_again_when_it_runs(
    qclient: tuple[Client, str], vm: QemuVm, bulk: Path
) -> None:
    client, vault = qclient
    _backup(client, vault)
    vm.write("os0", 6 * MIB, b"\x91" * 4096)
    vm.stop()
    offline = client.wait(client.backup_now(vault, "qvm1"))
    assert offline.status in ("completed", "completed_with_warnings"), offline.error_message
    assert offline.result["consistency"] == "crash"
    assert set(offline.result["tracking"].values()) == {
        "read whole: the VM is off (a disk's dirty bitmap is read only while QEMU runs it)"
    }
    vm.start()
    stopped_state = _state(vm)
    assert _restored(client, offline.result["recovery_point_id"], bulk / "out", "offline") == stopped_state
    vm.write("os0", 7 * MIB, b"\x92" * 4096)
    job = client.wait(client.backup_now(vault, "qvm1"))
    assert "dirty bitmap" in job.result["tracking"]["os0"]  # the bitmap the offline backup added
    assert job.result["tracking"]["data0"].startswith("read whole")


def test_vms_are_discovered_from_a_directory_of_qmp_sockets(tmp_path: Path, vm: QemuVm) -> None:
    inventory = tmp_path / "fabric" / "inventory.yaml"
    inventory.parent.mkdir()
    inventory.write_text(
        "subscriptions:\n- name: default\n  fabric: qemu\n  qmp_dirs:\n"
        f"  - {{path: {vm.sockets}, resource_group: rg-host, region: japaneast}}\n"
    )
    [found] = QemuFabric(inventory).list_vms("default")
    assert found.spec.name == "vm" and found.ref.resource_group == "rg-host"
    assert {d.name: d.size_gb for d in found.spec.disks} == {"os0": 1, "data0": 1}
    assert found.qemu is not None and {n: d.format for n, d in found.qemu.disks.items()} == {
        "os0": "qcow2",
        "data0": "raw",
    }


def _raw(image: Path, fmt: str) -> str:
    """The sha256 of an image's content, whatever its format."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(image), str(out)], check=True)
        return _sha(out.read_bytes())


def test_a_point_restores_as_a_new_qemu_vm_with_qcow2_disks_and_its_definition(
    qclient: tuple[Client, str], vm: QemuVm, short_dir: Path
) -> None:
    client, vault = qclient
    state = _state(vm)
    point = _backup(client, vault)["recovery_point_id"]
    job = client.wait(client.restore(str(point), "copy"))
    assert job.status == "completed", job.error_message
    made = client._runtime.fabric.find_vm("default", "copy")
    assert made is not None and made.qemu is not None and made.qemu.status == "off"
    assert {n: d.format for n, d in made.qemu.disks.items()} == {"os0": "qcow2", "data0": "qcow2"}
    assert {n: _raw(Path(d.image), "qcow2") for n, d in made.qemu.disks.items()} == state
    assert {n: Path(p).suffix for n, p in job.result["disks"].items()} == {"os0": ".qcow2", "data0": ".qcow2"}
    folder = Path(job.result["disks"]["os0"]).parent
    assert sorted(p.name for p in folder.iterdir()) == ["copy.sh", "copy.xml", "data0.qcow2", "os0.qcow2"]
    script = (folder / "copy.sh").read_text()
    assert f"unix:{folder / 'copy.qmp'},server=on,wait=off" in script and "-m 64" in script
    domain = ET.parse(folder / "copy.xml").getroot()
    assert [d.find("source").get("file") for d in domain.iter("disk")] == [  # type: ignore[union-attr]
        str(folder / "os0.qcow2"),
        str(folder / "data0.qcow2"),
    ]
    again = client.wait(client.restore(str(point), "copy"))
    assert again.status == "failed" and again.error_code == "RestoreTargetExists"
    assert sorted(p.name for p in folder.iterdir()) == ["copy.sh", "copy.xml", "data0.qcow2", "os0.qcow2"]


def test_a_restored_vm_with_raw_disks_is_started_and_backed_up_like_any(
    tmp_path: Path, short_dir: Path, vm: QemuVm, bulk: Path
) -> None:
    with _client(tmp_path, short_dir, vm, qemu_restore_format="raw", qemu_start_restored=True) as client:
        vault = _protect(client)
        state = _state(vm)
        point = _backup(client, vault)["recovery_point_id"]
        job = client.wait(client.restore(str(point), "copy"))
        assert job.status == "completed", job.error_message
        made = client._runtime.fabric.find_vm("default", "copy")
        assert made is not None and made.qemu is not None
        try:
            assert made.qemu.status == "running" and made.spec.memory_mib == 64
            assert {n: d.format for n, d in made.qemu.disks.items()} == {"os0": "raw", "data0": "raw"}
            assert {n: _raw(Path(d.image), "raw") for n, d in made.qemu.disks.items()} == state
            # the restored VM is discovered, and protected and backed up as any of the subscription's
            assert client.wait(client.discover(vault)).result["new_vms"] == ["copy"]
            client.wait_all(client.register(vault, ["copy"]))
            client.wait_all(client.protect(vault, ["copy"]))
            copied = client.wait(client.backup_now(vault, "copy"))
            assert copied.status == "completed_with_warnings", copied.error_message
            assert _restored(client, copied.result["recovery_point_id"], bulk / "out", "copy-disks") == state
        finally:
            with Monitor(made.qemu.qmp) as qmp:
                qmp.execute("quit")


def test_an_unreachable_vm_never_seen_is_not_listed(tmp_path: Path, vm: QemuVm) -> None:
    inventory = qemu_inventory(tmp_path / "fabric", {"qvm1": vm}, os=OS)
    vm.kill()
    fabric = QemuFabric(inventory)
    assert fabric.list_vms("default") == []
    with pytest.raises(OrchestratorError) as err:
        fabric.get_vm("default/rg-qemu/qvm1")
    assert err.value.code == "QemuUnreachable"


def test_a_vm_with_a_luks_encrypted_disk_is_refused_protection(tmp_path: Path, bulk: Path) -> None:
    need_qemu()
    image = bulk / "secret.qcow2"
    secret = ["--object", "secret,id=sec0,data=correct-horse"]
    options = "encrypt.format=luks,encrypt.key-secret=sec0"
    subprocess.run(["qemu-img", "create", "-q", *secret, "-f", "qcow2", "-o", options, str(image), "32M"], check=True)
    sockets = Path(tempfile.mkdtemp(prefix="qvm-"))
    process = subprocess.Popen(
        [
            *("qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "accel=tcg"),
            *("-object", "secret,id=sec0,data=correct-horse", "-qmp", f"unix:{sockets}/vm.qmp,server=on,wait=off"),
            *("-drive", f"file={image},format=qcow2,encrypt.key-secret=sec0,if=none,id=os0"),
            *("-device", "virtio-blk-pci,drive=os0"),
        ]
    )
    try:
        while not answers(sockets / "vm.qmp"):
            assert process.poll() is None
            time.sleep(0.02)
        inventory = qemu_inventory(tmp_path / "fabric", {"qvm1": QemuVm(bulk, [], sockets)}, os=OS)
        with Client(data_dir=tmp_path / "data", fabric=inventory) as client:
            refused = _protect_refused(client)
            assert refused.error_code == "QemuEncryptedDiskUnsupported" and "os0" in refused.error_message
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(sockets, ignore_errors=True)


def _protect_refused(client: Client) -> Any:
    vault = client.create_vault("vault-q", "japaneast", "rg")
    client.wait(client.discover(vault))
    client.wait_all(client.register(vault, ["qvm1"]))
    [job] = client.wait_all(client.protect(vault, ["qvm1"]))
    assert job.status == "failed"
    return job
