"""qemu-guest-agent in a booted guest (tests/guest.py: Debian's kernel, busybox and qemu-ga, under
TCG): an application-consistent point with the freeze and the thaw observed in the guest and the
snapshot scripts run in it; the agent stopped gives a crash-consistent point with its warning; a
freeze held beyond the timeout is thawed by the watchdog."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client
from orchestrator.domain.values import Consistency
from orchestrator.fabric import Capture
from orchestrator.fabric.agent import frozen
from orchestrator.fabric.qemu import QemuFabric
from orchestrator.fabric.qmp import Monitor, QemuError
from tests.guest import Guest, GuestVm, build, data_disk
from tests.helpers import need
from tests.qemu import need_qemu, qemu_inventory

OS = {"type": "linux", "version": "Debian 12"}


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    need_qemu()
    need(GuestVm.environment_ok(), "apt-get, dpkg-deb, mkfs.ext4 and ldd are needed to build the test guest")
    cache = tmp_path_factory.mktemp("guest")
    yield build(cache)
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture
def booted(guest: Guest, bulk: Path) -> Iterator[GuestVm]:
    sockets = Path(tempfile.mkdtemp(prefix="qga-"))
    disk = bulk / "data0.raw"
    data_disk(disk, 64)
    vm = GuestVm(guest, disk, sockets)
    try:
        vm.wait_ready()
        _wait_agent(vm)
        yield vm
    finally:
        vm.close()
        shutil.rmtree(sockets, ignore_errors=True)


def _wait_agent(vm: GuestVm, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Monitor(vm.qga, 2, guest_agent=True) as qga:
                qga.execute("guest-ping")
            return
        except QemuError:  # booting: the agent may not listen yet
            assert time.monotonic() < deadline, "qemu-guest-agent never answered"


def in_guest(vm: GuestVm, *command: str, timeout: float = 30) -> str:
    """Run a command in the guest through the agent; its standard output."""
    with Monitor(vm.qga, timeout, guest_agent=True) as qga:
        pid = qga.execute("guest-exec", {"path": command[0], "arg": list(command[1:]), "capture-output": True})["pid"]
        for _ in range(600):
            status: dict[str, Any] = qga.execute("guest-exec-status", {"pid": pid})
            if status["exited"]:
                assert status.get("exitcode") == 0, status
                return base64.b64decode(status.get("out-data", "")).decode()
            time.sleep(0.05)
    raise AssertionError(f"{command} did not finish")


def _client(tmp_path: Path, vm: GuestVm, **extra: Any) -> Client:
    inventory = qemu_inventory(tmp_path / "fabric", {"gvm": vm}, os=OS, guest_agent=str(vm.qga), **extra)
    return Client(data_dir=tmp_path / "data", fabric=inventory)


def _protected(client: Client) -> str:
    vault = client.create_vault("vault-g", "japaneast", "rg")
    assert client.wait(client.discover(vault)).result["new_vms"] == ["gvm"]
    for job in (*client.wait_all(client.register(vault, ["gvm"])), *client.wait_all(client.protect(vault, ["gvm"]))):
        assert job.status == "completed", (job.error_message, job.warnings)
    return vault


def _file_in_image(image: Path, name: str) -> str:
    shown = subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, text=True, check=True)
    return shown.stdout


def test_a_ready_agent_gives_an_application_consistent_point(tmp_path: Path, booted: GuestVm, bulk: Path) -> None:
    freeze = {"pre_script": "/etc/backup/pre.sh", "post_script": "/etc/backup/post.sh"}
    with _client(tmp_path, booted, freeze=freeze) as client:
        vault = _protected(client)
        in_guest(booted, "/bin/sh", "-c", "echo 'written before the point' > /data/note.txt")
        job = client.wait(client.backup_now(vault, "gvm"), timeout=120)
        assert job.status == "completed", (job.error_message, job.warnings)
        assert job.result["consistency"] == "application"
        log = in_guest(booted, "/bin/cat", "/run/freeze.log").split()
        assert log[0::2] == ["freeze", "thaw"]  # the guest saw one freeze and its thaw
        assert 0 < float(log[3]) - float(log[1]) < 10
        scripts = in_guest(booted, "/bin/cat", "/run/scripts.log").split()
        assert scripts[0::2] == ["pre", "post"] and float(scripts[1]) <= float(log[1]) <= float(scripts[3])
        restore = client.wait(
            client.restore(job.result["recovery_point_id"], "g", mode="disks", target_dir=bulk / "out")
        )
        assert restore.status == "completed", restore.error_message
        # frozen: the file written before the point is in the restored file system
        assert _file_in_image(Path(restore.result["disks"]["data0"]), "note.txt") == "written before the point\n"


def test_a_stopped_agent_gives_a_crash_consistent_point_with_its_warning(tmp_path: Path, booted: GuestVm) -> None:
    with _client(tmp_path, booted) as client:
        vault = _protected(client)
        with pytest.raises(QemuError):  # the agent dies as it runs the command that kills it
            in_guest(booted, "/bin/killall", "qemu-ga", timeout=3)
        job = client.wait(client.backup_now(vault, "gvm"), timeout=120)
        assert job.status == "completed_with_warnings", job.error_message
        assert job.result["consistency"] == "crash"
        [warning] = [w for w in job.warnings if w["code"] == "VmAgentNotReady"]
        assert "qemu-guest-agent" in warning["message"] and "crash-consistent" in warning["message"]


def test_a_failing_pre_script_gives_a_file_system_consistent_point(tmp_path: Path, booted: GuestVm) -> None:
    with _client(tmp_path, booted, freeze={"pre_script": "/etc/backup/fail.sh"}) as client:
        vault = _protected(client)
        job = client.wait(client.backup_now(vault, "gvm"), timeout=120)
        assert job.status == "completed_with_warnings", job.error_message
        assert job.result["consistency"] == "file_system"
        [warning] = [w for w in job.warnings if w["code"] == "PreSnapshotScriptFailed"]
        assert "exited 3" in warning["message"]


def test_a_freeze_held_beyond_the_timeout_is_thawed(tmp_path: Path, booted: GuestVm) -> None:
    inventory = qemu_inventory(tmp_path / "fabric", {"gvm": booted}, os=OS, guest_agent=str(booted.qga))
    vm = QemuFabric(inventory).list_vms("default")[0]
    capture = Capture(consistency=Consistency.CRASH)
    started = time.monotonic()
    thawed_at = None
    with frozen(vm, booted.qga, capture, freeze_timeout=1.0, timeout=5.0):
        while time.monotonic() - started < 6:  # a step that outlasts the timeout
            with Monitor(booted.qga, 5, guest_agent=True) as qga:
                if thawed_at is None and qga.execute("guest-fsfreeze-status") == "thawed":
                    thawed_at = time.monotonic() - started  # by the watchdog: the step goes on
            time.sleep(0.2)
    assert thawed_at is not None and thawed_at < 5
    log = in_guest(booted, "/bin/cat", "/run/freeze.log").split()
    assert log[0::2] == ["freeze", "thaw"] and float(log[3]) - float(log[1]) < 5
    assert capture.consistency is Consistency.FILE_SYSTEM
    assert [w.code for w in capture.warnings] == ["GuestFreezeTimedOut"]
