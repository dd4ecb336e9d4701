"""An identity of the API service: a name, a role (global or on one vault) and the hash of its API
token. The token itself is never stored: it is shown once, when the identity is made (or reissued),
and a call carrying it is matched by hashing it again. A random 256-bit secret needs no slow hash:
no one can guess it from its SHA-256, so checking a call stays one hash and one comparison.

Roles, after Azure Backup's built-in ones, each holding the one before it:
`reader` (read models, jobs, the audit log), `operator` (also discovery, registration, protection,
backup now, restores), `contributor` (also policies, stop protection, retention, vault settings,
unregistering, new vaults), `owner` (also identities)."""

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
from orchestrator.errors import DomainError

TOKEN_PREFIX = "bko_"  # what a token starts with, so that a scanner for leaked secrets can find it


class Role(str, Enum):
    READER = "reader"
    OPERATOR = "operator"
    CONTRIBUTOR = "contributor"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def holds(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may (each role holds the ones before it)."""
        return self.rank >= needed.rank


class Caller(BaseModel):
    """An authenticated caller of the API service."""

    model_config = ConfigDict(frozen=True)
    name: str
    role: Role
    vault_id: str | None  # None: every vault


class IdentityRow(BaseModel):
    """An identity as `identity list` shows it (never its token or the token's hash)."""

    name: str
    role: Role
    vault_id: str | None
    revoked: bool
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, identity: Identity) -> IdentityRow:
        return cls(
            name=identity.name,
            role=identity.role,
            vault_id=str(identity.vault_id) if identity.vault_id else None,
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

    class Reissued(Aggregate.Event):
        """A revoked identity made again: a new role, scope and token."""

        TOPIC = "backup.identity.reissued"
        role: Role
        vault_id: UUID | None
        token_hash: str

    class Revoked(Aggregate.Event):
        TOPIC = "backup.identity.revoked"

    @staticmethod
    def create_id(name: str) -> UUID:
        return identity_id_for(name)

    @event(Created)
    def __init__(self, name: str, role: Role, vault_id: UUID | None, token_hash: str, created_by: str) -> None:
        self.name = name
        self.role = role
        self.vault_id = vault_id
        self.token_hash = token_hash
        self.revoked = False
        self.created_by = created_by

    @classmethod
    def check_name_free(cls, name: str, existing: Identity | None) -> None:
        if existing is not None and not existing.revoked:
            raise DomainError(
                "IdentityExists", f"an identity named {existing.name!r} exists: revoke it first", field="name"
            )

    def reissue(self, role: Role, vault_id: UUID | None, token_hash: str) -> None:
        if not self.revoked:
            raise DomainError(
                "IdentityExists", f"an identity named {self.name!r} exists: revoke it first", field="name"
            )
        self._reissue(role, vault_id, token_hash)

    @event(Reissued)
    def _reissue(self, role: Role, vault_id: UUID | None, token_hash: str) -> None:
        self.role = role
        self.vault_id = vault_id
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
