"""The precheck catalogue: every environment rule that makes VM backups fail in the field (the
source documents in shared/seeds list them), each with a code, a severity, a message and a remedy,
and the stages at which it applies. Pure functions of the VM's facts: nothing here changes anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from orchestrator.domain.values import CheckResult, DeploymentModel, Finding, VaultKind
from orchestrator.fabric import BACKUP_SERVICE, Fabric
from orchestrator.fabric.agent import check_minimum
from orchestrator.fabric.inventory import FabricVm, KeyVaultSpec, PowerState

Stage = Literal["register", "protect", "backup", "restore"]
STAGES: tuple[Stage, ...] = ("register", "protect", "backup", "restore")
MIN_WINDOWS_AGENT = (2, 6, 1198, 718)
MAX_DATA_DISKS = 16
MAX_DATA_DISK_GB = 1023
ENDORSED_LINUX = ("ubuntu", "debian", "red hat", "rhel", "centos", "suse", "sles", "opensuse", "oracle linux")
BACKUP_PERMISSIONS = ("get", "list", "backup")  # what the backup service needs on secrets (and keys, with a KEK)
READ_PERMISSIONS = ("get", "list")  # what a restore needs to find them again


@dataclass(frozen=True)
class Target:
    vm: FabricVm
    vault_kind: VaultKind
    vault_region: str
    stage: Stage
    key_vault: KeyVaultSpec | None = None  # the encrypted VM's key vault as it is now
    key_protection: bool = True  # BACKUP_KEY_PROTECTION_KEY is set
    recovery_point: str = ""  # at restore: the point restored


@dataclass(frozen=True)
class Rule:
    code: str
    severity: Literal["error", "warning"]
    stages: tuple[Stage, ...]
    applies: Callable[[Target], bool]
    message: Callable[[Target], str]
    remedy: str


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def _running(t: Target) -> bool:
    return t.vm.spec.power_state is PowerState.RUNNING


def _agent_needed(t: Target) -> bool:
    """A stopped VM is backed up offline, without its agent."""
    return t.stage != "backup" or _running(t)


def _windows(t: Target) -> bool:
    return t.vm.spec.os.type == "windows"


def _name(t: Target) -> str:
    return t.vm.ref.display_name


def _data_disks(t: Target) -> list[int]:
    return [d.size_gb for d in t.vm.spec.disks if d.role == "data"]


def _classic(t: Target) -> bool:
    return t.vault_kind is VaultKind.BACKUP_VAULT


_YEAR = re.compile(r"(\d{4})")  # compiled at import: an rq worker's horses inherit it instead of each compiling it


def _old_windows(t: Target) -> bool:
    version = t.vm.spec.os.version.lower()
    match = _YEAR.search(version)
    return (
        _windows(t)
        and match is not None
        and (int(match.group(1)) < 2008 or (match.group(1) == "2008" and "r2" not in version))
    )


def _linux_distro(t: Target) -> str:
    return t.vm.spec.os.version.lower() if t.vm.spec.os.type == "linux" else ""


def _special_network(t: Target) -> bool:
    net = t.vm.spec.network
    return net.load_balancer or net.reserved_ips > 1 or net.nics > 1


def _encrypted(t: Target) -> bool:
    return t.vm.spec.encryption.enabled


def _missing_permissions(t: Target, needed: tuple[str, ...]) -> list[str]:
    """What the backup service lacks on the VM's key vault: secret permissions, and key
    permissions when a KEK wraps the disk key."""
    if t.key_vault is None:
        return []
    keys, secrets = t.key_vault.permissions(BACKUP_SERVICE)
    missing = [f"secrets/{p}" for p in needed if p not in secrets]
    if t.vm.spec.encryption.kek_key:
        missing += [f"keys/{p}" for p in needed if p not in keys]
    return missing


def _stage_permissions(t: Target) -> tuple[str, ...]:
    return READ_PERMISSIONS if t.stage == "restore" else BACKUP_PERMISSIONS


def _missing_keys(t: Target) -> list[str]:
    """The VM's secret and key the key vault no longer holds (when the service may look)."""
    enc = t.vm.spec.encryption
    if t.key_vault is None or _missing_permissions(t, _stage_permissions(t)):
        return []
    missing = [f"secret {enc.bek_secret!r}"] if enc.bek_secret not in t.key_vault.secrets else []
    if enc.kek_key and enc.kek_key not in t.key_vault.keys:
        missing.append(f"key {enc.kek_key!r}")
    return missing


def _restore_keys_hint(t: Target) -> str:
    if t.stage == "restore" and t.recovery_point:
        return f"; restore them from the recovery point with `backupctl restore-keys {t.recovery_point}`"
    return ""


def _kv(t: Target) -> str:
    return repr(t.vm.spec.encryption.key_vault)


ENCRYPTION_RULES: tuple[Rule, ...] = (
    Rule(
        "EncryptedClassicVmUnsupported",
        "error",
        ("register", "protect", "backup"),
        lambda t: _encrypted(t) and t.vm.spec.deployment_model is DeploymentModel.CLASSIC,
        lambda t: (
            f"VM {_name(t)} is an encrypted classic VM; encrypted VMs are backed up only when deployed "
            "with Resource Manager"
        ),
        "migrate the VM to Resource Manager, or decrypt it",
    ),
    Rule(
        "BekOnlyManagedDiskUnsupported",
        "error",
        ("protect", "backup"),
        lambda t: t.vm.spec.encryption.bek_only and any(d.managed for d in t.vm.spec.disks),
        lambda t: (
            f"VM {_name(t)} has managed disks encrypted with a BEK alone; on managed disks backup needs "
            "the BEK wrapped by a KEK"
        ),
        "decrypt the VM, encrypt it again with both a BEK and a KEK, then protect it",
    ),
    Rule(
        "KeyVaultNotFound",
        "error",
        ("protect", "backup", "restore"),
        lambda t: _encrypted(t) and t.key_vault is None,
        lambda t: (
            f"VM {_name(t)} is encrypted with keys of key vault {_kv(t)}, which does not exist"
            + _restore_keys_hint(t).replace("; restore them", "; once it exists, restore the keys")
        ),
        "create the key vault (same name, same subscription), then retry",
    ),
    Rule(
        "KeyVaultPermissionMissing",
        "error",
        ("protect", "backup"),
        lambda t: _encrypted(t) and bool(_missing_permissions(t, BACKUP_PERMISSIONS)),
        lambda t: (
            f"the {BACKUP_SERVICE} lacks {', '.join(_missing_permissions(t, BACKUP_PERMISSIONS))} on key "
            f"vault {_kv(t)}, needed to back up encrypted VM {_name(t)}"
        ),
        f'add an access policy for the principal "{BACKUP_SERVICE}" to the key vault with secret permissions '
        "get, list and backup (and key permissions get, list and backup when a KEK is used); the VM's next backup "
        "then runs, without protecting it again",
    ),
    Rule(
        "NotAuthorized",
        "error",
        ("restore",),
        lambda t: _encrypted(t) and bool(_missing_permissions(t, READ_PERMISSIONS)),
        lambda t: (
            f"the {BACKUP_SERVICE} is not authorized on key vault {_kv(t)} (lacks "
            f"{', '.join(_missing_permissions(t, READ_PERMISSIONS))}), so it cannot check the keys of "
            f"encrypted VM {_name(t)}"
        ),
        f'grant the "{BACKUP_SERVICE}" get and list on the key vault\'s secrets (and keys), then restore again',
    ),
    Rule(
        "KeyOrSecretNotFound",
        "error",
        ("protect", "backup", "restore"),
        lambda t: _encrypted(t) and bool(_missing_keys(t)),
        lambda t: (
            f"key vault {_kv(t)} no longer holds the {' and the '.join(_missing_keys(t))} of encrypted VM "
            f"{_name(t)}" + _restore_keys_hint(t)
        ),
        "put the secret and key back into the key vault (`backupctl restore-keys RECOVERY_POINT` restores them "
        "from a recovery point), then retry",
    ),
    Rule(
        "RestoredAsDisksEncrypted",
        "warning",
        ("restore",),
        _encrypted,
        lambda t: (
            f"VM {_name(t)} is encrypted with key vault {_kv(t)} (BEK secret "
            f"{t.vm.spec.encryption.bek_secret!r}, KEK key {t.vm.spec.encryption.kek_key!r}): its disks are "
            "restored, still encrypted; no VM is created"
        ),
        "create the VM from the restored disks, giving it the key vault, BEK secret and KEK key the recovery "
        "point names (the restore job's checks list them)",
    ),
    Rule(
        "KeyProtectionNotConfigured",
        "error",
        ("protect", "backup"),
        lambda t: _encrypted(t) and not t.key_protection,
        lambda t: (
            f"VM {_name(t)} is encrypted and BACKUP_KEY_PROTECTION_KEY is not set: its keys could not be kept "
            "encrypted with its recovery points"
        ),
        "set BACKUP_KEY_PROTECTION_KEY for the workers (`backupctl key generate` makes one; keep it outside the "
        "data dir and the vault store)",
    ),
)


AGENT_STAGES: tuple[Stage, ...] = ("register", "protect", "backup")
CATALOGUE: tuple[Rule, ...] = (
    Rule(
        "RegionMismatch",
        "error",
        ("register", "protect"),
        lambda t: t.vm.spec.region != t.vault_region,
        lambda t: f"VM {_name(t)} is in {t.vm.spec.region}, the vault in {t.vault_region}",
        "use a vault in the VM's region",
    ),
    Rule(
        "VmAgentNotInstalled",
        "error",
        AGENT_STAGES,
        lambda t: _agent_needed(t) and not t.vm.spec.agent.installed and t.vm.qemu is None,
        lambda t: f"the VM agent is not installed on VM {_name(t)}",
        "install the Azure VM agent (Windows: the agent MSI; Linux: the walinuxagent package), then retry",
    ),
    # A QEMU VM is backed up without a ready agent, crash-consistent (orchestrator/fabric/agent.py).
    Rule(
        "VmAgentNotInstalled",
        "warning",
        AGENT_STAGES,
        lambda t: _running(t) and not t.vm.spec.agent.installed and t.vm.qemu is not None,
        lambda t: (
            f"VM {_name(t)} has no qemu-guest-agent channel: its backups are crash-consistent (the disks as at a "
            "power loss), as the guest is not asked to freeze its file systems"
        ),
        "add a virtio-serial channel named org.qemu.guest_agent.0 to the VM, install qemu-guest-agent in the guest, "
        "and name the channel's socket as guest_agent in the inventory",
    ),
    Rule(
        "VmAgentNotReady",
        "warning",
        AGENT_STAGES,
        lambda t: _running(t) and t.vm.qemu is not None and t.vm.spec.agent.installed and not t.vm.spec.agent.ready,
        lambda t: (
            f"qemu-guest-agent on VM {_name(t)} does not answer guest-ping: its backups are crash-consistent until "
            "it does"
        ),
        "start qemu-guest-agent in the guest (systemctl start qemu-guest-agent) and check its virtio-serial channel",
    ),
    Rule(
        "VmAgentVersionTooOld",
        "warning",
        AGENT_STAGES,
        lambda t: (
            _running(t)
            and t.vm.qemu is not None
            and t.vm.spec.agent.ready
            and not check_minimum(t.vm.spec.agent.version, t.vm.qemu.agent_minimum)
        ),
        lambda t: (
            f"VM {_name(t)} runs qemu-guest-agent {t.vm.spec.agent.version or '(version unknown)'}, older than "
            f"{t.vm.qemu.agent_minimum if t.vm.qemu else ''} (BACKUP_QEMU_AGENT_MIN_VERSION): it is not asked to "
            "freeze, and its backups are crash-consistent"
        ),
        "update qemu-guest-agent in the guest",
    ),
    Rule(
        "VmAgentVersionTooOld",
        "error",
        AGENT_STAGES,
        lambda t: (
            _agent_needed(t)
            and _windows(t)
            and t.vm.spec.agent.installed
            and _version(t.vm.spec.agent.version) < MIN_WINDOWS_AGENT
        ),
        lambda t: f"VM {_name(t)} runs VM agent {t.vm.spec.agent.version}, older than 2.6.1198.718",
        "update the VM agent to the latest version, then retry",
    ),
    Rule(
        "VmAgentUpdating",
        "error",
        AGENT_STAGES,
        lambda t: _agent_needed(t) and t.vm.spec.agent.installed and t.vm.spec.agent.updating,
        lambda t: f"the VM agent on VM {_name(t)} is being updated; no backup runs during an agent update",
        "wait for the agent update to finish, then retry",
    ),
    Rule(
        "VmAgentNotReady",
        "error",
        AGENT_STAGES,
        lambda t: _running(t) and t.vm.spec.agent.installed and not t.vm.spec.agent.ready and t.vm.qemu is None,
        lambda t: f"the VM agent on VM {_name(t)} is installed but not ready",
        "restart the agent service (WindowsAzureGuestAgent / waagent) and check its outbound connectivity",
    ),
    Rule(
        "QemuEncryptedDiskUnsupported",
        "error",
        ("protect", "backup"),
        lambda t: t.vm.qemu is not None and any(d.encrypted for d in t.vm.qemu.disks.values()),
        lambda t: (
            f"VM {_name(t)} has LUKS-encrypted disks "
            f"({', '.join(n for n, d in (t.vm.qemu.disks if t.vm.qemu else {}).items() if d.encrypted)}): QEMU "
            "would hand the backup their decrypted content, and a restore could not encrypt them again yet"
        ),
        "back the VM up once encrypted QEMU disks are supported, or protect an unencrypted copy",
    ),
    Rule(
        "OutboundConnectivityBlocked",
        "error",
        ("protect", "backup"),
        lambda t: _running(t) and not t.vm.spec.network.nsg_allows_storage_443 and not t.vm.spec.network.http_proxy,
        lambda t: (
            f"VM {_name(t)} cannot reach Azure storage on port 443 (no network security rule allows the "
            "storage service tag or the internet, and no HTTP proxy is set): the backup extension's "
            "requests would time out"
        ),
        "add an outbound NSG rule allowing the Storage service tag (or the internet) on 443, or configure an "
        "HTTP proxy for the VM's backup traffic",
    ),
    Rule(
        "TooManyDataDisks",
        "error",
        ("protect", "backup"),
        lambda t: len(_data_disks(t)) > MAX_DATA_DISKS,
        lambda t: f"VM {_name(t)} has {len(_data_disks(t))} data disks; backup supports at most {MAX_DATA_DISKS}",
        "detach data disks down to 16, or protect the data another way",
    ),
    Rule(
        "DataDiskTooLarge",
        "error",
        ("protect", "backup"),
        lambda t: any(s > MAX_DATA_DISK_GB for s in _data_disks(t)),
        lambda t: f"VM {_name(t)} has a data disk of {max(_data_disks(t))} GB; backup supports up to 1023 GB",
        "keep data disks at 1023 GB or less",
    ),
    Rule(
        "StorageAccountNetworkRestricted",
        "error",
        ("protect", "backup"),
        lambda t: any(not d.managed and d.storage_account_network_rules for d in t.vm.spec.disks),
        lambda t: f"VM {_name(t)} has unmanaged disks on a storage account with network rules",
        "allow trusted Microsoft services on the storage account, or move the disks to managed disks",
    ),
    Rule(
        "LuksEncryptionUnsupported",
        "error",
        ("protect", "backup"),
        lambda t: t.vm.spec.os.type == "linux" and t.vm.spec.encryption.luks,
        lambda t: f"VM {_name(t)} is a Linux VM with LUKS-encrypted disks, which backup does not support",
        "use Azure Disk Encryption instead of in-guest LUKS, or back up at the file level",
    ),
    Rule(
        "WindowsVersionUnsupported",
        "error",
        ("protect", "backup"),
        _old_windows,
        lambda t: f"VM {_name(t)} runs {t.vm.spec.os.version}; backup needs Windows Server 2008 R2 or later",
        "upgrade the operating system to Windows Server 2008 R2 or later",
    ),
    Rule(
        "CoreOsUnsupported",
        "error",
        ("protect", "backup"),
        lambda t: "coreos" in _linux_distro(t),
        lambda t: f"VM {_name(t)} runs CoreOS, which backup does not support",
        "use an endorsed distribution",
    ),
    Rule(
        "LinuxDistributionNotEndorsed",
        "warning",
        ("protect", "backup"),
        lambda t: (
            bool(_linux_distro(t))
            and "coreos" not in _linux_distro(t)
            and not any(d in _linux_distro(t) for d in ENDORSED_LINUX)
        ),
        lambda t: (
            f"VM {_name(t)} runs {t.vm.spec.os.version}, not an endorsed distribution: backup may work but is "
            "not supported"
        ),
        "prefer an endorsed Linux distribution",
    ),
    Rule(
        "ClusterMemberNotConsistent",
        "warning",
        ("protect", "backup"),
        lambda t: t.vm.spec.cluster is not None,
        lambda t: (
            f"VM {_name(t)} is a {'cluster shared volume' if t.vm.spec.cluster == 'csv' else 'scale-out file server'}"
            " member: its recovery points are not consistent across the cluster's VMs"
        ),
        "back the cluster up with an application-aware tool as well",
    ),
    Rule(
        "NetworkDrivesNotBackedUp",
        "warning",
        ("protect", "backup"),
        lambda t: bool(t.vm.spec.network_mounts),
        lambda t: (
            f"VM {_name(t)} mounts network drives ({', '.join(t.vm.spec.network_mounts)}); they are not backed up"
        ),
        "protect the network shares at their source",
    ),
    Rule(
        "ClassicVaultNeedsClassicVm",
        "error",
        ("register", "protect"),
        lambda t: _classic(t) and t.vm.spec.deployment_model is not DeploymentModel.CLASSIC,
        lambda t: f"VM {_name(t)} is a Resource Manager VM; a classic backup vault takes classic VMs only",
        "use a Recovery Services vault",
    ),
    Rule(
        "ClassicVaultPremiumStorage",
        "error",
        ("register", "protect"),
        lambda t: _classic(t) and any(d.storage == "premium" for d in t.vm.spec.disks),
        lambda t: f"VM {_name(t)} uses premium storage, which a classic backup vault cannot back up",
        "use a Recovery Services vault",
    ),
    Rule(
        "ClassicVaultSpecialNetwork",
        "error",
        ("register", "protect"),
        lambda t: (
            _classic(t)
            and (
                _special_network(t)
                or (t.vm.spec.network.reserved_ips == 1 and t.vm.spec.network.reserved_ip_endpoints == 0)
            )
        ),
        lambda t: (
            f"VM {_name(t)} has a network configuration a classic backup vault refuses (several reserved "
            "IPs, a reserved IP without an endpoint, several NICs, or a load balancer)"
        ),
        "use a Recovery Services vault",
    ),
    Rule(
        "RestoredAsDisksDomainController",
        "warning",
        ("restore",),
        lambda t: t.vm.spec.domain_controller == "multi",
        lambda t: (
            f"VM {_name(t)} is a domain controller of a multi-DC domain: its disks are restored, no VM is created"
        ),
        "create the VM from the restored disks and restore the domain controller as the domain's procedures say",
    ),
    Rule(
        "RestoredAsDisksSpecialNetwork",
        "warning",
        ("restore",),
        _special_network,
        lambda t: (
            f"VM {_name(t)} has a special network configuration (load balancer, several reserved IPs or NICs): "
            "its disks are restored, no VM is created"
        ),
        "create the VM from the restored disks and configure its network as it was",
    ),
    *ENCRYPTION_RULES,
)


def evaluate(
    vm: FabricVm,
    vault_kind: VaultKind,
    vault_region: str,
    stage: Stage,
    fabric: Fabric,
    *,
    key_protection: bool = True,
    recovery_point: str = "",
) -> list[CheckResult]:
    """The findings of every rule that applies at `stage`, errors first. An encrypted VM's
    key vault is looked up in `fabric` as it is now."""
    enc = vm.spec.encryption
    key_vault = fabric.key_vault(vm.subscription, enc.key_vault) if enc.enabled and enc.key_vault else None
    target = Target(vm, vault_kind, vault_region, stage, key_vault, key_protection, recovery_point)
    found = [
        CheckResult(code=r.code, severity=r.severity, message=r.message(target), remedy=r.remedy)
        for r in CATALOGUE
        if stage in r.stages and r.applies(target)
    ]
    return sorted(found, key=lambda c: c.severity != "error")


def blocking(results: list[CheckResult]) -> CheckResult | None:
    return next((r for r in results if r.severity == "error"), None)


def warnings_of(results: list[CheckResult]) -> list[Finding]:
    """The warnings, as the job's findings (the remedy included)."""
    return [Finding(code=r.code, message=f"{r.message}. {r.remedy}.") for r in results if r.severity == "warning"]


def describe(results: list[CheckResult]) -> str:
    """One operator-readable text for the errors: what is wrong and how to fix it."""
    return " ".join(f"{r.message}. To fix: {r.remedy}." for r in results if r.severity == "error")
