"""The local fabric's inventory file (YAML or JSON): subscriptions, and their VMs with the facts
the backup service checks. Each disk is a real image file beside the inventory."""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import stat
import time
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator import safefs
from orchestrator.domain.names import (
    CloudServiceName,
    DiskName,
    KeyOrSecretName,
    KeyVaultName,
    RegionName,
    ResourceGroupName,
    SubscriptionName,
    VmName,
)
from orchestrator.domain.values import DeploymentModel, VmRef
from orchestrator.errors import InventoryError

GIB = 1024**3


class Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PowerState(str, Enum):
    RUNNING = "running"
    STOPPED = "stopped"
    DEALLOCATED = "deallocated"


class OsSpec(Spec):
    type: Literal["windows", "linux"]
    version: str = Field(min_length=1, description="e.g. 'Windows Server 2016' or 'Ubuntu 16.04'")


class AgentSpec(Spec):
    installed: bool = True
    version: str = "2.7.1198.807"
    ready: bool = True
    updating: bool = False

    @field_validator("version")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if value and not all(part.isdigit() for part in value.split(".")):
            raise ValueError("must be a dotted version such as 2.7.1198.807")
        return value


class ExtensionSpec(Spec):
    installed: bool = False
    version: str = "1.0.9169.0"


class DiskSpec(Spec):
    name: DiskName
    image: Path  # a regular file or a block device, under the fabric's image roots (see `image_problem`)
    size_gb: int = Field(ge=1, le=32767, description="provisioned size; the image holds the data")
    role: Literal["os", "data"] = "data"
    storage: Literal["standard", "premium"] = "standard"
    managed: bool = True
    storage_account_network_rules: bool = False  # unmanaged disks: the account restricts networks


class NetworkSpec(Spec):
    nsg_allows_storage_443: bool = True
    http_proxy: str | None = None
    nics: int = Field(1, ge=1)
    reserved_ips: int = Field(0, ge=0)
    reserved_ip_endpoints: int = Field(0, ge=0)
    load_balancer: bool = False


class EncryptionSpec(Spec):
    """Azure Disk Encryption (BitLocker / dm-crypt): the disk key (BEK) is a secret of a key vault,
    optionally wrapped by a key encryption key (KEK) of the same key vault."""

    enabled: bool = False
    key_vault: KeyVaultName | None = None
    bek_secret: KeyOrSecretName | None = None
    kek_key: KeyOrSecretName | None = None
    luks: bool = False  # Linux disks encrypted with LUKS inside the VM (not Azure Disk Encryption)

    @model_validator(mode="after")
    def _names_the_keys(self) -> EncryptionSpec:
        if self.enabled and not (self.key_vault and self.bek_secret):
            raise ValueError("an encrypted VM names its key_vault and its bek_secret")
        if not self.enabled and (self.key_vault or self.bek_secret or self.kek_key):
            raise ValueError("key_vault, bek_secret and kek_key need enabled: true")
        return self

    @property
    def bek_only(self) -> bool:
        return self.enabled and not self.kek_key


KEY_VAULT_PERMISSIONS = (
    "get",
    "list",
    "set",
    "delete",
    "backup",
    "restore",
    "recover",
    "purge",
    "create",
    "import",
    "update",
    "decrypt",
    "encrypt",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
)
Permission = Literal[
    "get",
    "list",
    "set",
    "delete",
    "backup",
    "restore",
    "recover",
    "purge",
    "create",
    "import",
    "update",
    "decrypt",
    "encrypt",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
]


class AccessPolicySpec(Spec):
    principal: str = Field(min_length=1, description='e.g. "Backup Management Service"')
    keys: list[Permission] = []
    secrets: list[Permission] = []


class KeyMaterialSpec(Spec):
    """A secret's or a key's value, base64. Only the fabric holds it in the clear."""

    value: str = Field(min_length=1, repr=False)

    @field_validator("value")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError("must be base64") from None
        return value


class KeyVaultSpec(Spec):
    name: KeyVaultName
    region: RegionName
    access_policies: list[AccessPolicySpec] = []
    secrets: dict[KeyOrSecretName, KeyMaterialSpec] = {}
    keys: dict[KeyOrSecretName, KeyMaterialSpec] = {}

    def permissions(self, principal: str) -> tuple[set[str], set[str]]:
        """The (key, secret) permissions `principal` holds, over all its access policies."""
        keys: set[str] = set()
        secrets: set[str] = set()
        for policy in self.access_policies:
            if policy.principal.lower() == principal.lower():
                keys.update(policy.keys)
                secrets.update(policy.secrets)
        return keys, secrets


class FreezeSpec(Spec):
    """How the agent quiesces writes before a snapshot: VSS on Windows; on Linux, the VM's own
    pre- and post-snapshot scripts (real executables, run by the local fabric)."""

    vss_ok: bool = True
    pre_script: Path | None = None
    post_script: Path | None = None
    script_timeout_s: float = Field(60, gt=0, le=3600)
    on_script_failure: Literal["fail", "continue"] = "continue"


class VmSpec(Spec):
    name: VmName
    cloud_service: CloudServiceName | Literal[""] = ""
    resource_group: ResourceGroupName
    region: RegionName
    deployment_model: DeploymentModel = DeploymentModel.RESOURCE_MANAGER
    os: OsSpec
    power_state: PowerState = PowerState.RUNNING
    agent: AgentSpec = Field(default_factory=AgentSpec)
    extension: ExtensionSpec = Field(default_factory=ExtensionSpec)
    disks: list[DiskSpec] = Field(min_length=1)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    encryption: EncryptionSpec = Field(default_factory=EncryptionSpec)
    freeze: FreezeSpec = Field(default_factory=FreezeSpec)
    cluster: Literal["csv", "sofs"] | None = None  # a cluster shared volume / scale-out file server member
    network_mounts: list[str] = Field(default_factory=list)  # network drives mounted in the VM
    domain_controller: Literal["single", "multi"] | None = None  # DC of a one-DC or a multi-DC domain
    memory_mib: int | None = Field(None, ge=1)  # what QEMU gives the VM (the QEMU fabric); a restore gives it again
    vcpus: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _classic_has_cloud_service(self) -> VmSpec:
        if self.deployment_model is DeploymentModel.CLASSIC and not self.cloud_service:
            raise ValueError("cloud_service: a classic VM needs its cloud service")
        if sum(d.role == "os" for d in self.disks) != 1:
            raise ValueError("disks: a VM needs exactly one disk with role 'os'")
        seen: set[str] = set()
        for disk in self.disks:  # a disk's name names its restored image: two alike could never be restored
            if disk.name.lower() in seen:
                raise ValueError(f"disks: disk {disk.name!r} appears twice (disk names are unique per VM)")
            seen.add(disk.name.lower())
        return self


class QemuVmSpec(Spec):
    """A VM of the QEMU fabric: who it is for the backup service, and where its monitor listens.
    Its disks, their formats and sizes, and its power state are read from QEMU itself."""

    name: VmName
    qmp: Path = Field(description="the VM's QMP socket (QEMU's -qmp unix:PATH,server=on,wait=off)")
    resource_group: ResourceGroupName
    region: RegionName
    os: OsSpec = OsSpec(type="linux", version="Linux")
    os_disk: DiskName | None = Field(None, description="the QEMU drive id of the OS disk; default: the first")
    guest_agent: Path | None = Field(None, description="the host end of the VM's qemu-guest-agent channel")
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    freeze: FreezeSpec = Field(default_factory=FreezeSpec)  # scripts are paths in the guest, run by the agent


class QmpDirSpec(Spec):
    """A host directory of QMP sockets: every `<name>.qmp` in it is a VM named `<name>`."""

    path: Path
    resource_group: ResourceGroupName
    region: RegionName
    os: OsSpec = OsSpec(type="linux", version="Linux")


class SubscriptionSpec(Spec):
    name: SubscriptionName
    fabric: Literal["local", "qemu"] = "local"
    vms: list[VmSpec] = []
    qemu_vms: list[QemuVmSpec] = []  # fabric: qemu
    qmp_dirs: list[QmpDirSpec] = []  # fabric: qemu
    key_vaults: list[KeyVaultSpec] = []

    @model_validator(mode="after")
    def _vms_of_its_fabric(self) -> SubscriptionSpec:
        if self.fabric == "local" and (self.qemu_vms or self.qmp_dirs):
            raise ValueError("qemu_vms and qmp_dirs need fabric: qemu")
        if self.fabric == "qemu" and self.vms:
            raise ValueError("vms: a subscription with fabric: qemu lists its VMs as qemu_vms or qmp_dirs")
        return self


class Inventory(Spec):
    subscriptions: list[SubscriptionSpec] = Field(min_length=1)


class QemuDisk(BaseModel):
    """A disk as QEMU has it: the drive's id, its top block node and that node's format."""

    model_config = ConfigDict(frozen=True)
    device: str
    node: str
    format: str
    size: int  # bytes (QEMU's virtual size)
    image: str = ""  # the image file QEMU opened (read offline when QEMU is not running)
    encrypted: bool = False  # a LUKS-encrypted image (QEMU decrypts it with a secret object)


class QemuLink(BaseModel):
    """How the QEMU fabric reaches a VM: its monitor, and its disks by name (as QEMU named them when
    it last answered)."""

    model_config = ConfigDict(frozen=True)
    qmp: Path
    status: str  # QEMU's run state ("running", "paused", ...); "off" when no QEMU answers
    disks: dict[str, QemuDisk]
    guest_agent: Path | None = None  # its qemu-guest-agent channel
    can_freeze: bool = False  # the agent answered, lists the fsfreeze commands, and is recent enough
    agent_minimum: str = ""  # the agent version the settings ask for (BACKUP_QEMU_AGENT_MIN_VERSION)


class FabricVm(BaseModel):
    """A VM of the fabric with its subscription and the directory its disk paths are under."""

    model_config = ConfigDict(frozen=True)
    subscription: str
    spec: VmSpec
    base_dir: Path
    qemu: QemuLink | None = None  # a VM of the QEMU fabric

    @property
    def ref(self) -> VmRef:
        return VmRef(
            subscription=self.subscription,
            name=self.spec.name,
            cloud_service=self.spec.cloud_service,
            resource_group=self.spec.resource_group,
            region=self.spec.region,
            deployment_model=self.spec.deployment_model,
        )

    def disk_path(self, disk: DiskSpec) -> Path:
        return disk.image if disk.image.is_absolute() else self.base_dir / disk.image


_YAML_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser, when PyYAML was built with it


class _UniqueKeyLoader(_YAML_BASE):  # type: ignore[misc]
    """YAML's safe loader, refusing a mapping that gives a key twice (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: list[Any] = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if any(key == other and type(key) is type(other) for other in seen):
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice", key_node.start_mark
                )
            seen.append(key)
        return dict(super().construct_mapping(node, deep=deep))


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    twice = next((key for key in keys if keys.count(key) > 1), None)
    if twice is not None:
        raise ValueError(f"the key {twice!r} appears twice")
    return dict(pairs)


def load_inventory(path: Path, roots: tuple[Path, ...] = ()) -> list[FabricVm]:
    """Read and check an inventory file (every VM's disk images too); errors name the VM and the field."""
    vms = list(inventory_vms(path).values())
    for vm in vms:
        check_disks(path, vm, roots)
    return vms


_indexed: dict[Path, tuple[Inventory, dict[str, FabricVm]]] = {}  # built once per parsed inventory


def inventory_vms(path: Path) -> dict[str, FabricVm]:
    """The inventory's VMs by lower-cased key, in file order; disk images not checked."""
    inventory = _validated(path)
    known = _indexed.get(path)
    if known is not None and known[0] is inventory:
        return known[1]
    vms = [
        FabricVm(subscription=sub.name, spec=vm, base_dir=path.parent)
        for sub in inventory.subscriptions
        for vm in sub.vms
    ]
    _check_unique(path, vms)
    index = {vm.ref.key.lower(): vm for vm in vms}
    _indexed[path] = (inventory, index)
    return index


def inventory_subscriptions(path: Path) -> list[SubscriptionSpec]:
    """The inventory's subscriptions, checked (disk images not)."""
    return list(_validated(path).subscriptions)


def load_key_vaults(path: Path) -> dict[tuple[str, str], KeyVaultSpec]:
    """The inventory's key vaults by (subscription, lower-cased name)."""
    vaults: dict[tuple[str, str], KeyVaultSpec] = {}
    for sub in _validated(path).subscriptions:
        for kv in sub.key_vaults:
            if (sub.name, kv.name.lower()) in vaults:
                raise InventoryError(
                    "InventoryInvalid",
                    f"{path}: key vault {kv.name!r} appears twice in subscription {sub.name!r}",
                    field="key_vaults.name",
                )
            vaults[(sub.name, kv.name.lower())] = kv
    return vaults


# The last inventory read from each file, under the file's (mtime, size, inode) when it was read:
# every call still sees an edit (a changed file has another key), but an unchanged inventory is not
# parsed again. A distributed worker reads it before forking each work horse, which inherits it.
# File times move in clock ticks (milliseconds), so two writes in one tick can leave the same key:
# a file modified less than a second before it was read is not kept, and is read again next time.
_parsed: dict[Path, tuple[tuple[int, int, int], Inventory]] = {}
_SETTLED_NS = 1_000_000_000


def _validated(path: Path) -> Inventory:
    reading_at = time.time_ns()
    try:
        stat = path.stat()
    except OSError:
        stat = None
    key = (stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat is not None else None
    known = _parsed.get(path)
    if key is not None and known is not None and known[0] == key:
        return known[1]
    raw = _read(path)
    try:
        inventory = Inventory.model_validate(raw)
    except ValidationError as exc:
        raise _inventory_error(path, raw, exc) from None
    if key is not None and reading_at - key[0] > _SETTLED_NS:
        _parsed[path] = (key, inventory)
    return inventory


def _read(path: Path) -> Any:
    if not path.is_file():
        raise InventoryError(
            "FabricNotFound",
            f"no fabric inventory at {path}; create one with `backupctl fabric init DIR` "
            "and point BACKUP_FABRIC at its inventory.yaml",
            field="BACKUP_FABRIC",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(
            "InventoryInvalid", f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})", field="BACKUP_FABRIC"
        ) from None
    except OSError as exc:
        raise InventoryError(
            "InventoryInvalid", f"{path}: cannot be read ({exc.strerror})", field="BACKUP_FABRIC"
        ) from None
    try:
        if path.suffix == ".json":
            return json.loads(text, object_pairs_hook=_unique_pairs)
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except (ValueError, yaml.YAMLError) as exc:  # json.JSONDecodeError is a ValueError
        raise InventoryError("InventoryInvalid", f"{path}: not valid YAML/JSON: {exc}") from None


def _inventory_error(path: Path, raw: Any, exc: ValidationError) -> InventoryError:
    err = exc.errors()[0]
    loc = list(err["loc"])
    where = _describe_location(raw, loc)
    return InventoryError("InventoryInvalid", f"{path}: {where}: {err['msg']}", field=".".join(map(str, loc)))


def _describe_location(raw: Any, loc: list[Any]) -> str:
    """`VM 'web01' (subscription 'prod') field agent.version` rather than a bare index path."""
    if len(loc) >= 3 and loc[0] == "subscriptions" and loc[2] == "vms" and len(loc) >= 4:
        try:
            sub = raw["subscriptions"][loc[1]]
            vm = sub["vms"][loc[3]]
            field = ".".join(str(p) for p in loc[4:]) or "(the VM entry)"
            return f"VM {vm.get('name', '#' + str(loc[3]))!r} (subscription {sub.get('name')!r}) field {field}"
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
    return "field " + ".".join(str(p) for p in loc)


def _check_unique(path: Path, vms: list[FabricVm]) -> None:
    seen: set[str] = set()
    for vm in vms:
        key = vm.ref.key.lower()
        if key in seen:
            raise InventoryError(
                "InventoryInvalid",
                f"{path}: VM {vm.spec.name!r} appears twice in subscription {vm.subscription!r} "
                f"with cloud service / resource group {vm.ref.qualifier!r}",
                field="name",
            )
        seen.add(key)


def image_problem(image: Path, roots: tuple[Path, ...], opened: os.stat_result | None = None) -> str | None:
    """Why a disk image may not be read, or None. After resolving links it must be a regular file
    inside one of `roots`, or a block device (a disk, wherever its node is), and never another file of
    the kernel's /proc, /sys or /dev (a worker reading `/proc/self/environ` would store its own
    environment, keys included, in a vault). `opened`: the file's status as it was opened (so the path
    is only where it is, not what it is)."""
    real = Path(os.path.realpath(image))
    try:
        st = opened if opened is not None else os.stat(real)
    except OSError as exc:
        return f"no file at {image}" if exc.errno == errno.ENOENT else f"{image} cannot be read ({exc.strerror})"
    block = stat.S_ISBLK(st.st_mode)
    if not (stat.S_ISREG(st.st_mode) or block):
        return f"{image} is not a regular file or a block device"
    under_system = any(safefs.within(real, d) for d in safefs.KERNEL_DIRS)
    if under_system and not (block and Path("/dev") in real.parents):
        return f"{image} ({real}) is a file of the kernel's, not a disk image"
    if not block and not any(safefs.within(real, _real(r)) for r in roots):
        return (
            f"{image} ({real}) is outside the fabric's image roots ({', '.join(map(str, roots))}; "
            "BACKUP_FABRIC_IMAGE_ROOTS)"
        )
    return None


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def image_size(path: Path) -> int:
    """An image's size in bytes: a regular file's, or a block device's (which stat calls 0)."""
    st = os.stat(path)
    if not stat.S_ISBLK(st.st_mode):
        return st.st_size
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)


def check_disks(path: Path, vm: FabricVm, roots: tuple[Path, ...] = ()) -> None:
    """Every disk image of `vm` may be read (`image_problem`; `roots` default: the inventory's
    directory) and holds no more than its provisioned size."""
    for disk in vm.spec.disks:
        image = vm.disk_path(disk)
        problem = image_problem(image, roots or (path.parent,))
        if problem is not None:
            raise InventoryError(
                "InventoryInvalid",
                f"{path}: VM {vm.spec.name!r} field disks.{disk.name}.image: {problem}",
                field="image",
            )
        if image_size(image) > disk.size_gb * GIB:
            raise InventoryError(
                "InventoryInvalid",
                f"{path}: VM {vm.spec.name!r} field disks.{disk.name}.size_gb: the image holds "
                f"more than {disk.size_gb} GB",
                field="size_gb",
            )
