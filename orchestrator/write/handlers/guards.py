"""Resource guards: made, attached to a vault and detached, their approvals granted by guard admins
and expired; and `critical`, which every critical operation's handler calls on its vault."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from orchestrator.domain import Identity, Vault
from orchestrator.domain.base import Aggregate, current_principal
from orchestrator.domain.guard import CriticalOperation, ResourceGuard
from orchestrator.domain.identity import identity_id_for
from orchestrator.domain.names import guard_id_for
from orchestrator.errors import NotFoundError
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


def guard_named(app: Orchestrator, name: str) -> ResourceGuard:
    guard = app.find(guard_id_for(name), ResourceGuard)
    if guard is None:
        raise NotFoundError("GuardNotFound", f"there is no resource guard named {name!r}", field="guard")
    return guard


def critical(app: Orchestrator, vault: Vault, operation: CriticalOperation, now: datetime) -> list[Aggregate]:
    """What a critical operation on `vault` saves with it: nothing on an unguarded vault; on a
    guarded one, its guard with the approval it used (refused when there is none to use)."""
    if vault.guard_id is None:
        return []
    guard = app.get(vault.guard_id, ResourceGuard)
    guard.use_approval(vault.id, operation, current_principal(), now)
    return [guard]


@handles(c.CreateGuard)
def create_guard(app: Orchestrator, cmd: c.CreateGuard) -> UUID:
    ResourceGuard.check_name_free(cmd.name, app.find(guard_id_for(cmd.name), ResourceGuard))
    guard = ResourceGuard(name=cmd.name)
    app.save(guard)
    return guard.id


@handles(c.AttachGuard)
def attach_guard(app: Orchestrator, cmd: c.AttachGuard) -> None:
    vault = app.get(cmd.vault_id, Vault)
    guard = guard_named(app, cmd.guard)
    if vault.check_guard_attachable(guard.id):
        vault.attach_guard(guard.id, guard.name)
        app.save(vault)


@handles(c.DetachGuard)
def detach_guard(app: Orchestrator, cmd: c.DetachGuard) -> None:
    vault = app.get(cmd.vault_id, Vault)
    vault.check_guard_attached()
    guards = critical(app, vault, CriticalOperation.DETACH_GUARD, cmd.now)
    vault.detach_guard()
    app.save(vault, *guards)


@handles(c.ApproveOperation)
def approve_operation(app: Orchestrator, cmd: c.ApproveOperation) -> UUID:
    """The approver is the command's principal, who must be an identity holding guard_admin on
    the guard (the API service checked its role; this holds for the in-process client too)."""
    guard = guard_named(app, cmd.guard)
    vault = app.get(cmd.vault_id, Vault)
    vault.check_guard_attached(guard.id)
    approver = current_principal()
    identity = app.find(identity_id_for(approver), Identity) if Identity.named_as(approver) else None
    Identity.check_approver(identity, approver, guard.id, guard.name)  # revoked ones too
    approval_id = uuid4()
    guard.grant(approval_id, vault.id, cmd.operation, approver, cmd.now, cmd.minutes)
    app.save(guard)
    return approval_id


@handles(c.ExpireApprovals)
def expire_approvals(app: Orchestrator, cmd: c.ExpireApprovals) -> int:
    guard = app.get(cmd.guard_id, ResourceGuard)
    expired = guard.expire_approvals(cmd.now)
    if expired:
        app.save(guard)
    return expired
