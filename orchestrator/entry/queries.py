"""The read-model queries, over a read store: the live one (the client, which first waits for the
read models to catch up with its writes) or one rebuilt as of a past instant (`Client.as_of`)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Self

from pydantic import AwareDatetime

from orchestrator.domain import names
from orchestrator.domain.names import guard_id_for
from orchestrator.domain.values import JobState, Operation
from orchestrator.entry.edge import strict
from orchestrator.errors import OrchestratorError
from projections import dashboard_query, queries
from projections.dashboard_query import Dashboard
from projections.queries import ApprovalRow, GuardRow, ItemRow, JobRow, PolicyRow, RecoveryPointRow, VaultRow
from projections.store import ReadStore

if TYPE_CHECKING:
    from orchestrator.audit.replay import ScratchStore


MAX_LIMIT = 1_000_000


class ReadModels:
    def _read_store(self) -> ReadStore:
        raise NotImplementedError

    @strict
    def jobs(
        self,
        status: str | None = None,
        operation: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        vault_id: str | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        """Job rows, newest first, filtered by status, operation, start-time window and vault; the
        newest `limit` (1 to 1,000,000) only, when given."""
        check_choice("status", status, JobState)
        check_choice("operation", operation, Operation)
        if limit is not None and not 1 <= limit <= MAX_LIMIT:
            raise OrchestratorError("CommandInvalid", f"limit must be 1 to {MAX_LIMIT:,}, not {limit}", field="limit")
        return queries.jobs(
            self._read_store(),
            status=status,
            operation=operation,
            start=start,
            end=end,
            vault_id=vault_id,
            limit=limit,
        )

    @strict
    def vaults(self, subscription: str | None = None) -> list[VaultRow]:
        return queries.vaults(self._read_store(), subscription)

    @strict
    def protected_items(self, vault_id: str, include_former: bool = False) -> list[ItemRow]:
        """The VMs registered (or registering) in the vault, with their status."""
        return queries.items(self._read_store(), str(vault_id), include_former=include_former)

    @strict
    def recovery_points(
        self, vault_id: str, vm_name: str | None = None, include_expired: bool = False
    ) -> list[RecoveryPointRow]:
        """A vault's (or one VM's) recovery points, newest first."""
        return queries.recovery_points(self._read_store(), str(vault_id), vm_name, include_expired=include_expired)

    @strict
    def policies(self, vault_id: str) -> list[PolicyRow]:
        return queries.policies(self._read_store(), str(vault_id))

    def guards(self) -> list[GuardRow]:
        """Every resource guard (which vaults each protects, `vaults()` says)."""
        return queries.guards(self._read_store())

    @strict
    def approvals(self, guard: str, state: str | None = None) -> list[ApprovalRow]:
        """A resource guard's approvals, newest first, each open, used or expired (or only `state`)."""
        names.GUARD.check(guard)
        return queries.approvals(self._read_store(), str(guard_id_for(guard)), state=state)

    @strict
    def dashboard(self, vault_id: str | None = None, now: AwareDatetime | None = None) -> Dashboard:
        """Protected VMs, items by status, the last 24 hours' jobs, initial backups pending, alerts,
        storage (logical, and stored after deduplication and compression) and protected instances by size band: for each
        vault and overall (or one vault), as of `now` (default: the view's own time)."""
        return dashboard_query.dashboard(self._read_store(), now or self._now(), vault_id)

    def _now(self) -> datetime:
        return datetime.now(UTC)


class AsOf(ReadModels):
    """The read models as they were at `when`: rebuilt from the events up to that instant."""

    def __init__(self, store: ReadStore, when: datetime, events: int, closer: ScratchStore) -> None:
        self.store = store
        self.when = when
        self.events = events  # how many stored events were read to rebuild them
        self._closer = closer

    def _read_store(self) -> ReadStore:
        return self.store

    def _now(self) -> datetime:
        return self.when

    def close(self) -> None:
        self._closer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def check_choice(field: str, value: str | None, choices: type[Enum]) -> None:
    allowed = [c.value for c in choices]
    if value is not None and value not in allowed:
        raise OrchestratorError("CommandInvalid", f"{field} {value!r} is not one of {', '.join(allowed)}", field=field)
