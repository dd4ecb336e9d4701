"""A resource guard: multi-user authorization for a vault's critical operations, after Azure
Backup's. Identities with the `guard_admin` role on the guard approve one operation on one vault
for a while; the vault, once the guard is attached, refuses that operation (disabling soft delete,
shortening retention, stopping protection with its data deleted, detaching the guard, disabling
immutability) unless an approval by another identity is there, unexpired and unused. Each approval
is used once. Its grant, its use and its expiry are events of the guard."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from uuid import UUID

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, Value
from orchestrator.domain.names import guard_id_for
from orchestrator.errors import DomainError

APPROVAL_MINUTES = range(1, 24 * 60 + 1)  # an approval lasts 1 minute to 24 hours


class CriticalOperation(str, Enum):
    DISABLE_SOFT_DELETE = "disable_soft_delete"  # disabling it, or shortening its window
    SHORTEN_RETENTION = "shorten_retention"  # a policy edit or change that keeps any point less long
    DELETE_DATA = "delete_data"  # stop protection with its backup data deleted
    DETACH_GUARD = "detach_guard"
    DISABLE_IMMUTABILITY = "disable_immutability"


class ApprovalState(str, Enum):
    OPEN = "open"
    USED = "used"
    EXPIRED = "expired"


class Approval(Value):
    approval_id: UUID
    vault_id: UUID
    operation: CriticalOperation
    approved_by: str
    expires_at: datetime
    state: ApprovalState = ApprovalState.OPEN
    used_by: str = ""


class ResourceGuard(Aggregate):
    TOPIC = "backup.guard"

    class Created(Aggregate.Created):
        TOPIC = "backup.guard.created"
        name: str

    class ApprovalGranted(Aggregate.Event):
        TOPIC = "backup.guard.approval_granted"
        approval_id: UUID
        vault_id: UUID
        operation: CriticalOperation
        approved_by: str
        expires_at: datetime

    class ApprovalUsed(Aggregate.Event):
        TOPIC = "backup.guard.approval_used"
        approval_id: UUID
        used_by: str

    class ApprovalExpired(Aggregate.Event):
        TOPIC = "backup.guard.approval_expired"
        approval_id: UUID

    @staticmethod
    def create_id(name: str) -> UUID:
        return guard_id_for(name)

    @event(Created)
    def __init__(self, name: str) -> None:
        self.name = name
        self.approvals: dict[UUID, Approval] = {}

    @staticmethod
    def check_name_free(name: str, existing: ResourceGuard | None) -> None:
        if existing is not None:
            raise DomainError("GuardNameTaken", f"a resource guard named {existing.name!r} exists", field="guard")

    def grant(
        self,
        approval_id: UUID,
        vault_id: UUID,
        operation: CriticalOperation,
        approver: str,
        now: datetime,
        minutes: int,
    ) -> datetime:
        """Record `approver`'s approval of `operation` on `vault_id` for `minutes`; returns its end."""
        if minutes not in APPROVAL_MINUTES:
            raise DomainError(
                "ApprovalDurationInvalid",
                f"an approval lasts {APPROVAL_MINUTES.start} to {APPROVAL_MINUTES.stop - 1} minutes, not {minutes}",
                field="minutes",
            )
        expires_at = now + timedelta(minutes=minutes)
        self._granted(approval_id, vault_id, operation, approver, expires_at)
        return expires_at

    @event(ApprovalGranted)
    def _granted(
        self, approval_id: UUID, vault_id: UUID, operation: CriticalOperation, approved_by: str, expires_at: datetime
    ) -> None:
        self.approvals[approval_id] = Approval(
            approval_id=approval_id,
            vault_id=vault_id,
            operation=operation,
            approved_by=approved_by,
            expires_at=expires_at,
        )

    def use_approval(self, vault_id: UUID, operation: CriticalOperation, caller: str, now: datetime) -> None:
        """Use the oldest open approval of `operation` on `vault_id` by another identity than
        `caller`, unexpired at `now`; refused with `MultiUserAuthorizationRequired` when none is."""
        candidates = [
            a
            for a in self.approvals.values()
            if a.vault_id == vault_id and a.operation is operation and a.state is ApprovalState.OPEN
        ]
        valid = [a for a in candidates if a.expires_at > now and a.approved_by != caller]
        if not valid:
            raise DomainError(
                "MultiUserAuthorizationRequired",
                f"{operation.value} on this vault needs an approval on resource guard {self.name!r} "
                f"by another identity holding guard_admin: {_why_not(candidates, caller, now)}",
                field="operation",
                details=[{"guard": self.name, "operation": operation.value}],
            )
        self._used(min(valid, key=lambda a: a.expires_at).approval_id, caller)

    @event(ApprovalUsed)
    def _used(self, approval_id: UUID, used_by: str) -> None:
        approval = self.approvals[approval_id]
        self.approvals[approval_id] = approval.model_copy(update={"state": ApprovalState.USED, "used_by": used_by})

    def expire_approvals(self, now: datetime) -> int:
        """Record the end of every open approval past its time; returns how many."""
        due = [a for a in self.approvals.values() if a.state is ApprovalState.OPEN and a.expires_at <= now]
        for approval in sorted(due, key=lambda a: a.expires_at):
            self._expired(approval.approval_id)
        return len(due)

    @event(ApprovalExpired)
    def _expired(self, approval_id: UUID) -> None:
        approval = self.approvals[approval_id]
        self.approvals[approval_id] = approval.model_copy(update={"state": ApprovalState.EXPIRED})


def _why_not(candidates: list[Approval], caller: str, now: datetime) -> str:
    if not candidates:
        return "there is no open approval (used and expired ones do not count)"
    if all(a.approved_by == caller for a in candidates):
        return f"the only open approvals are {caller!r}'s own: another identity must approve"
    return "every open approval by another identity has expired"
