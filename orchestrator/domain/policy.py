"""A backup policy of a vault: schedule, retention tiers and time zone; it serves many VMs.

Which VMs it serves, the items say (each names its policy): the policy itself does not list them, so
protecting and moving VMs never writes it."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, SnapshotState
from orchestrator.domain.names import POLICY, check_timezone
from orchestrator.domain.schedule import Retention, Schedule, check_retention, check_schedule
from orchestrator.errors import DomainError

DEFAULT_POLICY = "DefaultPolicy"


def policy_id_for(vault_id: UUID, name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/vaults/{vault_id}/policies/{name.lower()}")


class BackupPolicyState(SnapshotState):
    vault_id: UUID
    name: str
    schedule: Schedule
    retention: Retention
    timezone: str


class BackupPolicy(Aggregate):
    TOPIC = "backup.policy"
    snapshot_state = BackupPolicyState
    class_version: ClassVar[int] = 2  # 2: the item ids left the policy (issue 15); see upcast_v1_v2

    class Created(Aggregate.Created):
        TOPIC = "backup.policy.created"
        vault_id: UUID
        name: str
        schedule: Schedule
        retention: Retention
        timezone: str

    class Updated(Aggregate.Event):
        TOPIC = "backup.policy.updated"
        schedule: Schedule
        retention: Retention
        timezone: str

    class Assigned(Aggregate.Event):
        """History: an item joined the policy, when the policy listed its items. Changes nothing."""

        TOPIC = "backup.policy.assigned"
        item_id: UUID

    class Unassigned(Aggregate.Event):
        """History: an item left the policy, when the policy listed its items. Changes nothing."""

        TOPIC = "backup.policy.unassigned"
        item_id: UUID

    @staticmethod
    def create_id(vault_id: UUID, name: str) -> UUID:
        return policy_id_for(vault_id, name)

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A snapshot of a policy that listed its items."""
        state.pop("item_ids", None)

    @staticmethod
    def check_settings(name: str, schedule: Schedule, retention: Retention, timezone: str) -> None:
        POLICY.check(name)
        check_timezone(timezone)
        check_schedule(schedule)
        check_retention(retention, schedule)

    @staticmethod
    def check_name_free(vault_name: str, name: str, existing: BackupPolicy | None) -> None:
        if existing is not None:
            raise DomainError("PolicyNameTaken", f"vault {vault_name!r} already has a policy {name!r}", field="name")

    @event(Created)
    def __init__(self, vault_id: UUID, name: str, schedule: Schedule, retention: Retention, timezone: str) -> None:
        self.vault_id = vault_id
        self.name = name
        self.schedule = schedule
        self.retention = retention
        self.timezone = timezone

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @event(Updated)
    def update(self, schedule: Schedule, retention: Retention, timezone: str) -> None:
        self.schedule = schedule
        self.retention = retention
        self.timezone = timezone

    @event(Assigned)
    def _assigned(self, item_id: UUID) -> None:
        pass

    @event(Unassigned)
    def _unassigned(self, item_id: UUID) -> None:
        pass
