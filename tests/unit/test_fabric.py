from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import Client
from orchestrator.errors import InventoryError, OrchestratorError
from orchestrator.fabric.inventory import _validated, load_inventory
from orchestrator.fabric.local import LocalFabric
from orchestrator.fabric.sample import vm_entry, write_fabric, write_sample_fabric


def test_the_sample_fabric_has_a_dozen_vms_in_two_regions_with_real_disks(tmp_path: Path) -> None:
    vms = load_inventory(write_sample_fabric(tmp_path))
    assert len(vms) == 12
    assert {vm.spec.region for vm in vms} == {"japaneast", "japanwest"}
    for vm in vms:
        for disk in vm.spec.disks:
            data = vm.disk_path(disk).read_bytes()
            assert len(data) == 2 * 1024 * 1024 and data.count(0) < len(data)  # real, not all zeros


def _broken(tmp_path: Path, mutate: Any) -> Path:
    path = write_fabric(tmp_path, {"prod": [vm_entry("web01", "japaneast"), vm_entry("db01", "japaneast")]})
    raw = yaml.safe_load(path.read_text())
    mutate(raw["subscriptions"][0]["vms"][1])
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda vm: vm.pop("os"), "field os"),
        (lambda vm: vm.update(agent={"version": "two"}), "field agent.version"),
        (lambda vm: vm.update(region="Japan East"), "field region"),
        (lambda vm: vm.update(power_state="sleeping"), "field power_state"),
        (lambda vm: vm["disks"][0].update(size_gb=0), "field disks.0.size_gb"),
        (lambda vm: vm.update(deployment_model="classic"), "cloud_service"),
        (lambda vm: vm.update(colour="blue"), "field colour"),
        (lambda vm: vm["disks"][0].update(role="data"), "disks"),
        (lambda vm: vm.update(encryption={"enabled": True, "key_vault": "kv"}), "field encryption"),
        (lambda vm: vm.update(encryption={"kek_key": "kek"}), "need enabled: true"),
    ],
)
def test_an_invalid_inventory_names_the_vm_and_the_field(tmp_path: Path, mutate: Any, words: str) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(_broken(tmp_path, mutate))
    assert caught.value.code == "InventoryInvalid"
    assert "db01" in caught.value.message and words in caught.value.message


def test_a_missing_disk_image_is_named(tmp_path: Path) -> None:
    path = _broken(tmp_path, lambda vm: vm["disks"][0].update(image="disks/gone.img"))
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert "db01" in caught.value.message and "gone.img" in caught.value.message


def test_a_vm_listed_twice_is_refused(tmp_path: Path) -> None:
    path = write_fabric(tmp_path, {"prod": [vm_entry("web01", "japaneast"), vm_entry("web01", "japaneast")]})
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert "web01" in caught.value.message and "twice" in caught.value.message


def test_json_inventories_are_read_too(tmp_path: Path) -> None:
    path = write_fabric(tmp_path, {"prod": [vm_entry("web01", "japaneast")]})
    json_path = tmp_path / "inventory.json"
    json_path.write_text(__import__("json").dumps(yaml.safe_load(path.read_text())))
    assert [vm.spec.name for vm in load_inventory(json_path)] == ["web01"]


def test_installing_the_extension_is_remembered_by_the_fabric(tmp_path: Path) -> None:
    fabric = LocalFabric(write_fabric(tmp_path, {"prod": [vm_entry("web01", "japaneast")]}))
    key = "prod/rg-japaneast/web01"
    assert fabric.extension_version(fabric.get_vm(key)) is None
    version = fabric.install_extension(fabric.get_vm(key))
    assert LocalFabric(fabric.inventory_path).extension_version(fabric.get_vm(key)) == version


def test_a_stopped_vm_cannot_get_the_extension(tmp_path: Path) -> None:
    fabric = LocalFabric(write_fabric(tmp_path, {"prod": [vm_entry("web01", "japaneast", power_state="stopped")]}))
    with pytest.raises(OrchestratorError) as caught:
        fabric.install_extension(fabric.get_vm("prod/rg-japaneast/web01"))
    assert caught.value.code == "VmNotRunning"


def test_discovery_without_a_fabric_fails_its_job_with_the_fix(tmp_path: Path) -> None:
    with Client(data_dir=tmp_path / "data", fabric=tmp_path / "nowhere.yaml") as client:
        vault = client.create_vault("vault-a", "japaneast", "rg")
        job = client.wait(client.discover(vault))
    assert (job.status, job.error_code) == ("failed", "FabricNotFound")
    assert "backupctl fabric init" in job.error_message


def test_a_broken_inventory_fails_discovery_with_the_vm_named(tmp_path: Path) -> None:
    path = _broken(tmp_path, lambda vm: vm.pop("os"))
    with Client(data_dir=tmp_path / "data", fabric=path) as client:
        vault = client.create_vault("vault-a", "japaneast", "rg", subscription="prod")
        job = client.wait(client.discover(vault))
    assert job.error_code == "InventoryInvalid" and "db01" in job.error_message


def test_key_vaults_are_checked_without_echoing_their_values(tmp_path: Path) -> None:
    secret = "c2VjcmV0LWJ5dGVz"  # base64 of the key vault's secret value
    path = write_fabric(
        tmp_path,
        {"prod": [vm_entry("web01", "japaneast")]},
        key_vaults={"prod": [{"name": "kv-web", "region": "japaneast", "secrets": {"bek": {"value": secret + "!"}}}]},
    )
    with pytest.raises(InventoryError) as caught:
        LocalFabric(path).key_vault("prod", "kv-web")
    assert "key_vaults.0.secrets.bek.value" in caught.value.message and "base64" in caught.value.message
    assert secret not in caught.value.message
    twice = write_fabric(
        tmp_path / "twice",
        {"prod": []},
        key_vaults={"prod": [{"name": "kv-web", "region": "japaneast"}, {"name": "KV-web", "region": "japaneast"}]},
    )
    with pytest.raises(InventoryError, match="appears twice"):
        LocalFabric(twice).key_vault("prod", "kv-web")


def _settle(path: Path, seconds_ago: float) -> None:
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def test_an_unchanged_inventory_is_parsed_once_and_every_edit_is_seen(tmp_path: Path) -> None:
    path = write_fabric(tmp_path, {"prod": [vm_entry("web01", "japaneast"), vm_entry("db01", "japaneast")]})
    fresh = _validated(path)
    assert _validated(path) is not fresh  # written just now: two writes in one clock tick look alike
    _settle(path, 10)
    settled = _validated(path)
    assert _validated(path) is settled  # parsed once
    text = path.read_text()
    assert "size_gb: 32" in text
    path.write_text(text.replace("size_gb: 32", "size_gb: 64"))  # same size, new content
    _settle(path, 5)
    assert {d.size_gb for vm in load_inventory(path) for d in vm.spec.disks} == {64}


def test_a_vm_whose_image_is_missing_does_not_stop_the_others(tmp_path: Path) -> None:
    path = write_fabric(tmp_path, {"prod": [vm_entry("web01", "japaneast"), vm_entry("db01", "japaneast")]})
    fabric = LocalFabric(path)
    db01 = fabric.get_vm("prod/rg-japaneast/db01")
    db01.disk_path(db01.spec.disks[0]).unlink()
    assert fabric.get_vm("prod/rg-japaneast/web01").spec.name == "web01"
    with pytest.raises(InventoryError) as caught:
        fabric.get_vm("prod/rg-japaneast/db01")
    assert "db01" in caught.value.message and "no file at" in caught.value.message
    with pytest.raises(InventoryError):
        load_inventory(path)  # a check of the whole inventory still names it
