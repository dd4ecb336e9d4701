"""The API service's identities: made (or made again after a revocation) and revoked."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator.domain import Identity, Vault
from orchestrator.domain.base import current_principal
from orchestrator.domain.identity import identity_id_for
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles
from orchestrator.write.handlers.guards import guard_named

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


@handles(c.CreateIdentity)
def create_identity(app: Orchestrator, cmd: c.CreateIdentity) -> UUID:
    if cmd.vault_id is not None:
        app.get(cmd.vault_id, Vault)  # VaultNotFound
    guard_id = guard_named(app, cmd.guard).id if cmd.guard is not None else None
    Identity.check_scope(cmd.role, cmd.vault_id, guard_id)
    existing = app.find(identity_id_for(cmd.name), Identity)
    Identity.check_name_free(cmd.name, existing)
    if existing is not None:
        existing.reissue(cmd.role, cmd.vault_id, cmd.token_hash, guard_id)
        app.save(existing)
        return existing.id
    identity = Identity(
        name=cmd.name,
        role=cmd.role,
        vault_id=cmd.vault_id,
        token_hash=cmd.token_hash,
        created_by=current_principal(),
        guard_id=guard_id,
    )
    app.save(identity)
    return identity.id


@handles(c.RevokeIdentity)
def revoke_identity(app: Orchestrator, cmd: c.RevokeIdentity) -> None:
    identity = app.get(identity_id_for(cmd.name), Identity)
    identity.revoke()
    app.save(identity)
