"""Items read model: every VM known to a vault, with its registration and protection status, its
policy, and its last backup. The scheduler reads it to find due slots."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import VirtualMachine as VM
from projections.base import Projection, dumps, on_event, ts
from projections.names import VERSIONS
from projections.store import Tx

_EVENTS = (
    VM.Created,
    VM.RegistrationRequested,
    VM.Registered,
    VM.RegistrationFailed,
    VM.Unregistered,
    VM.ProtectionRequested,
    VM.Protected,
    VM.ProtectionFailed,
    VM.PolicyChanged,
    VM.BackupStarted,
    VM.BackupSucceeded,
    VM.BackupFailed,
    VM.SlotsMissed,
    VM.ProtectionStopped,
    VM.Undeleted,
    VM.Purged,
    VM.ChecksRecorded,
)


class ItemsProjection(Projection):
    name = "items"
    topics = tuple(get_topic(cls) for cls in _EVENTS)
    version = VERSIONS["items"]
    row_table, row_key, stamps_rows = "items", "item_id", True
    owned = ("items",)
    by_aggregate = True  # rows keyed by the aggregate, each event writing its own
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}items (item_id TEXT PRIMARY KEY, vm_key TEXT NOT NULL, "
            "vault_id TEXT NOT NULL, vault_name TEXT NOT NULL, vm_name TEXT NOT NULL, "
            "region TEXT NOT NULL, deployment_model TEXT NOT NULL, status TEXT NOT NULL, "
            "last_job_id TEXT NOT NULL, extension_version TEXT NOT NULL DEFAULT '', "
            "policy_id TEXT NOT NULL DEFAULT '', policy_name TEXT NOT NULL DEFAULT '', "
            "last_slot TEXT NOT NULL DEFAULT '', backup_job_id TEXT NOT NULL DEFAULT '', "
            "last_backup_status TEXT NOT NULL DEFAULT '', last_backup_at TEXT NOT NULL DEFAULT '', "
            "missed_slots INTEGER NOT NULL DEFAULT 0, checks TEXT NOT NULL DEFAULT '[]', "
            "purge_at TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL)"
        ),
        "CREATE INDEX IF NOT EXISTS {i}items_vault ON {t}items (vault_id)",
        "CREATE INDEX IF NOT EXISTS {i}items_status ON {t}items (status)",
    )

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: VM.Created, tx: Tx) -> None:
        vm = event.vm
        tx.execute(
            f"INSERT INTO {self.table('items')} (item_id, vm_key, vault_id, vault_name, vm_name, "
            "region, deployment_model, status, last_job_id, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'registering', ?, ?)",
            (
                str(event.originator_id),
                vm.key,
                str(event.vault_id),
                event.vault_name,
                vm.display_name,
                vm.region,
                vm.deployment_model.value,
                str(event.job_id),
                ts(event.timestamp),
            ),
        )

    @apply.register
    def _(self, event: VM.RegistrationRequested, tx: Tx) -> None:
        self.update_row(
            tx,
            event,
            "vault_id = ?, vault_name = ?, status = 'registering', last_job_id = ?, extension_version = ''",
            str(event.vault_id),
            event.vault_name,
            str(event.job_id),
        )

    @apply.register
    def _(self, event: VM.Registered, tx: Tx) -> None:
        self.update_row(tx, event, "status = 'registered', extension_version = ?", event.extension_version)

    @apply.register
    def _(self, event: VM.RegistrationFailed, tx: Tx) -> None:
        self.update_row(tx, event, "status = 'registration_failed'")

    @apply.register
    def _(self, event: VM.Unregistered, tx: Tx) -> None:
        self.update_row(tx, event, "status = 'unregistered', last_job_id = ?", str(event.job_id))

    @apply.register
    def _(self, event: VM.ProtectionRequested, tx: Tx) -> None:
        self.update_row(
            tx,
            event,
            "policy_id = ?, policy_name = ?, last_job_id = ?",
            str(event.policy_id),
            event.policy_name,
            str(event.job_id),
        )

    @apply.register
    def _(self, event: VM.Protected, tx: Tx) -> None:
        self.update_row(tx, event, "status = 'protected_initial_backup_pending', last_slot = ?", ts(event.protected_at))

    @apply.register
    def _(self, event: VM.ProtectionFailed, tx: Tx) -> None:
        self.update_row(tx, event, "policy_id = '', policy_name = ''")

    @apply.register
    def _(self, event: VM.PolicyChanged, tx: Tx) -> None:
        self.update_row(tx, event, "policy_id = ?, policy_name = ?", str(event.policy_id), event.policy_name)

    @apply.register
    def _(self, event: VM.BackupStarted, tx: Tx) -> None:
        if event.slot is None:
            self.update_row(tx, event, "backup_job_id = ?", str(event.job_id))
        else:
            self.update_row(tx, event, "backup_job_id = ?, last_slot = ?", str(event.job_id), ts(event.slot))

    @apply.register
    def _(self, event: VM.BackupSucceeded, tx: Tx) -> None:
        outcome = "completed_with_warnings" if event.with_warnings else "completed"
        self.update_row(
            tx,
            event,
            "backup_job_id = '', status = ?, last_backup_status = ?, last_backup_at = ?",
            event.status.value,
            outcome,
            ts(event.taken_at),
        )

    @apply.register
    def _(self, event: VM.BackupFailed, tx: Tx) -> None:
        self.update_row(tx, event, "backup_job_id = '', status = ?, last_backup_status = 'failed'", event.status.value)

    @apply.register
    def _(self, event: VM.SlotsMissed, tx: Tx) -> None:
        self.update_row(
            tx, event, "last_slot = ?, missed_slots = missed_slots + ?", ts(max(event.slots)), len(event.slots)
        )

    @apply.register
    def _(self, event: VM.ChecksRecorded, tx: Tx) -> None:
        self.update_row(tx, event, "checks = ?", dumps([r.model_dump(mode="json") for r in event.results]))

    @apply.register
    def _(self, event: VM.ProtectionStopped, tx: Tx) -> None:
        if event.delete_data and event.purge_at is not None:
            status, purge_at = "soft_deleted", ts(event.purge_at)
        else:
            status, purge_at = ("registered" if event.delete_data else "protection_stopped"), ""
        self.update_row(tx, event, "status = ?, policy_id = '', policy_name = '', purge_at = ?", status, purge_at)

    @apply.register
    def _(self, event: VM.Undeleted, tx: Tx) -> None:
        self.update_row(tx, event, "status = 'protection_stopped', purge_at = '', last_job_id = ?", str(event.job_id))

    @apply.register
    def _(self, event: VM.Purged, tx: Tx) -> None:
        self.update_row(tx, event, "status = 'registered', purge_at = ''")
