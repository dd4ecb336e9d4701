"""Every rule of the domain as a guard on the aggregate that owns it (issue 15, point 3), exercised
on the aggregate alone: no client, no store, no queue. Each refusal carries its stable code."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from orchestrator.domain import BackupPolicy, Discovery, Job, RecoveryPoint, Vault, VirtualMachine
from orchestrator.domain.schedule import (
    DailyRetention,
    Retention,
    default_retention,
    default_schedule,
    retention_shortened,
)
from orchestrator.domain.values import (
    DeploymentModel,
    EncryptionKeys,
    Immutability,
    ItemStatus,
    Operation,
    Replication,
    SoftDelete,
    VaultKind,
    VmRef,
)
from orchestrator.errors import DomainError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ref(name: str, region: str = "japaneast", *, service: str = "", classic: bool = False) -> VmRef:
    model = DeploymentModel.CLASSIC if classic else DeploymentModel.RESOURCE_MANAGER
    return VmRef(
        subscription="default",
        name=name,
        cloud_service=service,
        resource_group="rg",
        region=region,
        deployment_model=model,
    )


def vault(kind: VaultKind = VaultKind.RECOVERY_SERVICES, name: str = "vault-east") -> Vault:
    return Vault(
        name=name,
        subscription="default",
        region="japaneast",
        resource_group="rg",
        kind=kind,
        replication=Replication.GEO,
        backup_goal="",
    )


def item(v: Vault, status: ItemStatus = ItemStatus.REGISTERED, name: str = "vm01") -> VirtualMachine:
    """An item of `v` brought to `status` by its own methods, as its events would."""
    vm = VirtualMachine(vm=ref(name), vault_id=v.id, vault_name=v.name, job_id=uuid4())
    if status is ItemStatus.REGISTERING:
        return vm
    vm.registered(vm.job_id, "1.0")
    if status is ItemStatus.REGISTERED:
        return vm
    vm.request_protection(uuid4(), "DefaultPolicy", uuid4())
    vm.protected(vm.job_id, NOW)
    if status is ItemStatus.PROTECTION_STOPPED:
        vm.stop_protection(uuid4(), delete_data=False)
    return vm


def point(*, encryption: EncryptionKeys | None = None, expires_at: datetime = NOW) -> RecoveryPoint:
    return RecoveryPoint(
        vault_id=uuid4(),
        item_id=uuid4(),
        vm_key="default/rg/vm01",
        vm_name="vm01",
        job_id=uuid4(),
        taken_at=NOW - timedelta(days=1),
        consistency="crash",
        tiers=[],
        expires_at=expires_at,
        logical_bytes=1,
        stored_bytes=1,
        manifest_digest="d",
        disks=[],
        encryption=encryption,
    )


def refused(check: Callable[[], object]) -> str:
    with pytest.raises(DomainError) as caught:
        check()
    return caught.value.code


# Vault


def test_a_vault_name_taken_in_the_subscription_is_refused() -> None:
    Vault.check_name_free("default", "vault-east", None)
    assert refused(lambda: Vault.check_name_free("default", "VAULT-EAST", vault())) == "VaultNameTaken"


def test_replication_locks_once_an_item_holds_protected_data() -> None:
    v = vault()
    v.check_replication_changeable([])  # never asked to protect: its items are not even looked at
    assert v.note_protection_requested() and not v.note_protection_requested()  # marked once
    v.check_replication_changeable([item(v, ItemStatus.REGISTERED)])
    for status in (ItemStatus.PROTECTED_INITIAL_BACKUP_PENDING, ItemStatus.PROTECTION_STOPPED):
        assert refused(lambda: v.check_replication_changeable([item(v, status)])) == "ReplicationLocked"  # noqa: B023


def test_registering_needs_a_discovery() -> None:
    v = vault()
    assert refused(lambda: v.check_discovered(None)) == "DiscoveryRequired"
    discovery = Discovery(vault_id=v.id, job_id=uuid4(), vms=[])
    assert v.check_discovered(discovery) is discovery


def test_a_vault_holds_vms_of_its_own_region_only() -> None:
    vault().check_can_hold(ref("vm01"))
    assert refused(lambda: vault().check_can_hold(ref("westvm", "japanwest"))) == "RegionMismatch"


def test_a_classic_backup_vault_holds_classic_vms_only() -> None:
    classic = vault(VaultKind.BACKUP_VAULT)
    classic.check_can_hold(ref("shop", service="shop-cs", classic=True))
    assert refused(lambda: classic.check_can_hold(ref("vm01"))) == "VmNotClassic"


def test_a_restore_stays_in_the_vaults_region() -> None:
    vault().check_restore_region("")
    vault().check_restore_region("japaneast")
    assert refused(lambda: vault().check_restore_region("japanwest")) == "CrossRegionRestoreUnsupported"


# Discovery


def discovery_of(v: Vault) -> Discovery:
    vms = [ref("vm01"), ref("shop", service="shop-cs"), ref("shop", service="blog-cs"), ref("westvm", "japanwest")]
    return Discovery(vault_id=v.id, job_id=uuid4(), vms=vms)


def test_a_name_the_discovery_did_not_see_is_not_found() -> None:
    v = vault()
    assert discovery_of(v).resolve(v, "vm01") == ref("vm01")
    assert refused(lambda: discovery_of(v).resolve(v, "nosuchvm")) == "VmNotFound"


def test_a_name_several_vms_answer_to_is_ambiguous() -> None:
    v = vault()
    assert discovery_of(v).resolve(v, "shop-cs/shop").cloud_service == "shop-cs"
    assert refused(lambda: discovery_of(v).resolve(v, "shop")) == "VmNameAmbiguous"


def test_resolving_a_name_applies_the_vaults_own_rules() -> None:
    v = vault()
    assert refused(lambda: discovery_of(v).resolve(v, "westvm")) == "RegionMismatch"


def test_a_restore_never_creates_a_vm_over_one_that_exists() -> None:
    discovery_of(vault()).check_no_vm_named("vm01-restored")
    assert refused(lambda: discovery_of(vault()).check_no_vm_named("vm01")) == "RestoreTargetExists"


# VirtualMachine


def test_a_vm_registered_here_is_not_registered_again() -> None:
    v = vault()
    assert refused(lambda: item(v).check_can_register(v.id)) == "VmAlreadyRegistered"
    unregistered = item(v)
    unregistered.unregister(uuid4())
    unregistered.check_can_register(v.id)


def test_a_vm_belongs_to_one_vault_at_a_time() -> None:
    v = vault()
    assert refused(lambda: item(v).check_can_register(uuid4())) == "VmInAnotherVault"


def test_only_a_registered_unprotected_vm_is_unregistered() -> None:
    v = vault()
    item(v).check_can_unregister(v.id)
    assert refused(lambda: item(v).check_can_unregister(uuid4())) == "VmNotRegistered"
    assert refused(lambda: item(v, ItemStatus.PROTECTED).check_can_unregister(v.id)) == "VmNotRegistered"


def test_a_name_designates_exactly_one_registered_item_of_the_vault() -> None:
    v = vault()
    one = item(v)
    assert VirtualMachine.registered_in(v, "vm01", [None, one]) is one
    assert refused(lambda: VirtualMachine.registered_in(v, "vm01", [None])) == "VmNotRegistered"
    assert refused(lambda: VirtualMachine.registered_in(v, "vm01", [one, item(v)])) == "VmNotRegistered"
    assert refused(lambda: VirtualMachine.registered_in(v, "vm01", [item(vault(name="other"))])) == "VmNotRegistered"


def test_a_vm_protected_in_another_vault_is_not_protected_here() -> None:
    here, there = vault(), vault(name="other")
    item(there).check_not_protected_elsewhere(here.id, "vm01")  # registered only: the registration rule says
    protected = item(there, ItemStatus.PROTECTED)
    protected.check_not_protected_elsewhere(there.id, "vm01")
    assert refused(lambda: protected.check_not_protected_elsewhere(here.id, "vm01")) == "VmInAnotherVault"


def test_protection_needs_a_registered_vm_not_protected_yet() -> None:
    v = vault()
    item(v).check_can_protect(v.id)
    assert refused(lambda: item(v).check_can_protect(uuid4())) == "VmNotRegistered"
    assert refused(lambda: item(v, ItemStatus.REGISTERING).check_can_protect(v.id)) == "ProtectionInProgress"
    assert refused(lambda: item(v, ItemStatus.PROTECTED).check_can_protect(v.id)) == "VmAlreadyProtected"
    item(v, ItemStatus.PROTECTION_STOPPED).check_can_protect(v.id)  # protecting it again resumes its backups
    requested = item(v)
    requested.request_protection(uuid4(), "DefaultPolicy", uuid4())
    assert refused(lambda: requested.check_can_protect(v.id)) == "ProtectionInProgress"


def test_backups_and_policy_changes_need_an_actively_protected_vm() -> None:
    v = vault()
    item(v, ItemStatus.PROTECTED).check_actively_protected()
    assert refused(lambda: item(v).check_actively_protected()) == "VmNotProtected"
    assert refused(lambda: item(v, ItemStatus.PROTECTION_STOPPED).check_actively_protected()) == "VmNotProtected"


def test_one_backup_at_a_time() -> None:
    running = item(vault(), ItemStatus.PROTECTED)
    running.check_no_backup_running()
    running.start_backup(uuid4(), None, NOW + timedelta(days=1))
    assert refused(running.check_no_backup_running) == "BackupAlreadyInProgress"


def test_protection_stops_once_and_its_data_may_be_deleted_after() -> None:
    v = vault()
    item(v, ItemStatus.PROTECTED).check_can_stop_protection(delete_data=False)
    item(v, ItemStatus.PROTECTION_STOPPED).check_can_stop_protection(delete_data=True)
    assert refused(lambda: item(v).check_can_stop_protection(delete_data=True)) == "VmNotProtected"
    stopped = item(v, ItemStatus.PROTECTION_STOPPED)
    assert refused(lambda: stopped.check_can_stop_protection(delete_data=False)) == "VmNotProtected"
    running = item(v, ItemStatus.PROTECTED)
    running.start_backup(uuid4(), None, NOW + timedelta(days=1))
    assert refused(lambda: running.check_can_stop_protection(delete_data=False)) == "BackupAlreadyInProgress"


def test_an_on_demand_backups_retain_until_has_a_zone_and_lies_within_99_years() -> None:
    assert VirtualMachine.check_retain_until(None, NOW) == NOW + timedelta(days=30)
    assert VirtualMachine.check_retain_until(NOW + timedelta(days=5), NOW) == NOW + timedelta(days=5)
    for bad in (datetime(2027, 1, 1), NOW, NOW - timedelta(days=1), NOW + timedelta(days=100 * 365)):
        assert refused(lambda: VirtualMachine.check_retain_until(bad, NOW)) == "RetainUntilInvalid"  # noqa: B023


# RecoveryPoint and Job


def test_an_expired_point_is_not_restored() -> None:
    rp = point()
    rp.check_live()
    rp.expire("retention ended")
    assert refused(rp.check_live) == "RecoveryPointExpired"


def test_keys_are_restored_from_an_encrypted_vms_point_only() -> None:
    keys = EncryptionKeys(key_vault="kv", bek_secret="bek")
    assert point(encryption=keys).check_encrypted() == keys
    assert refused(point().check_encrypted) == "RecoveryPointNotEncrypted"


def test_a_due_point_expires_unless_it_is_the_newest_of_a_protected_vm() -> None:
    rp = point(expires_at=NOW)
    assert not rp.is_due(uuid4(), NOW) and not rp.is_due(rp.vault_id, NOW - timedelta(seconds=1))
    assert rp.is_due(rp.vault_id, NOW)
    assert (rp.expire_or_hold(True), rp.expire_or_hold(True)) == ("held", "")  # held once
    assert rp.expire_or_hold(False) == "expired" and rp.expired and not rp.is_due(rp.vault_id, NOW)


def test_a_disks_restore_names_its_target_directory() -> None:
    Job.check_restore_target("vm", "")
    Job.check_restore_target("disks", "/srv/restore")
    assert refused(lambda: Job.check_restore_target("disks", "")) == "TargetDirRequired"
    assert Job(operation=Operation.RESTORE, vault_id=uuid4(), vm_key="", vm_name="").state.value == "in_progress"


# BackupPolicy


def test_a_policys_name_zone_schedule_and_retention_follow_their_rules() -> None:
    schedule, retention = default_schedule(), default_retention()
    BackupPolicy.check_settings("Nightly", schedule, retention, "Asia/Tokyo")
    assert refused(lambda: BackupPolicy.check_settings("bad name!", schedule, retention, "UTC")) == "PolicyNameInvalid"
    assert (
        refused(lambda: BackupPolicy.check_settings("Nightly", schedule, retention, "Mars/Base")) == "TimeZoneUnknown"
    )
    too_short = Retention(daily=DailyRetention(days=1))
    assert refused(lambda: BackupPolicy.check_settings("Nightly", schedule, too_short, "UTC")) == "RetentionOutOfRange"
    assert refused(lambda: BackupPolicy.check_settings("Nightly", schedule, Retention(), "UTC")) == "RetentionRequired"


def test_a_policy_name_is_taken_once_per_vault() -> None:
    v = vault()
    BackupPolicy.check_name_free(v.name, "Nightly", None)
    existing = BackupPolicy(
        vault_id=v.id, name="Nightly", schedule=default_schedule(), retention=default_retention(), timezone="UTC"
    )
    assert refused(lambda: BackupPolicy.check_name_free(v.name, "nightly", existing)) == "PolicyNameTaken"


def test_retention_is_shortened_by_a_dropped_tier_a_lower_count_or_fewer_selected_days() -> None:
    def r(**tiers: Any) -> Retention:
        return Retention.model_validate(tiers)

    base = r(
        daily={"days": 30},
        weekly={"weekdays": ["sunday", "monday"], "weeks": 12},
        yearly={"months_of_year": [1, 7], "on": {"days": [1]}, "years": 5},
    )
    cases = {
        "the daily tier keeps 29 days instead of 30": r(**{**base.model_dump(), "daily": {"days": 29}}),
        "the weekly tier is dropped": r(**{**base.model_dump(), "weekly": None}),
        "the weekly tier keeps fewer weekdays": r(
            **{**base.model_dump(), "weekly": {"weekdays": ["sunday"], "weeks": 12}}
        ),
        "the yearly tier keeps fewer months": r(
            **{**base.model_dump(), "yearly": {"months_of_year": [1], "on": {"days": [1]}, "years": 5}}
        ),
    }
    for described, shorter in cases.items():
        assert retention_shortened(base, shorter) == described
    longer = r(**{**base.model_dump(), "daily": {"days": 60}, "monthly": {"on": {"days": ["last"]}, "months": 3}})
    assert retention_shortened(base, longer) == "" and retention_shortened(base, base) == ""


def test_soft_delete_and_immutability_move_only_the_allowed_ways() -> None:
    v = vault()
    assert v.check_soft_delete_change(SoftDelete.ENABLED, 14) is False  # the default already
    assert refused(lambda: v.check_soft_delete_change(SoftDelete.ENABLED, 181)) == "SoftDeleteRetentionInvalid"
    v.change_soft_delete(SoftDelete.ALWAYS_ON, 30)
    assert refused(lambda: v.check_soft_delete_change(SoftDelete.DISABLED, 30)) == "SoftDeleteAlwaysOn"
    assert v.soft_delete_purge_at(NOW) == NOW + timedelta(days=30)
    assert refused(lambda: v.check_immutability_change(Immutability.LOCKED)) == "ImmutabilityNotEnabled"
    v.change_immutability(Immutability.ENABLED)
    assert refused(lambda: v.check_mutable("deleting", "delete_data")) == "VaultImmutable"
    v.change_immutability(Immutability.LOCKED)
    assert refused(lambda: v.check_immutability_change(Immutability.ENABLED)) == "ImmutabilityLocked"
