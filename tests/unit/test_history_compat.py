"""Histories stored before issue 15 (a vault that held its discovery's VMs and counted its protected
items, a policy that listed its items, their snapshots) still read, and still work."""

from __future__ import annotations

from uuid import UUID, uuid4

from orchestrator import Client
from orchestrator.domain import BackupPolicy, Vault
from orchestrator.domain.base import AggregateSnapshot
from orchestrator.domain.policy import policy_id_for


def test_a_vault_whose_latest_discovery_is_on_the_vault_itself_registers_from_it(
    client: Client, discovered_vault: str
) -> None:
    app = client._runtime.app
    discovery = app.discovery_of(app.get(UUID(discovered_vault), Vault))
    assert discovery is not None
    old = UUID(client.create_vault("vault-old", "japaneast", "rg"))
    vault = app.get(old, Vault)
    vault.trigger_event(Vault.InventoryRecorded, job_id=uuid4(), vms=discovery.vms)  # as stored then
    vault.trigger_event(Vault.ProtectedItemsCounted, count=0)
    policy = app.get(policy_id_for(old, "DefaultPolicy"), BackupPolicy)
    policy.trigger_event(BackupPolicy.Assigned, item_id=uuid4())
    app.save(vault, policy)

    jobs = client.wait_all(client.register(str(old), ["vm01"]))
    assert [j.status for j in jobs] == ["completed"]
    assert [i.vm_name for i in client.protected_items(str(old))] == ["vm01"]
    assert client.policies(str(old))[0].item_count == 0  # an Assigned event of history counts for nothing


def test_snapshots_stored_before_the_vault_and_policy_shrank_are_upcast(client: Client) -> None:
    app = client._runtime.app
    vault_id = UUID(client.create_vault("vault-a", "japaneast", "rg"))
    vault, policy = app.get(vault_id, Vault), app.get(policy_id_for(vault_id, "DefaultPolicy"), BackupPolicy)
    common = {"created_on": vault.created_on.isoformat(), "modified_on": vault.modified_on.isoformat()}
    vault_state = {
        **common,
        **{k: getattr(vault, k) for k in ("name", "subscription", "region", "resource_group", "backup_goal")},
        "kind": vault.kind.value,
        "replication": vault.replication.value,
        "protected_item_count": 3,
        "inventory": [],
        "discovered_at_job": None,
    }
    policy_state = {
        **common,
        "vault_id": str(vault_id),
        "name": policy.name,
        "schedule": policy.schedule.model_dump(mode="json"),
        "retention": policy.retention.model_dump(mode="json"),
        "timezone": policy.timezone,
        "item_ids": [str(uuid4())],
    }
    assert app.snapshots is not None
    for aggregate, state in ((vault, vault_state), (policy, policy_state)):
        app.snapshots.put(
            [
                AggregateSnapshot(
                    originator_id=aggregate.id,
                    originator_version=aggregate.version,
                    timestamp=AggregateSnapshot.create_timestamp(),
                    topic=type(aggregate).TOPIC,
                    state=state,
                )
            ]
        )
    app.repository.cache = None  # a process that loads them from their snapshots
    loaded = app.get(vault_id, Vault)
    assert loaded.protection_started and loaded.name == "vault-a" and loaded.created_on == vault.created_on
    assert not hasattr(loaded, "inventory") and not hasattr(loaded, "protected_item_count")
    assert not hasattr(app.get(policy.id, BackupPolicy), "item_ids")
