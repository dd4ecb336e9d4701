"""Jobs read model: one row per job, filtered by status, operation, time and vault."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic

from orchestrator.domain import Job
from projections.base import Projection, dumps, on_event, ts
from projections.names import VERSIONS
from projections.store import Tx


class JobsProjection(Projection):
    name = "jobs"
    topics = tuple(
        get_topic(cls)
        for cls in (Job.Created, Job.Started, Job.Progressed, Job.ChecksRecorded, Job.Completed, Job.Failed)
    )
    version = VERSIONS["jobs"]
    row_table, row_key, stamps_rows = "jobs", "job_id", False
    owned = ("jobs",)
    by_aggregate = True  # rows keyed by the aggregate, each event writing its own
    overwrites = (Job.Progressed,)
    tables = (
        (
            "CREATE TABLE IF NOT EXISTS {t}jobs (job_id TEXT PRIMARY KEY, vault_id TEXT NOT NULL, "
            "operation TEXT NOT NULL, status TEXT NOT NULL, vm_key TEXT NOT NULL, vm_name TEXT NOT NULL, "
            "started_at TEXT NOT NULL, ended_at TEXT, attempts INTEGER NOT NULL DEFAULT 0, "
            "error_code TEXT NOT NULL DEFAULT '', error_message TEXT NOT NULL DEFAULT '', "
            "warnings TEXT NOT NULL DEFAULT '[]', result TEXT NOT NULL DEFAULT '{{}}', "
            "principal TEXT NOT NULL, created_seq BIGINT NOT NULL, bytes_done BIGINT NOT NULL DEFAULT 0, "
            "bytes_total BIGINT NOT NULL DEFAULT 0, checks TEXT NOT NULL DEFAULT '[]')"
        ),
        "CREATE INDEX IF NOT EXISTS {i}jobs_started ON {t}jobs (started_at)",
        "CREATE INDEX IF NOT EXISTS {i}jobs_status ON {t}jobs (status, operation)",
    )

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        """Events this projection does not handle only move its position."""

    @apply.register
    def _(self, event: Job.Created, tx: Tx) -> None:
        tx.execute(
            f"INSERT INTO {self.table('jobs')} (job_id, vault_id, operation, status, vm_key, "
            "vm_name, started_at, principal, created_seq) VALUES (?, ?, ?, 'in_progress', ?, ?, ?, ?, ?)",
            (
                str(event.originator_id),
                str(event.vault_id),
                event.operation.value,
                event.vm_key,
                event.vm_name,
                ts(event.timestamp),
                event.principal,
                tx.notification_id,
            ),
        )

    @apply.register
    def _(self, event: Job.Started, tx: Tx) -> None:
        self.update_row(tx, event, "attempts = attempts + 1")

    @apply.register
    def _(self, event: Job.Progressed, tx: Tx) -> None:
        self.update_row(tx, event, "bytes_done = ?, bytes_total = ?", event.bytes_done, event.bytes_total)

    @apply.register
    def _(self, event: Job.ChecksRecorded, tx: Tx) -> None:
        self.update_row(tx, event, "checks = ?", dumps([r.model_dump(mode="json") for r in event.results]))

    @apply.register
    def _(self, event: Job.Completed, tx: Tx) -> None:
        status = "completed_with_warnings" if event.warnings else "completed"
        self.update_row(
            tx,
            event,
            "status = ?, ended_at = ?, result = ?, warnings = ?",
            status,
            ts(event.timestamp),
            dumps(event.result),
            dumps([w.model_dump(mode="json") for w in event.warnings]),
        )

    @apply.register
    def _(self, event: Job.Failed, tx: Tx) -> None:
        self.update_row(
            tx,
            event,
            "status = 'failed', ended_at = ?, error_code = ?, error_message = ?",
            ts(event.timestamp),
            event.error_code,
            event.error_message,
        )
