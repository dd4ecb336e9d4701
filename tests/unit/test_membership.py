"""Which items a policy serves and which hold a vault's protected data are read from the items
(issue 15, point 4), not kept on the policy or the vault: protecting, moving and stopping VMs write
their items, and the policy and the vault are not written (the vault once, at its first protection)."""

from __future__ import annotations

from uuid import UUID

import pytest

from orchestrator import Client, OrchestratorError
from orchestrator.domain import BackupPolicy, Vault
from orchestrator.domain.policy import policy_id_for

DAILY = {"frequency": "daily", "times": ["22:30"]}


def test_membership_and_protected_data_are_read_from_the_items(client: Client, discovered_vault: str) -> None:
    app = client._runtime.app
    vault_id = UUID(discovered_vault)
    default, keep = (
        policy_id_for(vault_id, "DefaultPolicy"),
        UUID(client.create_policy(discovered_vault, "Keep90", DAILY, {"daily": {"days": 90}})),
    )
    client.wait_all(client.register(discovered_vault, ["vm01", "vm02", "vm03"]))
    client.set_replication(discovered_vault, "local")  # nothing protected yet
    vault_version = app.get(vault_id, Vault).version
    policy_version = app.get(default, BackupPolicy).version
    assert {j.status for j in client.wait_all(client.protect(discovered_vault, ["vm01", "vm02"]))} == {"completed"}
    assert app.get(vault_id, Vault).version == vault_version + 1  # its first protection request, once
    client.wait_all(client.protect(discovered_vault, ["vm03"]))
    assert app.get(vault_id, Vault).version == vault_version + 1

    assert client.change_policy(discovered_vault, "vm02", "Keep90") == 0
    client.wait(client.stop_protection(discovered_vault, "vm01"))  # its data kept
    assert app.get(default, BackupPolicy).version == policy_version  # never written by any of this
    names = {policy: sorted(i.vm.name for i in app.items_of_policy(policy)) for policy in (default, keep)}
    assert names == {default: ["vm03"], keep: ["vm02"]}
    assert {p.name: p.item_count for p in client.policies(discovered_vault)} == {"DefaultPolicy": 1, "Keep90": 1}
    assert sorted(i.vm.name for i in app.items_of_vault(vault_id)) == ["vm01", "vm02", "vm03"]

    with pytest.raises(OrchestratorError) as caught:
        client.set_replication(discovered_vault, "geo")
    assert caught.value.code == "ReplicationLocked" and "3 item(s)" in caught.value.message
    client.set_soft_delete(discovered_vault, "disabled")  # soft-deleted data would still lock it
    for vm in ("vm01", "vm02", "vm03"):  # stopped with data deleted, every one: changeable again
        client.wait(client.stop_protection(discovered_vault, vm, delete_data=True))
    client.set_replication(discovered_vault, "geo")
    assert app.get(vault_id, Vault).replication.value == "geo"
