"""Consistency of a recovery point: application (VSS, or the Linux scripts), file-system when the
freeze fails (with a warning), crash for a VM that is off."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.fabric.sample import vm_entry, write_fabric

LINUX = {"type": "linux", "version": "Ubuntu 16.04"}


def _script(directory: Path, name: str, body: str) -> str:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return name


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    fabric = tmp_path / "fabric"
    fabric.mkdir()
    ok, bad, slow = (
        _script(fabric, "ok.sh", "exit 0"),
        _script(fabric, "bad.sh", "echo disk busy >&2; exit 3"),
        _script(fabric, "slow.sh", "sleep 5"),
    )
    marker = tmp_path / "post-ran"
    post = _script(fabric, "post.sh", f"touch {marker}")
    vms = [
        vm_entry("win-ok", "japaneast"),
        vm_entry("win-vss-fails", "japaneast", freeze={"vss_ok": False}),
        vm_entry("lin-noscript", "japaneast", os=LINUX),
        vm_entry("lin-ok", "japaneast", os=LINUX, freeze={"pre_script": ok, "post_script": post}),
        vm_entry("lin-bad-continue", "japaneast", os=LINUX, freeze={"pre_script": bad}),
        vm_entry("lin-bad-fail", "japaneast", os=LINUX, freeze={"pre_script": bad, "on_script_failure": "fail"}),
        vm_entry("lin-slow", "japaneast", os=LINUX, freeze={"pre_script": slow, "script_timeout_s": 0.5}),
        vm_entry("off", "japaneast", power_state="stopped"),
    ]
    inventory = write_fabric(fabric, {"default": vms}, disk_mib=1)
    with Client(data_dir=tmp_path / "data", fabric=inventory) as c:
        vault = c.create_vault("vault-east", "japaneast", "rg")
        c.wait(c.discover(vault))
        names = [vm["name"] for vm in vms]
        c.wait_all(c.register(vault, names))
        c.wait_all(c.protect(vault, names))
        c.vault = vault  # type: ignore[attr-defined]
        c.marker = marker  # type: ignore[attr-defined]
        yield c


@pytest.mark.parametrize(
    ("vm", "status", "consistency", "warning"),
    [
        ("win-ok", "completed", "application", None),
        ("win-vss-fails", "completed_with_warnings", "file_system", "VssFreezeFailed"),
        ("lin-noscript", "completed", "file_system", None),
        ("lin-ok", "completed", "application", None),
        ("lin-bad-continue", "completed_with_warnings", "file_system", "PreSnapshotScriptFailed"),
        ("lin-slow", "completed_with_warnings", "file_system", "PreSnapshotScriptFailed"),
        ("off", "completed", "crash", None),
    ],
)
def test_consistency_follows_the_freeze(
    client: Client, vm: str, status: str, consistency: str, warning: str | None
) -> None:
    job = client.wait(client.backup_now(client.vault, vm))  # type: ignore[attr-defined]
    assert (job.status, job.result["consistency"]) == (status, consistency)
    assert [w["code"] for w in job.warnings] == ([warning] if warning else [])


def test_a_failing_script_set_to_fail_fails_the_backup(client: Client) -> None:
    job = client.wait(client.backup_now(client.vault, "lin-bad-fail"))  # type: ignore[attr-defined]
    assert (job.status, job.error_code) == ("failed", "PreSnapshotScriptFailed")
    assert "exited 3: disk busy" in job.error_message
    assert client.recovery_points(client.vault, "lin-bad-fail") == []  # type: ignore[attr-defined]
    [item] = [i for i in client.protected_items(client.vault) if i.vm_name == "lin-bad-fail"]  # type: ignore[attr-defined]
    assert item.last_backup_status == "failed"


def test_the_post_snapshot_script_runs_after_the_snapshot(client: Client) -> None:
    client.wait(client.backup_now(client.vault, "lin-ok"))  # type: ignore[attr-defined]
    assert client.marker.exists()  # type: ignore[attr-defined]


def test_a_timed_out_script_says_so(client: Client) -> None:
    job = client.wait(client.backup_now(client.vault, "lin-slow"))  # type: ignore[attr-defined]
    assert "did not finish within 0.5s" in job.warnings[0]["message"]
