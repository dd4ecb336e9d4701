"""What the local fabric's inventory accepts (issue 14, findings 4, 5 and 20): disk names and disk
images that cannot lead a worker outside where it belongs, names with their rules, and a file that
is not UTF-8 or repeats a key refused with `InventoryInvalid`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.errors import OrchestratorError
from orchestrator.fabric.local import LocalFabric
from orchestrator.fabric.sample import vm_entry, write_fabric


def _inventory(tmp_path: Path, change: Callable[[dict[str, Any]], None], disks: int = 2) -> Path:
    path = write_fabric(tmp_path / "fabric", {"prod": [vm_entry("db01", "japaneast", disks=disks)]}, disk_mib=1)
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _vm(data: dict[str, Any]) -> dict[str, Any]:
    return data["subscriptions"][0]["vms"][0]  # type: ignore[no-any-return]


def _refused(path: Path, roots: tuple[Path, ...] = ()) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as caught:
        (LocalFabric(path, roots) if roots else LocalFabric(path)).all_vms()
    assert caught.value.code == "InventoryInvalid"
    return caught.value


@pytest.mark.parametrize("name", ["../../x", "/abs/x", ".hidden", "a/b", "d\n1", "", "x" * 81])
def test_finding_4_a_disk_name_that_could_be_a_path_is_refused(tmp_path: Path, name: str) -> None:
    path = _inventory(tmp_path, lambda d: _vm(d)["disks"][1].update(name=name))
    error = _refused(path)
    assert "db01" in error.message and "disks.1.name" in error.message


def test_finding_4_two_disks_of_one_vm_with_one_name_are_refused(tmp_path: Path) -> None:
    path = _inventory(tmp_path, lambda d: _vm(d)["disks"][1].update(name=_vm(d)["disks"][0]["name"]))
    error = _refused(path)
    assert "db01" in error.message and "db01-os" in error.message and "twice" in error.message


@pytest.mark.parametrize(
    "image", ["/proc/self/environ", "/dev/zero", "/etc/hostname", "/sys/kernel/mm/transparent_hugepage/enabled"]
)
def test_finding_4_a_disk_image_outside_the_image_roots_or_of_the_kernel_is_refused(tmp_path: Path, image: str) -> None:
    path = _inventory(tmp_path, lambda d: _vm(d)["disks"][1].update(image=image))
    error = _refused(path)
    assert "db01" in error.message and "disks.db01-data1.image" in error.message and image in error.message


def test_finding_4_a_link_from_inside_the_roots_to_outside_them_is_refused(tmp_path: Path) -> None:
    path = _inventory(tmp_path, lambda d: _vm(d)["disks"][1].update(image="disks/sneaky.img"))
    (path.parent / "disks" / "sneaky.img").symlink_to("/proc/self/environ")
    assert "is a file of the kernel's" in _refused(path).message


def test_finding_4_a_directory_or_a_fifo_is_not_a_disk_image(tmp_path: Path) -> None:
    path = _inventory(tmp_path, lambda d: _vm(d)["disks"][1].update(image="disks/fifo"))
    os.mkfifo(path.parent / "disks" / "fifo")
    assert "not a regular file or a block device" in _refused(path).message


def test_finding_4_images_under_a_root_of_the_setting_are_read(tmp_path: Path) -> None:
    elsewhere = tmp_path / "images"
    elsewhere.mkdir()
    path = _inventory(tmp_path, lambda d: _vm(d)["disks"][1].update(image=str(elsewhere / "d1.img")))
    (elsewhere / "d1.img").write_bytes(b"\1" * 4096)
    _refused(path)  # outside the inventory's directory, the default root
    vms = LocalFabric(path, (path.parent, elsewhere)).all_vms()
    assert [vm.spec.name for vm in vms] == ["db01"]


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("resource_group", "rg\nx"),
        ("resource_group", "rg/../x"),
        ("region", "japan east"),
        ("name", "vm\n1"),
        ("cloud_service", "cs\n"),
        ("subscription", "prod\nx"),
        ("subscription", "../x"),
        ("subscription", "s" * 65),
    ],
)
def test_finding_5_names_in_the_inventory_follow_their_kinds_rules(tmp_path: Path, where: str, value: str) -> None:
    def change(data: dict[str, Any]) -> None:
        if where == "subscription":
            data["subscriptions"][0]["name"] = value
        else:
            _vm(data)[where] = value

    error = _refused(_inventory(tmp_path, change))
    assert where.replace("subscription", "name") in error.message


def test_finding_20_an_inventory_that_is_not_utf8_is_invalid(tmp_path: Path) -> None:
    path = _inventory(tmp_path, lambda d: None)
    path.write_bytes(path.read_bytes().replace(b"db01", b"db\xff1", 1))
    assert "not UTF-8" in _refused(path).message


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_finding_20_a_key_given_twice_in_an_inventory_is_invalid(tmp_path: Path, suffix: str) -> None:
    path = _inventory(tmp_path, lambda d: None)
    if suffix == ".yaml":
        import re

        text = re.sub(
            r"(?m)^( +)region: japaneast$", r"\1region: japaneast\n\1region: japanwest", path.read_text(), count=1
        )
        assert text != path.read_text()
    else:
        import json

        path = path.with_suffix(".json")
        text = json.dumps(yaml.safe_load((path.with_suffix(".yaml")).read_text()))
        text = text.replace('"region": "japaneast"', '"region": "japaneast", "region": "japanwest"', 1)
    path.write_text(text)
    assert "appears twice" in _refused(path).message


def test_finding_4_a_disk_image_is_checked_again_as_it_is_opened(tmp_path: Path) -> None:
    """The path checked when the VM was read may be swapped for a link before a worker opens it:
    what was opened is checked (by its descriptor), not the path again."""
    path = _inventory(tmp_path, lambda d: None)
    fabric = LocalFabric(path)
    vm = fabric.get_vm("prod/rg-japaneast/db01")  # its images checked
    image = vm.disk_path(vm.spec.disks[1])
    image.unlink()
    image.symlink_to("/proc/self/environ")
    with pytest.raises(OrchestratorError) as caught:
        fabric.open_disk(vm, vm.spec.disks[1])
    assert caught.value.code == "InventoryInvalid" and "kernel's" in caught.value.message
    with fabric.open_disk(vm, vm.spec.disks[0]) as good:
        assert len(good.read(16)) == 16
