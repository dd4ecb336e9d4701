"""An identity of the API service: a name, a role (global or on one vault) and the hash of its API
token. The token itself is never stored: it is shown once, when the identity is made (or reissued),
and a call carrying it is matched by hashing it again. A random 256-bit secret needs no slow hash:
no one can guess it from its SHA-256, so checking a call stays one hash and one comparison.

Roles, after Azure Backup's built-in ones, each holding the one before it:
`reader` (read models, jobs, the audit log), `operator` (also discovery, registration, protection,
backup now, restores), `contributor` (also policies, stop protection, retention, vault settings,
unregistering, new vaults), `owner` (also identities). Apart from them, `guard_admin` (on one resource
guard, or on every one) approves critical operations of the vaults a guard protects
(orchestrator/domain/guard.py) and does nothing else; no other role holds it. The API service makes
no guard admin (orchestrator/entry/api/server.py): they are made with local access to the data dir,
so a stolen owner token cannot make the second identity its deletions need."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from enum import Enum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import BaseModel, ConfigDict

from orchestrator.domain.base import Aggregate
from orchestrator.domain.names import IDENTITY
from orchestrator.errors import DomainError

TOKEN_PREFIX = "bko_"  # what a token starts with, so that a scanner for leaked secrets can find it


class Role(str, Enum):
    READER = "reader"
    OPERATOR = "operator"
    CONTRIBUTOR = "contributor"
    OWNER = "owner"
    GUARD_ADMIN = "guard_admin"  # apart: approves a resource guard's critical operations, nothing else

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def holds(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may (each vault role holds the ones before it;
        guard_admin holds itself only, and only it holds guard_admin)."""
        if Role.GUARD_ADMIN in (self, needed):
            return self is needed
        return self.rank >= needed.rank


class Caller(BaseModel):
    """An authenticated caller of the API service."""

    model_config = ConfigDict(frozen=True)
    name: str
    role: Role
    vault_id: str | None  # None: every vault
    guard_id: str | None = None  # a guard admin's guard (None: every guard)


class IdentityRow(BaseModel):
    """An identity as `identity list` shows it (never its token or the token's hash)."""

    name: str
    role: Role
    vault_id: str | None
    guard_id: str | None
    revoked: bool
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, identity: Identity) -> IdentityRow:
        return cls(
            name=identity.name,
            role=identity.role,
            vault_id=str(identity.vault_id) if identity.vault_id else None,
            guard_id=str(identity.guard_id) if identity.guard_id else None,
            revoked=identity.revoked,
            created_at=identity.created_on,
            created_by=identity.created_by,
        )


def identity_id_for(name: str) -> UUID:
    """Identity names are unique, case-insensitively, so the id derives from the name."""
    return uuid5(NAMESPACE_URL, f"/identities/{name.lower()}")


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def token_for(identity_id: UUID, secret: str) -> str:
    """The API token: the identity's id (so that a call names whom it claims to be) and its secret."""
    return f"{TOKEN_PREFIX}{identity_id.hex}_{secret}"


def parse_token(token: str) -> tuple[UUID, str] | None:
    """(identity id, secret) of a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    head, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    try:
        identity_id = UUID(hex=head)
    except ValueError:
        return None
    return (identity_id, secret) if secret and len(head) == 32 else None


class Identity(Aggregate):
    TOPIC = "backup.identity"

    class Created(Aggregate.Created):
        TOPIC = "backup.identity.created"
        name: str
        role: Role
        vault_id: UUID | None
        token_hash: str
        created_by: str  # the principal who made it (its event's principal, kept on the aggregate)
        guard_id: UUID | None = None  # a guard admin's guard

    class Reissued(Aggregate.Event):
        """A revoked identity made again: a new role, scope and token."""

        TOPIC = "backup.identity.reissued"
        role: Role
        vault_id: UUID | None
        token_hash: str
        guard_id: UUID | None = None

    class Revoked(Aggregate.Event):
        TOPIC = "backup.identity.revoked"

    @staticmethod
    def create_id(name: str) -> UUID:
        return identity_id_for(name)

    @event(Created)
    def __init__(
        self,
        name: str,
        role: Role,
        vault_id: UUID | None,
        token_hash: str,
        created_by: str,
        guard_id: UUID | None = None,
    ) -> None:
        self.name = name
        self.role = role
        self.vault_id = vault_id
        self.guard_id = guard_id
        self.token_hash = token_hash
        self.revoked = False
        self.created_by = created_by

    @staticmethod
    def check_scope(role: Role, vault_id: UUID | None, guard_id: UUID | None) -> None:
        """A vault role is held on a vault or on all; guard_admin on a guard or on all."""
        if role is Role.GUARD_ADMIN and vault_id is not None:
            raise DomainError(
                "IdentityScopeInvalid", "guard_admin is held on a resource guard, not on a vault", field="vault_id"
            )
        if role is not Role.GUARD_ADMIN and guard_id is not None:
            raise DomainError(
                "IdentityScopeInvalid",
                f"{role.value} is held on a vault; only guard_admin is held on a guard",
                field="guard",
            )

    @staticmethod
    def named_as(principal: str) -> bool:
        """Whether `principal` could be an identity's name (the product's own principals cannot)."""
        return IDENTITY.problem(principal) is None

    @staticmethod
    def check_approver(identity: Identity | None, principal: str, guard_id: UUID, guard_name: str) -> None:
        """Only an identity that holds guard_admin on the guard, and is not revoked, approves."""
        if (
            identity is None
            or identity.revoked
            or identity.role is not Role.GUARD_ADMIN
            or identity.guard_id not in (None, guard_id)
        ):
            raise DomainError(
                "NotAuthorized",
                f"{principal!r} is not an identity holding guard_admin on resource guard {guard_name!r}: "
                "only a guard admin approves its critical operations",
                field="guard",
            )

    @classmethod
    def check_name_free(cls, name: str, existing: Identity | None) -> None:
        if existing is not None and not existing.revoked:
            raise DomainError(
                "IdentityExists", f"an identity named {existing.name!r} exists: revoke it first", field="name"
            )

    def reissue(self, role: Role, vault_id: UUID | None, token_hash: str, guard_id: UUID | None = None) -> None:
        if not self.revoked:
            raise DomainError(
                "IdentityExists", f"an identity named {self.name!r} exists: revoke it first", field="name"
            )
        self._reissue(role, vault_id, token_hash, guard_id)

    @event(Reissued)
    def _reissue(self, role: Role, vault_id: UUID | None, token_hash: str, guard_id: UUID | None = None) -> None:
        self.role = role
        self.vault_id = vault_id
        self.guard_id = guard_id
        self.token_hash = token_hash
        self.revoked = False

    def revoke(self) -> None:
        if self.revoked:
            raise DomainError("IdentityRevoked", f"identity {self.name!r} is revoked already", field="name")
        self._revoke()

    @event(Revoked)
    def _revoke(self) -> None:
        self.revoked = True

    def accepts(self, secret: str) -> bool:
        """Whether `secret` is this identity's, in time independent of where they differ."""
        return not self.revoked and hmac.compare_digest(token_hash(secret), self.token_hash)
