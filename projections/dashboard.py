"""Dashboard read model: what the dashboard needs beyond the items, jobs and policies read models,
kept live as events arrive: each VM's size as a protected instance and when it was protected, each
recovery point's logical size, and each vault's stored bytes. Those are the vault store's own usage
record as the latest job reported it (`vault_usage` in a backup's or a retention job's result: the
report with the highest sequence wins, whatever order the events come in); a vault without such
reports (a history from before them) keeps the sum of new blocks written by backups minus the bytes
freed by retention. `queries.dashboard` puts them together at the moment it is asked."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import Job
from orchestrator.domain import RecoveryPoint as RP
from orchestrator.domain import VirtualMachine as VM
from orchestrator.domain.values import Operation
from projections.base import Projection, on_event, ts
from projections.names import VERSIONS
from projections.store import Tx

GIB = 1024**3


class DashboardProjection(Projection):
    name = "dashboard"
    topics = tuple(get_topic(cls) for cls in (VM.Protected, RP.Created, RP.Expired, Job.Created, Job.Completed))
    owned = ("dash_items", "dash_points", "dash_storage", "dash_retention_jobs", "dash_usage")
    version = VERSIONS["dashboard"]
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}dash_items (item_id TEXT PRIMARY KEY, "
            "protected_at TEXT NOT NULL DEFAULT '', instance_bytes BIGINT NOT NULL DEFAULT 0)"
        ),
        (
            "CREATE TABLE IF NOT EXISTS {t}dash_points (recovery_point_id TEXT PRIMARY KEY, vault_id TEXT NOT NULL, "
            "logical_bytes BIGINT NOT NULL, expired INTEGER NOT NULL DEFAULT 0)"
        ),
        "CREATE INDEX IF NOT EXISTS {i}dash_points_vault ON {t}dash_points (vault_id)",
        (
            "CREATE TABLE IF NOT EXISTS {t}dash_storage (vault_id TEXT PRIMARY KEY, "
            "stored_bytes BIGINT NOT NULL DEFAULT 0, freed_bytes BIGINT NOT NULL DEFAULT 0)"
        ),
        "CREATE TABLE IF NOT EXISTS {t}dash_retention_jobs (job_id TEXT PRIMARY KEY, vault_id TEXT NOT NULL)",
        (
            "CREATE TABLE IF NOT EXISTS {t}dash_usage (vault_id TEXT PRIMARY KEY, sequence BIGINT NOT NULL, "
            "stored_bytes BIGINT NOT NULL)"
        ),
    )

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: VM.Protected, tx: Tx) -> None:
        self._upsert_item(tx, str(event.originator_id), "protected_at", ts(event.protected_at))

    @apply.register
    def _(self, event: RP.Created, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('dash_points')} (recovery_point_id, vault_id, logical_bytes) VALUES (?, ?, ?)",
            (str(event.originator_id), str(event.vault_id), event.logical_bytes),
        )
        self._add_storage(tx, str(event.vault_id), "stored_bytes", event.stored_bytes)
        if event.provisioned_gb:
            self._upsert_item(tx, str(event.item_id), "instance_bytes", event.provisioned_gb * GIB)

    @apply.register
    def _(self, event: RP.Expired, tx: Tx) -> None:
        tx.execute(
            f"UPDATE {self.table('dash_points')} SET expired = 1 WHERE recovery_point_id = ?",
            (str(event.originator_id),),
        )

    @apply.register
    def _(self, event: Job.Created, tx: Tx) -> None:
        if event.operation is Operation.RETENTION:
            tx.execute(
                f"INSERT INTO {self.table('dash_retention_jobs')} (job_id, vault_id) VALUES (?, ?)",
                (str(event.originator_id), str(event.vault_id)),
            )

    @apply.register
    def _(self, event: Job.Completed, tx: Tx) -> None:
        usage = event.result.get("vault_usage")
        if isinstance(usage, dict) and {"vault_id", "sequence", "bytes"} <= usage.keys():
            self._report_usage(tx, str(usage["vault_id"]), int(usage["sequence"]), int(usage["bytes"]))
        freed = int(event.result.get("bytes_freed", 0) or 0)
        if not freed:
            return
        tx.execute(
            f"SELECT vault_id FROM {self.table('dash_retention_jobs')} WHERE job_id = ?", (str(event.originator_id),)
        )
        row = tx.one()
        if row is not None:
            self._add_storage(tx, row["vault_id"], "freed_bytes", freed)

    def _upsert_item(self, tx: Tx, item_id: str, column: str, value: Any) -> None:
        tx.execute(
            f"INSERT INTO {self.table('dash_items')} (item_id, {column}) VALUES (?, ?) "
            f"ON CONFLICT (item_id) DO UPDATE SET {column} = excluded.{column}",
            (item_id, value),
        )

    def _report_usage(self, tx: Tx, vault_id: str, sequence: int, stored: int) -> None:
        table = self.table("dash_usage")
        tx.execute(
            f"INSERT INTO {table} (vault_id, sequence, stored_bytes) VALUES (?, ?, ?) "
            f"ON CONFLICT (vault_id) DO UPDATE SET sequence = excluded.sequence, "
            f"stored_bytes = excluded.stored_bytes WHERE excluded.sequence > {table}.sequence",
            (vault_id, sequence, stored),
        )

    def _add_storage(self, tx: Tx, vault_id: str, column: str, amount: int) -> None:
        tx.execute(
            f"INSERT INTO {self.table('dash_storage')} (vault_id, {column}) VALUES (?, ?) "
            f"ON CONFLICT (vault_id) DO UPDATE SET {column} = {self.table('dash_storage')}.{column} + ?",
            (vault_id, amount, amount),
        )
