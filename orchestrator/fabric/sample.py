"""Write a fabric to a directory: inventory.yaml plus small real disk images. Used by
`backupctl fabric init`, the demo and the tests."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import yaml

from orchestrator import safefs

MIB = 1024 * 1024


def vm_entry(name: str, region: str, *, disks: int = 1, **facts: Any) -> dict[str, Any]:
    """An inventory entry for a healthy running Windows VM, with `facts` laid over it."""
    entry: dict[str, Any] = {
        "name": name,
        "resource_group": "rg-" + region,
        "region": region,
        "os": {"type": "windows", "version": "Windows Server 2016"},
        "disks": [
            {
                "name": f"{name}-{'os' if i == 0 else f'data{i}'}",
                "role": "os" if i == 0 else "data",
                "size_gb": 32 if i == 0 else 64,
            }
            for i in range(disks)
        ],
    }
    entry.update(facts)
    return entry


def write_fabric(
    directory: Path,
    subscriptions: dict[str, list[dict[str, Any]]],
    *,
    disk_mib: int = 2,
    key_vaults: dict[str, list[dict[str, Any]]] | None = None,
) -> Path:
    """Write the inventory (with each subscription's `key_vaults`) and one image per disk (random
    regions among zeros); return its path."""
    safefs.make_dirs(directory, link_ok=True)
    disk_dir = safefs.make_dirs(directory / "disks")
    subs = []
    for sub_name, vms in subscriptions.items():
        for vm in vms:
            for disk in vm["disks"]:
                qualifier = vm.get("cloud_service") or vm["resource_group"]
                image = disk_dir / f"{sub_name}-{qualifier}-{disk['name']}.img"
                if not os.path.lexists(image):
                    _write_image(image, disk_mib, seed=str(image.name))
                disk.setdefault("image", str(image.relative_to(directory)))
        subs.append({"name": sub_name, "vms": vms, "key_vaults": (key_vaults or {}).get(sub_name, [])})
    path = directory / "inventory.yaml"
    safefs.write_replacing(path, yaml.safe_dump({"subscriptions": subs}, sort_keys=False).encode("utf-8"))
    return path


def _write_image(path: Path, size_mib: int, seed: str) -> None:
    """Real bytes: the first 512 KiB region holds data (as a boot sector would), each later one is
    random (60%) or zero, like a lightly used disk."""
    rng = random.Random(seed)
    region = 512 * 1024
    with os.fdopen(safefs.create(path), "wb") as f:
        for index in range(size_mib * MIB // region):
            f.write(rng.randbytes(region) if index == 0 or rng.random() < 0.6 else bytes(region))


def sample_subscriptions() -> dict[str, list[dict[str, Any]]]:
    """A dozen VMs across two regions, with the situations a demo should show."""
    east = [vm_entry(f"web{i:02d}", "japaneast") for i in range(1, 5)]
    east += [
        vm_entry("db01", "japaneast", disks=3, os={"type": "linux", "version": "Ubuntu 16.04"}),
        vm_entry("batch01", "japaneast", power_state="stopped"),
        vm_entry("legacy01", "japaneast", agent={"installed": False}),
    ]
    west = [vm_entry(f"app{i:02d}", "japanwest") for i in range(1, 4)]
    west += [
        vm_entry("shop", "japanwest", cloud_service="shop-cs", deployment_model="classic", resource_group="rg-classic"),
        vm_entry("shop", "japanwest", cloud_service="blog-cs", deployment_model="classic", resource_group="rg-classic"),
    ]
    return {"default": east + west}


def write_sample_fabric(directory: Path) -> Path:
    return write_fabric(directory, sample_subscriptions())
