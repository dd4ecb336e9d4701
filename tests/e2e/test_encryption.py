"""Encrypted VMs (Azure Disk Encryption): the support matrix, the backup service's key vault
permissions, keys kept with recovery points, the four encrypted-restore outcomes, and no key
material anywhere but the key vault."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from orchestrator import Client, OrchestratorError
from orchestrator.entry.cli.main import app
from orchestrator.fabric import BACKUP_SERVICE
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.helpers import edit_vm, event_count

R = "japaneast"
LINUX = {"type": "linux", "version": "Ubuntu 16.04"}
WINDOWS = {"type": "windows", "version": "Windows Server 2016"}
KEY = base64.b64encode(os.urandom(32)).decode()  # BACKUP_KEY_PROTECTION_KEY for these tests
FULL = ["get", "list", "backup", "restore"]


def _material() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _policy(keys: list[str], secrets: list[str]) -> list[dict[str, Any]]:
    return [{"principal": BACKUP_SERVICE, "keys": keys, "secrets": secrets}]


def _encrypted(
    name: str, key_vault: str, *, managed: bool = True, kek: bool = True, os_: dict[str, str] = WINDOWS, **facts: Any
) -> dict[str, Any]:
    entry = vm_entry(
        name,
        R,
        disks=2,
        os=os_,
        encryption={
            "enabled": True,
            "key_vault": key_vault,
            "bek_secret": f"bek-{name}",
            "kek_key": f"kek-{name}" if kek else None,
        },
        **facts,
    )
    for disk in entry["disks"]:
        disk["managed"] = managed
    return entry


# The support matrix: (managed disks, KEK, OS) → refused with this code at protect, or backed up.
MATRIX = [
    (managed, kek, os_name, "BekOnlyManagedDiskUnsupported" if managed and not kek else None)
    for managed in (True, False)
    for kek in (True, False)
    for os_name in ("windows", "linux")
]


def _matrix_name(managed: bool, kek: bool, os_name: str) -> str:
    return f"{'md' if managed else 'um'}-{'kek' if kek else 'bek'}-{os_name[:3]}"


@pytest.fixture
def fabric(tmp_path: Path) -> Path:
    vms = [
        _encrypted(_matrix_name(m, k, o), "kv-main", managed=m, kek=k, os_=WINDOWS if o == "windows" else LINUX)
        for m, k, o, _ in MATRIX
    ]
    vms += [
        _encrypted("perm-none", "kv-none"),
        _encrypted("perm-secrets", "kv-secrets"),
        _encrypted("perm-both", "kv-both"),
        _encrypted("bek-secrets", "kv-secrets", managed=False, kek=False),
        _encrypted("bek-none", "kv-none", managed=False, kek=False),
        _encrypted("classic-enc", "kv-main", cloud_service="cs-enc", deployment_model="classic", managed=False),
        _encrypted("no-kv", "kv-missing"),
        vm_entry("later", R),
        vm_entry("plain", R),
    ]
    secrets = {f"bek-{vm['name']}": {"value": _material()} for vm in vms}
    keys = {f"kek-{vm['name']}": {"value": _material()} for vm in vms}
    key_vaults = [
        {"name": "kv-main", "access_policies": _policy(FULL, FULL)},
        {"name": "kv-none"},
        {"name": "kv-secrets", "access_policies": _policy([], ["get", "list", "backup"])},
        {"name": "kv-both", "access_policies": _policy(["get", "list", "backup"], ["get", "list", "backup"])},
    ]
    for kv in key_vaults:  # each its own copy (the same values), so that one can lose a secret alone
        kv.update(region=R, secrets=dict(secrets), keys=dict(keys))
    return write_fabric(tmp_path / "fabric", {"default": vms}, disk_mib=1, key_vaults={"default": key_vaults})


@pytest.fixture
def client(tmp_path: Path, fabric: Path) -> Iterator[Client]:
    with Client(data_dir=tmp_path / "data", fabric=fabric, key_protection_key=KEY, principal="ops") as c:
        yield c


@pytest.fixture
def vault(client: Client) -> str:
    vault_id = client.create_vault("vault-enc", R, "rg")
    client.wait(client.discover(vault_id))
    return vault_id


def _edit_key_vault(inventory: Path, name: str, change: Callable[[dict[str, Any]], object]) -> None:
    """Change (or, when `change` returns "delete", remove) a key vault, as its owner would."""
    data = yaml.safe_load(inventory.read_text())
    for sub in data["subscriptions"]:
        for kv in list(sub["key_vaults"]):
            if kv["name"] == name and change(kv) == "delete":
                sub["key_vaults"].remove(kv)
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))


def _key_bytes(inventory: Path) -> set[bytes]:
    data = yaml.safe_load(inventory.read_text())
    return {
        base64.b64decode(m["value"])
        for kv in data["subscriptions"][0]["key_vaults"]
        for kind in ("secrets", "keys")
        for m in kv[kind].values()
    }


def _protect(client: Client, vault: str, names: list[str]) -> dict[str, Any]:
    client.wait_all(client.register(vault, names))
    return {j.vm_name: j for j in client.wait_all(client.protect(vault, names))}


def _backup(client: Client, vault: str, name: str) -> Any:
    return client.wait(client.backup_now(vault, name))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("managed", "kek", "os_name", "refused"), MATRIX, ids=[_matrix_name(m, k, o) for m, k, o, _ in MATRIX]
)
def test_the_encryption_matrix(
    client: Client, vault: str, tmp_path: Path, managed: bool, kek: bool, os_name: str, refused: str | None
) -> None:
    name = _matrix_name(managed, kek, os_name)
    protected = _protect(client, vault, [name])[name]
    if refused:
        assert (protected.status, protected.error_code) == ("failed", refused)
        assert "BEK and a KEK" in protected.error_message
        return
    assert protected.status == "completed", protected.error_message
    backup = _backup(client, vault, name)
    assert backup.status == "completed", backup.error_message
    [rp] = client.recovery_points(vault, name)
    assert rp.key_vault == "kv-main"
    restore = client.wait(
        client.restore(rp.recovery_point_id, f"{name}-r", mode="disks", target_dir=str(tmp_path / "r"))
    )
    assert restore.status == "completed_with_warnings", restore.error_message
    assert [w["code"] for w in restore.warnings] == ["RestoredAsDisksEncrypted"]
    source = client._runtime.fabric.find_vm("default", name)
    assert source is not None
    assert {d.name: _sha(source.disk_path(d)) for d in source.spec.disks} == {
        n: _sha(Path(p)) for n, p in restore.result["disks"].items()
    }


def test_an_encrypted_vm_restored_as_a_vm_comes_back_as_disks_with_the_reason(client: Client, vault: str) -> None:
    _protect(client, vault, ["um-kek-win"])
    _backup(client, vault, "um-kek-win")
    [rp] = client.recovery_points(vault, "um-kek-win")
    restore = client.wait(client.restore(rp.recovery_point_id, "um-kek-win-new"))
    assert (restore.status, restore.result["mode"]) == ("completed_with_warnings", "disks")
    [warning] = restore.warnings
    assert warning["code"] == "RestoredAsDisksEncrypted" and "kv-main" in warning["message"]
    assert client._runtime.fabric.find_vm("default", "um-kek-win-new") is None


def test_encryption_needs_a_resource_manager_vm_and_an_existing_key_vault(client: Client, vault: str) -> None:
    [classic] = client.wait_all(client.register(vault, ["cs-enc/classic-enc"]))
    assert (classic.status, classic.error_code) == ("failed", "EncryptedClassicVmUnsupported")
    protected = _protect(client, vault, ["no-kv"])["no-kv"]
    assert (protected.status, protected.error_code) == ("failed", "KeyVaultNotFound")


@pytest.mark.parametrize(
    ("vm", "code", "missing"),
    [
        (
            "perm-none",
            "KeyVaultPermissionMissing",
            "secrets/get, secrets/list, secrets/backup, keys/get, keys/list, keys/backup",
        ),
        ("perm-secrets", "KeyVaultPermissionMissing", "keys/get, keys/list, keys/backup"),
        ("perm-both", None, ""),
        ("bek-none", "KeyVaultPermissionMissing", "secrets/get, secrets/list, secrets/backup"),
        ("bek-secrets", None, ""),  # a BEK-only VM needs secret permissions alone
    ],
)
def test_the_backup_service_needs_key_vault_permissions(
    client: Client, vault: str, vm: str, code: str | None, missing: str
) -> None:
    [check] = [r for r in client.precheck(vault, vm, "protect") if r.code == code] if code else [None]
    protected = _protect(client, vault, [vm])[vm]
    if code is None:
        assert protected.status == "completed", protected.error_message
        assert _backup(client, vault, vm).status == "completed"
        return
    assert check is not None and f"lacks {missing} on key vault" in check.message
    assert BACKUP_SERVICE in check.remedy and "get, list and backup" in check.remedy
    assert (protected.status, protected.error_code) == ("failed", code)
    assert protected.checks[0]["code"] == code


def test_a_vm_encrypted_after_protection_fails_its_backups_until_access_is_granted(
    client: Client, vault: str, fabric: Path
) -> None:
    assert _protect(client, vault, ["later"])["later"].status == "completed"
    assert _backup(client, vault, "later").status == "completed"
    edit_vm(
        fabric,
        "later",
        encryption={"enabled": True, "key_vault": "kv-none", "bek_secret": "bek-later", "kek_key": "kek-later"},
    )
    failed = _backup(client, vault, "later")
    assert (failed.status, failed.error_code) == ("failed", "KeyVaultPermissionMissing")
    [item] = [i for i in client.protected_items(vault) if i.vm_name == "later"]
    assert item.checks[0]["code"] == "KeyVaultPermissionMissing"

    _edit_key_vault(fabric, "kv-none", lambda kv: kv.update(access_policies=_policy(FULL, FULL)))
    resumed = _backup(client, vault, "later")  # no new protection: the item carries on
    assert resumed.status == "completed", resumed.error_message
    assert [rp.key_vault for rp in client.recovery_points(vault, "later")] == ["kv-none", ""]
    operations = [j.operation for j in client.jobs() if j.vm_name == "later"]
    assert operations.count("configure_protection") == 1


@pytest.fixture
def backed_up(client: Client, vault: str) -> str:
    """A recovery point of an encrypted VM (unmanaged disks, BEK + KEK) in kv-main."""
    _protect(client, vault, ["um-kek-lin"])
    assert _backup(client, vault, "um-kek-lin").status == "completed"
    [rp] = client.recovery_points(vault, "um-kek-lin")
    return rp.recovery_point_id


def _restore_disks(client: Client, rp: str, target: Path) -> Any:
    return client.wait(client.restore(rp, "um-kek-lin-r", mode="disks", target_dir=str(target)))


def test_restore_succeeds_when_the_keys_are_in_their_key_vault(client: Client, backed_up: str, tmp_path: Path) -> None:
    restore = _restore_disks(client, backed_up, tmp_path / "ok")
    assert restore.status == "completed_with_warnings" and restore.result["verified"] is True
    assert sorted(p.name for p in (tmp_path / "ok" / "um-kek-lin-r").iterdir()) == [
        "um-kek-lin-data1.img",
        "um-kek-lin-os.img",
    ]


def test_restore_is_refused_when_the_key_vault_is_gone(
    client: Client, backed_up: str, fabric: Path, tmp_path: Path
) -> None:
    _edit_key_vault(fabric, "kv-main", lambda kv: "delete")
    restore = _restore_disks(client, backed_up, tmp_path / "gone")
    assert (restore.status, restore.error_code) == ("failed", "KeyVaultNotFound")
    assert "kv-main" in restore.error_message and "create the key vault" in restore.error_message
    assert not (tmp_path / "gone").exists()


def test_restore_is_refused_without_access_to_the_key_vault(
    client: Client, backed_up: str, fabric: Path, tmp_path: Path
) -> None:
    _edit_key_vault(fabric, "kv-main", lambda kv: kv.update(access_policies=[]))
    restore = _restore_disks(client, backed_up, tmp_path / "denied")
    assert (restore.status, restore.error_code) == ("failed", "NotAuthorized")
    assert "secrets/get" in restore.error_message and "keys/get" in restore.error_message
    assert not (tmp_path / "denied").exists()


def test_missing_keys_refuse_the_restore_until_restore_keys_puts_them_back(
    client: Client, backed_up: str, fabric: Path, tmp_path: Path
) -> None:
    original = client._runtime.fabric.key_vault("default", "kv-main")
    assert original is not None

    def drop(kv: dict[str, Any]) -> None:
        del kv["secrets"]["bek-um-kek-lin"]
        del kv["keys"]["kek-um-kek-lin"]

    _edit_key_vault(fabric, "kv-main", drop)
    refused = _restore_disks(client, backed_up, tmp_path / "missing")
    assert (refused.status, refused.error_code) == ("failed", "KeyOrSecretNotFound")
    assert f"backupctl restore-keys {backed_up}" in refused.error_message
    assert "secret 'bek-um-kek-lin'" in refused.error_message and "key 'kek-um-kek-lin'" in refused.error_message
    assert not (tmp_path / "missing").exists()

    keys_job = client.wait(client.restore_keys(backed_up))
    assert keys_job.status == "completed", keys_job.error_message
    assert keys_job.result["restored"] == {"secret bek-um-kek-lin": "restored", "key kek-um-kek-lin": "restored"}
    now = client._runtime.fabric.key_vault("default", "kv-main")
    assert now is not None
    assert now.secrets["bek-um-kek-lin"] == original.secrets["bek-um-kek-lin"]
    assert now.keys["kek-um-kek-lin"] == original.keys["kek-um-kek-lin"]
    again = client.wait(client.restore_keys(backed_up))  # a second run finds them in place
    assert set(again.result["restored"].values()) == {"present"}
    assert _restore_disks(client, backed_up, tmp_path / "after").status == "completed_with_warnings"


def test_restore_keys_needs_restore_permission_and_an_encrypted_point(
    client: Client, vault: str, backed_up: str, fabric: Path
) -> None:
    _edit_key_vault(fabric, "kv-main", lambda kv: kv.update(access_policies=_policy(["get", "list"], ["get", "list"])))
    denied = client.wait(client.restore_keys(backed_up))
    assert (denied.status, denied.error_code) == ("failed", "NotAuthorized")
    assert "secrets/restore" in denied.error_message
    _protect(client, vault, ["plain"])
    _backup(client, vault, "plain")
    [plain] = client.recovery_points(vault, "plain")
    before = event_count(client)
    with pytest.raises(OrchestratorError) as refused:
        client.restore_keys(plain.recovery_point_id)
    assert refused.value.code == "RecoveryPointNotEncrypted" and event_count(client) == before


def test_an_encrypted_vm_needs_the_key_protection_key(tmp_path: Path, fabric: Path) -> None:
    with Client(data_dir=tmp_path / "nokey", fabric=fabric, principal="ops") as c:
        vault_id = c.create_vault("vault-nokey", R, "rg")
        c.wait(c.discover(vault_id))
        protected = _protect(c, vault_id, ["um-kek-win"])["um-kek-win"]
        assert (protected.status, protected.error_code) == ("failed", "KeyProtectionNotConfigured")
        assert "backupctl key generate" in protected.error_message


def test_a_point_kept_under_another_key_does_not_open(
    client: Client, backed_up: str, fabric: Path, tmp_path: Path
) -> None:
    from workers.keys import KeyProtector

    vault_id = client.vaults()[0].vault_id
    manifest = client._runtime.worker_context().vault_store(UUID(vault_id)).read_manifest(backed_up)
    assert manifest.sealed_keys
    with pytest.raises(OrchestratorError) as wrong:
        KeyProtector(SecretStr(_material())).open(manifest.sealed_keys)
    assert wrong.value.code == "KeyProtectionKeyWrong"


def test_no_key_material_in_events_logs_read_models_vault_store_or_cli_output(
    tmp_path: Path, fabric: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key_bytes = _key_bytes(fabric)
    data = tmp_path / "scan"
    with Client(data_dir=data, fabric=fabric, key_protection_key=KEY, principal="ops") as c:
        vault_id = c.create_vault("vault-scan", R, "rg")
        c.wait(c.discover(vault_id))
        names = ["md-kek-win", "um-bek-lin", "um-kek-lin", "perm-none"]
        _protect(c, vault_id, names)
        for name in names[:3]:
            assert _backup(c, vault_id, name).status == "completed"
        rp = c.recovery_points(vault_id, "um-kek-lin")[0].recovery_point_id

        def drop(kv: dict[str, Any]) -> None:
            del kv["secrets"]["bek-um-kek-lin"]

        _edit_key_vault(fabric, "kv-main", drop)
        assert _restore_disks(c, rp, tmp_path / "x").error_code == "KeyOrSecretNotFound"
        assert c.wait(c.restore_keys(rp)).status == "completed"
        assert _restore_disks(c, rp, tmp_path / "y").status == "completed_with_warnings"
        store = c._runtime.worker_context().vault_store(UUID(vault_id))
        manifests = [store.read_manifest(m) for m in store.manifest_ids()]  # opened: sealed at rest
    env = {
        "BACKUP_DATA_DIR": str(data),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_KEY_PROTECTION_KEY": KEY,
        "COLUMNS": "250",
    }
    outputs = []
    for args in (
        ["jobs", "--json"],
        ["jobs"],
        ["items", "vault-scan", "--json"],
        ["recovery-points", "vault-scan", "--json"],
        ["recovery-points", "vault-scan"],
        ["precheck", "perm-none", "--vault", "vault-scan"],
        ["restore-keys", rp, "--json"],
        ["restore", rp, "--target", "z", "--json"],
    ):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code in (0, 1), result.output
        outputs.append(result.output.encode())
    assert b"KeyVaultPermissionMissing" in b"".join(outputs)  # the scan looks at real output

    needles = set()
    for secret in key_bytes:
        needles |= {secret, base64.b64encode(secret), secret.hex().encode(), json.dumps(list(secret)).encode()}
    stored = [p.read_bytes() for p in data.rglob("*") if p.is_file()]
    sealed = [base64.b64decode(m.sealed_keys or "") for m in manifests]
    assert sum(bool(s) for s in sealed) == 3  # three encrypted VMs' points keep their keys, sealed
    assert any(b"backup.recovery_point.created" in blob for blob in stored)  # the event store is in the scan
    logs = "\n".join(r.getMessage() for r in caplog.records).encode()
    for haystack in [*stored, *sealed, logs, *outputs]:
        assert not any(needle in haystack for needle in needles)


def test_key_generate_makes_a_usable_key_protection_key() -> None:
    result = CliRunner().invoke(app, ["key", "generate"])
    assert result.exit_code == 0
    key = result.output.strip()
    assert len(base64.b64decode(key)) == 32
    from orchestrator.config import load_settings

    assert load_settings({"BACKUP_KEY_PROTECTION_KEY": key}).key_protection_key is not None
