"""A backup policy of a vault: schedule, retention tiers and time zone; it serves many VMs."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate, SnapshotState
from orchestrator.domain.names import POLICY, check_timezone
from orchestrator.domain.schedule import Retention, Schedule, check_retention, check_schedule

DEFAULT_POLICY = "DefaultPolicy"


def policy_id_for(vault_id: UUID, name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/vaults/{vault_id}/policies/{name.lower()}")


def check_policy(name: str, schedule: Schedule, retention: Retention, timezone: str) -> None:
    POLICY.check(name)
    check_timezone(timezone)
    check_schedule(schedule)
    check_retention(retention, schedule)


class BackupPolicyState(SnapshotState):
    vault_id: UUID
    name: str
    schedule: Schedule
    retention: Retention
    timezone: str
    item_ids: list[UUID]


class BackupPolicy(Aggregate):
    TOPIC = "backup.policy"
    snapshot_state = BackupPolicyState

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
        TOPIC = "backup.policy.assigned"
        item_id: UUID

    class Unassigned(Aggregate.Event):
        TOPIC = "backup.policy.unassigned"
        item_id: UUID

    @staticmethod
    def create_id(vault_id: UUID, name: str) -> UUID:
        return policy_id_for(vault_id, name)

    @event(Created)
    def __init__(self, vault_id: UUID, name: str, schedule: Schedule, retention: Retention, timezone: str) -> None:
        self.vault_id = vault_id
        self.name = name
        self.schedule = schedule
        self.retention = retention
        self.timezone = timezone
        self.item_ids: list[UUID] = []

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @event(Updated)
    def update(self, schedule: Schedule, retention: Retention, timezone: str) -> None:
        self.schedule = schedule
        self.retention = retention
        self.timezone = timezone

    @event(Assigned)
    def assign(self, item_id: UUID) -> None:
        self.item_ids.append(item_id)

    @event(Unassigned)
    def unassign(self, item_id: UUID) -> None:
        self.item_ids.remove(item_id)
