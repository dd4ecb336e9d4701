"""The local fabric: VMs from an inventory file, disks as image files, changes as state files.

What the service changes is kept beside the inventory, never in it: `state/<vm>.json` (the backup
extension), `state/restored/` (VMs created by restores, with their disk images) and
`state/keyvaults/` (secrets and keys the service restored into a key vault).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from orchestrator import safefs
from orchestrator.errors import InventoryError, OrchestratorError
from orchestrator.fabric import BACKUP_SERVICE, Capture, CapturedDisk
from orchestrator.fabric.consistency import frozen
from orchestrator.fabric.inventory import (
    DiskSpec,
    FabricVm,
    KeyMaterialSpec,
    KeyVaultSpec,
    PowerState,
    VmSpec,
    check_disks,
    image_problem,
    inventory_vms,
    load_inventory,
    load_key_vaults,
)


class LocalFabric:
    """Reads the inventory on every call, so an operator's edit is seen by the next job. Disk images
    are read only from under `image_roots` (default: the inventory's directory) and the fabric's own
    state directory (restored VMs)."""

    def __init__(self, inventory_path: Path, image_roots: tuple[Path, ...] = ()) -> None:
        self.inventory_path = inventory_path
        self.state_dir = inventory_path.parent / "state"
        self.restored_dir = self.state_dir / "restored"
        self.image_roots = (*(image_roots or (inventory_path.parent,)), self.state_dir)

    def all_vms(self) -> list[FabricVm]:
        return load_inventory(self.inventory_path, self.image_roots) + self._restored()

    def list_vms(self, subscription: str) -> list[FabricVm]:
        return [vm for vm in self.all_vms() if vm.subscription == subscription]

    def get_vm(self, vm_key: str) -> FabricVm:
        """One VM, by key: found in the (cached) inventory's index, else among restored VMs; only
        its own disk images are checked, so one VM's missing image does not stop the others' jobs."""
        key = vm_key.lower()
        vm = inventory_vms(self.inventory_path).get(key)
        if vm is not None:
            check_disks(self.inventory_path, vm, self.image_roots)
            return vm
        for vm in self._restored():
            if vm.ref.key.lower() == key:
                check_disks(self.inventory_path, vm, self.image_roots)
                return vm
        raise OrchestratorError("VmNotFound", f"VM {vm_key} no longer exists in the fabric ({self.inventory_path})")

    def extension_version(self, vm: FabricVm) -> str | None:
        state = self._state(vm.ref.key)
        if "extension_version" in state:
            return str(state["extension_version"])
        return vm.spec.extension.version if vm.spec.extension.installed else None

    def install_extension(self, vm: FabricVm) -> str:
        if vm.spec.power_state is not PowerState.RUNNING:
            raise OrchestratorError("VmNotRunning", f"VM {vm.ref.display_name} is {vm.spec.power_state.value}")
        version = vm.spec.extension.version
        self._write_state(vm.ref.key, {**self._state(vm.ref.key), "extension_version": version})
        return version

    def disk_paths(self, vm_key: str) -> list[tuple[str, Path]]:
        vm = self.get_vm(vm_key)
        return [(disk.name, vm.disk_path(disk)) for disk in vm.spec.disks]

    def open_disk(self, vm: FabricVm, disk: DiskSpec) -> BinaryIO:
        path = vm.disk_path(disk)
        try:  # O_NONBLOCK: a FIFO swapped in does not hold the open up (it is refused below)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise InventoryError(
                "InventoryInvalid",
                f"{self.inventory_path}: VM {vm.spec.name!r} field disks."
                f"{disk.name}.image: {path} cannot be read ({exc.strerror})",
                field="image",
            ) from None
        problem = image_problem(safefs.real_path_of(fd), self.image_roots, os.fstat(fd))
        if problem is not None:
            os.close(fd)
            raise InventoryError(
                "InventoryInvalid",
                f"{self.inventory_path}: VM {vm.spec.name!r} field disks.{disk.name}.image: {problem}",
                field="image",
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)

    @contextmanager
    def capture(self, vm: FabricVm, base_point: str | None, point: str) -> Iterator[Capture]:
        """The local fabric has no copy-on-write snapshots: the VM stays quiesced (its snapshot
        scripts) while the block reads its images. A disk whose image is as the last point read it
        (its fingerprint) is not read again; there is no finer change tracking."""
        with ExitStack() as images, frozen(self, vm) as freeze:
            disks = []
            for disk in vm.spec.disks:
                image = images.enter_context(self.open_disk(vm, disk))
                size = image.seek(0, os.SEEK_END)
                disks.append(CapturedDisk(disk.name, size, FileReader(image.fileno()), fingerprint(image)))
            yield Capture(freeze.consistency, freeze.warnings, disks)

    def run_script(self, vm: FabricVm, script: Path, timeout: float) -> tuple[bool, str]:
        """Run a VM's snapshot script; (True, "") when it exits 0 within `timeout` seconds."""
        path = script if script.is_absolute() else vm.base_dir / script
        try:
            done = subprocess.run([str(path)], capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False, f"{path.name} did not finish within {timeout:g}s"
        except OSError as exc:
            return False, f"{path.name} could not run: {exc.strerror}"
        if done.returncode != 0:
            return False, f"{path.name} exited {done.returncode}: {done.stderr.decode(errors='replace').strip()[:200]}"
        return True, ""

    def find_vm(self, subscription: str, name: str) -> FabricVm | None:
        for vm in self.list_vms(subscription):
            if vm.spec.name.lower() == name.lower():
                return vm
        return None

    def restored_disk_dir(self, subscription: str, name: str) -> Path:
        return self.restored_dir / f"{subscription}-{name}"

    def create_vm(self, subscription: str, spec: VmSpec) -> FabricVm:
        """Add a VM (a restore's result) whose disk images are already in place."""
        if self.find_vm(subscription, spec.name) is not None:
            raise OrchestratorError("RestoreTargetExists", f"a VM named {spec.name!r} exists in the fabric")
        data = {"subscription": subscription, "vm": json.loads(spec.model_dump_json())}
        safefs.make_dirs(self.restored_dir)
        if not safefs.write_new(self.restored_dir / f"{subscription}-{spec.name}.yaml", yaml.safe_dump(data).encode()):
            raise OrchestratorError("RestoreTargetExists", f"a VM named {spec.name!r} exists in the fabric")
        return FabricVm(subscription=subscription, spec=spec, base_dir=self.restored_dir)

    def key_vault(self, subscription: str, name: str) -> KeyVaultSpec | None:
        kv = load_key_vaults(self.inventory_path).get((subscription, name.lower()))
        if kv is None:
            return None
        restored = self._restored_material(subscription, name)
        secrets = {n: KeyMaterialSpec(value=v) for n, v in restored["secrets"].items()}
        keys = {n: KeyMaterialSpec(value=v) for n, v in restored["keys"].items()}
        return kv.model_copy(update={"secrets": {**secrets, **kv.secrets}, "keys": {**keys, **kv.keys}})

    def backup_key_material(self, vm: FabricVm) -> dict[str, bytes]:
        enc = vm.spec.encryption
        assert enc.key_vault and enc.bek_secret
        kv = self._accessible(vm.subscription, enc.key_vault, "backup", with_keys=bool(enc.kek_key))
        wanted = {"bek_secret": (kv.secrets, "secret", enc.bek_secret)}
        if enc.kek_key:
            wanted["kek_key"] = (kv.keys, "key", enc.kek_key)
        material = {}
        for role, (held, kind, name) in wanted.items():
            if name not in held:
                raise OrchestratorError("KeyOrSecretNotFound", f"the {kind} {name!r} is not in key vault {kv.name!r}")
            material[role] = base64.b64decode(held[name].value)
        return material

    def restore_key_material(
        self, subscription: str, key_vault: str, secrets: dict[str, bytes], keys: dict[str, bytes]
    ) -> dict[str, str]:
        kv = self._accessible(subscription, key_vault, "restore", with_keys=bool(keys))
        state = self._restored_material(subscription, key_vault)
        outcome: dict[str, str] = {}
        for kind, wanted, held in (("secrets", secrets, kv.secrets), ("keys", keys, kv.keys)):
            stored = state[kind]
            for name, value in wanted.items():
                if name in held:
                    if base64.b64decode(held[name].value) != value:
                        raise OrchestratorError(
                            "KeyOrSecretExists",
                            (
                                f"key vault {kv.name!r} holds another value under the {kind[:-1]} name {name!r}; "
                                "delete it first or restore into another key vault"
                            ),
                        )
                    outcome[f"{kind[:-1]} {name}"] = "present"
                    continue
                stored[name] = base64.b64encode(value).decode()
                outcome[f"{kind[:-1]} {name}"] = "restored"
        self._write_state(self._key_vault_state_key(subscription, key_vault), dict(state))
        return outcome

    def _accessible(self, subscription: str, name: str, operation: str, *, with_keys: bool) -> KeyVaultSpec:
        """The key vault, if the backup service may run `operation` on its secrets (and keys)."""
        kv = self.key_vault(subscription, name)
        if kv is None:
            raise OrchestratorError(
                "KeyVaultNotFound", f"key vault {name!r} does not exist in subscription {subscription!r}"
            )
        key_perms, secret_perms = kv.permissions(BACKUP_SERVICE)
        missing = [f"secrets/{p}" for p in ("get", operation) if p not in secret_perms]
        if with_keys:
            missing += [f"keys/{p}" for p in ("get", operation) if p not in key_perms]
        if missing:
            raise OrchestratorError(
                "NotAuthorized",
                (f"the {BACKUP_SERVICE} is not authorized on key vault {kv.name!r} (lacks {', '.join(missing)})"),
            )
        return kv

    @staticmethod
    def _key_vault_state_key(subscription: str, name: str) -> str:
        return f"keyvault:{subscription}/{name.lower()}"

    def _restored_material(self, subscription: str, name: str) -> dict[str, dict[str, str]]:
        """What the service restored into a key vault: {"secrets": {name: base64}, "keys": {...}}."""
        state = self._state(self._key_vault_state_key(subscription, name))
        return {kind: {str(n): str(v) for n, v in dict(state.get(kind) or {}).items()} for kind in ("secrets", "keys")}

    def _restored(self) -> list[FabricVm]:
        if not self.restored_dir.exists():
            return []
        vms = []
        for path in sorted(self.restored_dir.glob("*.yaml")):
            data = yaml.safe_load(path.read_text())
            vms.append(
                FabricVm(
                    subscription=data["subscription"],
                    spec=VmSpec.model_validate(data["vm"]),
                    base_dir=self.restored_dir,
                )
            )
        return vms

    def _state_path(self, vm_key: str) -> Path:
        digest = hashlib.sha256(vm_key.lower().encode()).hexdigest()[:32]
        return self.state_dir / f"{digest}.json"

    def _state(self, vm_key: str) -> dict[str, Any]:
        path = self._state_path(vm_key)
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_state(self, vm_key: str, state: dict[str, object]) -> None:
        """Write-then-rename, so a crash leaves the old state or the new, never half of one."""
        path = self._state_path(vm_key)
        safefs.make_dirs(path.parent)
        safefs.write_replacing(path, json.dumps({**state, "vm": vm_key}).encode())


class FileReader:
    """An open image read at offsets (preadv: no shared file position, so threads share it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def read_into(self, buffer: memoryview, offset: int) -> int:
        got = 0
        while got < len(buffer) and (n := os.preadv(self.fd, [buffer[got:]], offset + got)):
            got += n
        return got


def fingerprint(image: BinaryIO) -> str:
    """What says an image file has not changed, as restic does for files; "" for a block device,
    whose times say nothing of its content (it is always read)."""
    st = os.fstat(image.fileno())
    if stat.S_ISBLK(st.st_mode):
        return ""
    return f"{st.st_size}:{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"
