from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator.domain import BackupPolicy, Vault
from orchestrator.domain.guard import CriticalOperation
from orchestrator.domain.names import vault_id_for
from orchestrator.domain.policy import DEFAULT_POLICY
from orchestrator.domain.schedule import default_retention, default_schedule
from orchestrator.domain.values import Immutability, VaultKind
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles
from orchestrator.write.handlers.guards import critical

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


@handles(c.CreateVault)
def create_vault(app: Orchestrator, cmd: c.CreateVault) -> UUID:
    """The name, subscription, region and resource group are checked by their types (CreateVault)."""
    existing = app.find(vault_id_for(cmd.subscription, cmd.name), Vault, deleted_too=True)
    Vault.check_name_free(cmd.subscription, cmd.name, existing)
    goal = "azure/virtual_machine" if cmd.kind is VaultKind.RECOVERY_SERVICES else ""
    vault = Vault(
        name=cmd.name,
        subscription=cmd.subscription,
        region=cmd.region,
        resource_group=cmd.resource_group,
        kind=cmd.kind,
        replication=cmd.replication,
        backup_goal=goal,
    )
    default = BackupPolicy(
        vault_id=vault.id,
        name=DEFAULT_POLICY,
        schedule=default_schedule(),
        retention=default_retention(),
        timezone="UTC",
    )
    app.save(vault, default)
    return vault.id


@handles(c.SetReplication)
def set_replication(app: Orchestrator, cmd: c.SetReplication) -> None:
    """Until the vault is first asked to protect a VM, no item of it can hold protected data; after,
    its items say (read from the event store: a rare command, on a vault's items only)."""
    vault = app.get(cmd.vault_id, Vault)
    vault.check_replication_changeable(app.items_of_vault(vault.id) if vault.protection_started else ())
    if vault.replication is not cmd.replication:
        vault.change_replication(cmd.replication)
        app.save(vault)


@handles(c.SetSoftDelete)
def set_soft_delete(app: Orchestrator, cmd: c.SetSoftDelete) -> None:
    """The window in force when data is deleted governs it: items soft deleted before keep theirs."""
    vault = app.get(cmd.vault_id, Vault)
    if vault.check_soft_delete_change(cmd.state, cmd.retention_days):
        weakened = vault.soft_delete_weakened_by(cmd.state, cmd.retention_days)
        guards = critical(app, vault, CriticalOperation.DISABLE_SOFT_DELETE, cmd.now) if weakened else []
        vault.change_soft_delete(cmd.state, cmd.retention_days)
        app.save(vault, *guards)


@handles(c.SetImmutability)
def set_immutability(app: Orchestrator, cmd: c.SetImmutability) -> None:
    vault = app.get(cmd.vault_id, Vault)
    if vault.check_immutability_change(cmd.state):
        disabling = cmd.state is Immutability.DISABLED
        guards = critical(app, vault, CriticalOperation.DISABLE_IMMUTABILITY, cmd.now) if disabling else []
        vault.change_immutability(cmd.state)
        app.save(vault, *guards)


@handles(c.DeleteVault)
def delete_vault(app: Orchestrator, cmd: c.DeleteVault) -> None:
    """An empty vault only (its items, from the event store, say so)."""
    vault = app.get(cmd.vault_id, Vault)
    vault.check_deletable(app.items_of_vault(vault.id))
    vault.delete()
    app.save(vault)
