"""Policies: create, edit (re-applying retention to existing recovery points), look up."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator.domain import BackupPolicy, RecoveryPoint, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate
from orchestrator.domain.policy import policy_id_for
from orchestrator.domain.schedule import tiers_for
from orchestrator.errors import NotFoundError
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


@handles(c.CreatePolicy)
def create_policy(app: Orchestrator, cmd: c.CreatePolicy) -> UUID:
    vault = app.get(cmd.vault_id, Vault)
    BackupPolicy.check_settings(cmd.name, cmd.schedule, cmd.retention, cmd.timezone)
    BackupPolicy.check_name_free(vault.name, cmd.name, app.find(policy_id_for(vault.id, cmd.name), BackupPolicy))
    policy = BackupPolicy(
        vault_id=vault.id, name=cmd.name, schedule=cmd.schedule, retention=cmd.retention, timezone=cmd.timezone
    )
    app.save(policy)
    return policy.id


@handles(c.UpdatePolicy)
def update_policy(app: Orchestrator, cmd: c.UpdatePolicy) -> int:
    """Returns how many recovery points had their retention changed."""
    policy = app.get(cmd.policy_id, BackupPolicy)
    BackupPolicy.check_settings(policy.name, cmd.schedule, cmd.retention, cmd.timezone)
    policy.update(cmd.schedule, cmd.retention, cmd.timezone)
    changed: list[Aggregate] = [policy]
    for item in app.items_of_policy(policy.id):
        changed += reapply_retention(app, policy, item, f"policy {policy.name} was edited")
    app.save(*changed)
    return len(changed) - 1


def policy_named(app: Orchestrator, vault: Vault, name: str) -> BackupPolicy:
    policy = app.find(policy_id_for(vault.id, name), BackupPolicy)
    if policy is None:
        raise NotFoundError("PolicyNotFound", f"vault {vault.name!r} has no policy {name!r}")
    return policy


def reapply_retention(app: Orchestrator, policy: BackupPolicy, item: VirtualMachine, reason: str) -> list[Aggregate]:
    """Scheduled recovery points of `item` take `policy`'s tiers, longer or shorter, as events."""
    changed: list[Aggregate] = []
    for rp_id in item.recovery_point_ids:
        rp = app.get(rp_id, RecoveryPoint)
        if rp.expired or rp.on_demand:
            continue
        tiers, expires_at = tiers_for(policy.retention, policy.tz, rp.taken_at)
        if not tiers:  # no tier keeps it any more: it expires at the next retention run
            expires_at = rp.taken_at
        if tiers != rp.tiers or expires_at != rp.expires_at:
            rp.change_retention(tiers, expires_at, reason)
            changed.append(rp)
    return changed
