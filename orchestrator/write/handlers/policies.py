"""Policies: create, edit (re-applying retention to existing recovery points), look up."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID
from zoneinfo import ZoneInfo

from orchestrator.domain import BackupPolicy, RecoveryPoint, Vault, VirtualMachine
from orchestrator.domain.base import Aggregate
from orchestrator.domain.guard import CriticalOperation
from orchestrator.domain.policy import policy_id_for
from orchestrator.domain.schedule import Retention, Tier, retention_shortened, tiers_for
from orchestrator.errors import NotFoundError
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles
from orchestrator.write.handlers.guards import critical

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
    vault = app.get(policy.vault_id, Vault)
    tz = ZoneInfo(cmd.timezone)
    plans = [plan for item in app.items_of_policy(policy.id) for plan in retention_plan(app, cmd.retention, tz, item)]
    shortened = retention_shortened(policy.retention, cmd.retention) or shortened_points(plans)
    guards = check_not_shortened(app, vault, shortened, "a policy edit", cmd.now)
    policy.update(cmd.schedule, cmd.retention, cmd.timezone)
    points = apply_retention(plans, f"policy {policy.name} was edited")
    app.save(policy, *points, *guards)
    return len(points)


def policy_named(app: Orchestrator, vault: Vault, name: str) -> BackupPolicy:
    policy = app.find(policy_id_for(vault.id, name), BackupPolicy)
    if policy is None:
        raise NotFoundError("PolicyNotFound", f"vault {vault.name!r} has no policy {name!r}")
    return policy


RetentionPlan = tuple[RecoveryPoint, list[Tier], datetime]


def retention_plan(app: Orchestrator, retention: Retention, tz: ZoneInfo, item: VirtualMachine) -> list[RetentionPlan]:
    """The scheduled recovery points of `item` whose tiers or expiry `retention` changes, each with its
    new tiers and expiry, longer or shorter (nothing changed yet)."""
    plans: list[RetentionPlan] = []
    for rp_id in item.recovery_point_ids:
        rp = app.get(rp_id, RecoveryPoint)
        if rp.expired or rp.on_demand:
            continue
        tiers, expires_at = tiers_for(retention, tz, rp.taken_at)
        if not tiers:  # no tier keeps it any more: it expires at the next retention run
            expires_at = rp.taken_at
        if tiers != rp.tiers or expires_at != rp.expires_at:
            plans.append((rp, tiers, expires_at))
    return plans


def shortened_points(plans: list[RetentionPlan]) -> str:
    """How the plans shorten retention ("" when no point would expire earlier than it does now)."""
    earlier = [rp for rp, _, expires_at in plans if expires_at < rp.expires_at]
    return f"{len(earlier)} recovery point(s) would expire earlier, e.g. {earlier[0].id}" if earlier else ""


def check_not_shortened(app: Orchestrator, vault: Vault, shortened: str, what: str, now: datetime) -> list[Aggregate]:
    """A change that shortens retention (`shortened` says how; "" when it does not): refused by an
    immutable vault, and a critical operation of a guarded one (returns its guard, to save)."""
    if not shortened:
        return []
    vault.check_mutable(f"{what} that shortens retention ({shortened})", "retention")
    return critical(app, vault, CriticalOperation.SHORTEN_RETENTION, now)


def apply_retention(plans: list[RetentionPlan], reason: str) -> list[Aggregate]:
    for rp, tiers, expires_at in plans:
        rp.change_retention(tiers, expires_at, reason)
    return [rp for rp, _, _ in plans]
