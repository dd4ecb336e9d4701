"""The precheck catalogue, table-driven: one VM per rule, each code and severity through the client
at the stage where the rule applies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client, OrchestratorError
from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.helpers import event_count

LINUX = {"type": "linux", "version": "Ubuntu 16.04"}
R = "japaneast"

# (vm entry, stage, code, severity): the stage at which the rule first stops (or warns) the VM
CASES: list[tuple[dict[str, Any], str, str, str]] = [
    (vm_entry("agent-missing", R, agent={"installed": False}), "register", "VmAgentNotInstalled", "error"),
    (vm_entry("agent-old", R, agent={"version": "2.6.1198.700"}), "register", "VmAgentVersionTooOld", "error"),
    (vm_entry("agent-updating", R, agent={"updating": True}), "register", "VmAgentUpdating", "error"),
    (vm_entry("agent-not-ready", R, agent={"ready": False}), "register", "VmAgentNotReady", "error"),
    (
        vm_entry("no-outbound", R, network={"nsg_allows_storage_443": False}),
        "protect",
        "OutboundConnectivityBlocked",
        "error",
    ),
    (vm_entry("many-disks", R, disks=18), "protect", "TooManyDataDisks", "error"),
    (vm_entry("big-disk", R, disks=2), "protect", "DataDiskTooLarge", "error"),
    (vm_entry("restricted-account", R), "protect", "StorageAccountNetworkRestricted", "error"),
    (vm_entry("luks", R, os=LINUX, encryption={"luks": True}), "protect", "LuksEncryptionUnsupported", "error"),
    (
        vm_entry("win2008", R, os={"type": "windows", "version": "Windows Server 2008"}),
        "protect",
        "WindowsVersionUnsupported",
        "error",
    ),
    (vm_entry("coreos", R, os={"type": "linux", "version": "CoreOS 1122"}), "protect", "CoreOsUnsupported", "error"),
    (
        vm_entry("arch", R, os={"type": "linux", "version": "Arch Linux"}),
        "protect",
        "LinuxDistributionNotEndorsed",
        "warning",
    ),
    (vm_entry("csv-node", R, cluster="csv"), "protect", "ClusterMemberNotConsistent", "warning"),
    (vm_entry("mapped", R, network_mounts=["\\\\files\\share"]), "protect", "NetworkDrivesNotBackedUp", "warning"),
]
CASES[6][0]["disks"][1]["size_gb"] = 2048
CASES[7][0]["disks"][0].update(managed=False, storage_account_network_rules=True)
CLASSIC = [
    (vm_entry("cl-premium", R, cloud_service="cs1", deployment_model="classic"), "ClassicVaultPremiumStorage"),
    (
        vm_entry("cl-nics", R, cloud_service="cs2", deployment_model="classic", network={"nics": 2}),
        "ClassicVaultSpecialNetwork",
    ),
    (
        vm_entry("cl-lb", R, cloud_service="cs3", deployment_model="classic", network={"load_balancer": True}),
        "ClassicVaultSpecialNetwork",
    ),
    (
        vm_entry("cl-ip", R, cloud_service="cs4", deployment_model="classic", network={"reserved_ips": 1}),
        "ClassicVaultSpecialNetwork",
    ),
]
CLASSIC[0][0]["disks"][0]["storage"] = "premium"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    vms = (
        [case[0] for case in CASES]
        + [case[0] for case in CLASSIC]
        + [
            vm_entry("healthy", R),
            vm_entry("dc", R, domain_controller="multi"),
            vm_entry("lb-web", R, network={"load_balancer": True}),
            vm_entry("westvm", "japanwest"),
        ]
    )
    inventory = write_fabric(tmp_path / "fabric", {"default": vms}, disk_mib=1)
    with Client(data_dir=tmp_path / "data", fabric=inventory) as c:
        yield c


def _vault(client: Client, kind: str = "recovery_services") -> str:
    vault = client.create_vault(f"vault-{kind.replace('_', '-')}", R, "rg", kind=kind)
    client.wait(client.discover(vault))
    return vault


@pytest.mark.parametrize(("entry", "stage", "code", "severity"), CASES, ids=[c[2] for c in CASES])
def test_each_rule_applies_at_its_stage_with_its_code_and_severity(
    client: Client, entry: dict[str, Any], stage: str, code: str, severity: str
) -> None:
    vault, name = _vault(client), entry["name"]
    [found] = [r for r in client.precheck(vault, name, stage) if r.code == code]
    assert found.severity == severity and found.remedy
    [registered] = client.wait_all(client.register(vault, [name]))
    if stage == "register":
        assert (registered.status, registered.error_code) == ("failed", code)
        assert registered.checks[0]["code"] == code and "To fix:" in registered.error_message
        return
    assert registered.status != "failed"
    [protected] = client.wait_all(client.protect(vault, [name]))
    if severity == "error":
        assert (protected.status, protected.error_code) == ("failed", code)
        assert found.remedy in protected.error_message
    else:
        assert protected.status == "completed_with_warnings"
        assert [w["code"] for w in protected.warnings] == [code]
        backup = client.wait(client.backup_now(vault, name))
        assert backup.status == "completed_with_warnings" and [w["code"] for w in backup.warnings] == [code]
    [item] = [i for i in client.protected_items(vault, include_former=True) if i.vm_name == name]
    assert code in [c["code"] for c in item.checks]


@pytest.mark.parametrize(("entry", "code"), CLASSIC, ids=[c[0]["name"] for c in CLASSIC])
def test_a_classic_backup_vault_refuses_what_it_cannot_back_up(
    client: Client, entry: dict[str, Any], code: str
) -> None:
    vault = _vault(client, "backup_vault")
    name = f"{entry['cloud_service']}/{entry['name']}"
    assert code in [r.code for r in client.precheck(vault, name, "register")]
    [job] = client.wait_all(client.register(vault, [name]))
    assert (job.status, job.error_code) == ("failed", code)


def test_an_agent_updating_stops_backups_until_it_is_done(client: Client) -> None:
    from tests.helpers import edit_vm

    vault = _vault(client)
    client.wait_all(client.register(vault, ["healthy"]))
    client.wait_all(client.protect(vault, ["healthy"]))
    edit_vm(client._runtime.fabric.inventory_path, "healthy", agent={"updating": True})
    failed = client.wait(client.backup_now(vault, "healthy"))
    assert (failed.status, failed.error_code) == ("failed", "VmAgentUpdating")
    edit_vm(client._runtime.fabric.inventory_path, "healthy", agent={"updating": False})
    assert client.wait(client.backup_now(vault, "healthy")).status == "completed"


def test_a_stopped_vm_is_backed_up_offline_without_its_agent(client: Client) -> None:
    from tests.helpers import edit_vm

    vault = _vault(client)
    client.wait_all(client.register(vault, ["healthy"]))
    client.wait_all(client.protect(vault, ["healthy"]))
    edit_vm(client._runtime.fabric.inventory_path, "healthy", power_state="stopped", agent={"installed": False})
    job = client.wait(client.backup_now(vault, "healthy"))
    assert (job.status, job.result["consistency"]) == ("completed", "crash")


@pytest.mark.parametrize(
    ("vm", "code"), [("dc", "RestoredAsDisksDomainController"), ("lb-web", "RestoredAsDisksSpecialNetwork")]
)
def test_vms_that_cannot_be_recreated_are_restored_as_disks(client: Client, vm: str, code: str) -> None:
    vault = _vault(client)
    client.wait_all(client.register(vault, [vm]))
    client.wait_all(client.protect(vault, [vm]))
    client.wait(client.backup_now(vault, vm))
    [point] = client.recovery_points(vault, vm)
    job = client.wait(client.restore(point.recovery_point_id, f"{vm}-restored"))
    assert job.status == "completed_with_warnings" and [w["code"] for w in job.warnings] == [code]
    assert job.result["mode"] == "disks" and job.result["verified"] is True
    assert client._runtime.fabric.find_vm("default", f"{vm}-restored") is None
    assert all(Path(p).exists() for p in job.result["disks"].values())


def test_precheck_changes_nothing_and_names_bad_input(client: Client) -> None:
    vault = _vault(client)
    before = event_count(client)
    assert [r.code for r in client.precheck(vault, "westvm", "register")] == ["RegionMismatch"]
    assert client.precheck(vault, "healthy", "backup") == []
    assert event_count(client) == before
    with pytest.raises(OrchestratorError) as caught:
        client.precheck(vault, "healthy", "teleport")
    assert caught.value.field == "stage"
    with pytest.raises(OrchestratorError) as caught:
        client.precheck(vault, "ghost")
    assert caught.value.code == "VmNotFound"
