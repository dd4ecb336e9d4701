"""Queries over the read models, returning pydantic rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from projections.base import ts
from projections.store import ReadStore


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class JobRow(Row):
    job_id: str
    vault_id: str
    operation: str
    status: str
    vm_name: str
    started_at: datetime
    ended_at: datetime | None
    attempts: int
    error_code: str
    error_message: str
    warnings: list[dict[str, str]]
    result: dict[str, Any]
    principal: str
    created_seq: int  # the notification id of the job's creation
    bytes_done: int
    bytes_total: int
    checks: list[dict[str, str]]  # the prechecks' results: code, severity, message, remedy

    @property
    def duration_seconds(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None


class ItemRow(Row):
    item_id: str
    vm_name: str
    vm_key: str
    vault_id: str
    vault_name: str
    region: str
    deployment_model: str
    status: str
    last_job_id: str
    extension_version: str
    policy_id: str
    policy_name: str
    last_slot: datetime | None
    backup_job_id: str
    last_backup_status: str
    last_backup_at: datetime | None
    missed_slots: int
    checks: list[dict[str, str]]  # the latest prechecks' results
    purge_at: datetime | None  # soft deleted: when its data is purged
    updated_at: datetime


class RecoveryPointRow(Row):
    recovery_point_id: str
    vault_id: str
    item_id: str
    vm_name: str
    job_id: str
    taken_at: datetime
    consistency: str
    tiers: list[str]
    expires_at: datetime
    logical_bytes: int
    stored_bytes: int
    expired: bool
    held_reason: str
    expiry_reason: str
    key_vault: str  # an encrypted VM's key vault ("" when not encrypted); its keys are kept with the point
    last_verified_at: datetime | None  # its last verify (None: never verified)
    verify_status: str  # "ok", "failed" or "" (never verified)
    verify_problem: str  # what the last failed verify found, and in which block


class PolicyRow(Row):
    policy_id: str
    vault_id: str
    name: str
    schedule: dict[str, Any]
    retention: dict[str, Any]
    timezone: str
    item_count: int
    updated_at: datetime


class VaultRow(Row):
    vault_id: str
    name: str
    subscription: str
    region: str
    resource_group: str
    kind: str
    replication: str
    backup_goal: str
    created_at: datetime
    created_by: str
    soft_delete: str
    soft_delete_days: int
    immutability: str
    guard: str  # the resource guard's name ("": none attached)


class GuardRow(Row):
    guard_id: str
    name: str
    created_at: datetime
    created_by: str


class ApprovalRow(Row):
    approval_id: str
    guard_id: str
    guard_name: str
    vault_id: str
    operation: str
    approved_by: str
    approved_at: datetime
    expires_at: datetime
    state: str  # open, used or expired
    used_by: str
    updated_at: datetime


def _utc(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return ts(value)


def jobs(
    store: ReadStore,
    *,
    status: str | None = None,
    operation: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    vault_id: str | None = None,
    limit: int | None = None,
) -> list[JobRow]:
    """Jobs started in [start, end), newest first (the newest `limit` only, when given)."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("status", status), ("operation", operation), ("vault_id", vault_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if start is not None:
        where.append("started_at >= ?")
        params.append(_utc(start))
    if end is not None:
        where.append("started_at < ?")
        params.append(_utc(end))
    return _job_rows(store, where, params, limit)


JOB_STATES_CHUNK = 500  # job ids per query (both databases cap the parameters of one statement)


def job_states(store: ReadStore, job_ids: list[str]) -> dict[str, str]:
    """The status the jobs read model shows for each of these jobs it has (a job not yet in it, or
    no job at all, is absent)."""
    states: dict[str, str] = {}
    for first in range(0, len(job_ids), JOB_STATES_CHUNK):
        chunk = job_ids[first : first + JOB_STATES_CHUNK]
        rows = store.fetch(
            f"SELECT job_id, status FROM {store.t('jobs')} WHERE job_id IN ({','.join('?' * len(chunk))})", tuple(chunk)
        )
        states.update((r["job_id"], r["status"]) for r in rows)
    return states


def job(store: ReadStore, job_id: str) -> JobRow | None:
    rows = _job_rows(store, ["job_id = ?"], [job_id])
    return rows[0] if rows else None


def _job_rows(store: ReadStore, where: list[str], params: list[Any], limit: int | None = None) -> list[JobRow]:
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    if limit is not None:
        params = [*params, limit]
    rows = store.fetch(
        f"SELECT * FROM {store.t('jobs')}{clause} ORDER BY started_at DESC, job_id" + (" LIMIT ?" if limit else ""),
        tuple(params),
    )
    return [
        JobRow(
            **{
                **r,
                "warnings": json.loads(r["warnings"]),
                "result": json.loads(r["result"]),
                "checks": json.loads(r["checks"]),
            }
        )
        for r in rows
    ]


def items(store: ReadStore, vault_id: str, *, include_former: bool = False) -> list[ItemRow]:
    clause = "" if include_former else " AND status NOT IN ('unregistered', 'registration_failed')"
    rows = store.fetch(
        f"SELECT * FROM {store.t('items')} WHERE vault_id = ?{clause} ORDER BY vm_name",
        (vault_id,),
    )
    return [_item(r) for r in rows]


def _item(row: dict[str, Any]) -> ItemRow:
    return ItemRow(
        **{
            **row,
            "last_slot": row["last_slot"] or None,
            "last_backup_at": row["last_backup_at"] or None,
            "purge_at": row["purge_at"] or None,
            "checks": json.loads(row["checks"]),
        }
    )


SCHEDULED = "status IN ('protected_initial_backup_pending', 'protected', 'protection_error') AND policy_id <> ''"


def scheduled_rows(store: ReadStore) -> list[tuple[str, str, str, str]]:
    """Actively protected items as (item id, VM name, last slot as stored text, policy id): what the
    scheduler looks at, without building a row model per item."""
    rows = store.fetch(f"SELECT item_id, vm_name, last_slot, policy_id FROM {store.t('items')} WHERE {SCHEDULED}")
    return [(r["item_id"], r["vm_name"], r["last_slot"], r["policy_id"]) for r in rows]


def policies_in_use(store: ReadStore) -> list[PolicyRow]:
    """The policies of actively protected items."""
    return _policies(store, f"p.policy_id IN (SELECT DISTINCT policy_id FROM {store.t('items')} WHERE {SCHEDULED})")


def recovery_points(
    store: ReadStore, vault_id: str, vm_name: str | None = None, *, include_expired: bool = False
) -> list[RecoveryPointRow]:
    """Newest first."""
    where, params = ["vault_id = ?"], [vault_id]
    if vm_name is not None:
        where.append("vm_name = ?")
        params.append(vm_name)
    if not include_expired:
        where.append("expired = 0")
    rows = store.fetch(
        f"SELECT * FROM {store.t('recovery_points')} WHERE {' AND '.join(where)} ORDER BY taken_at DESC",
        tuple(params),
    )
    return [
        RecoveryPointRow(
            **{
                **r,
                "tiers": json.loads(r["tiers"]),
                "expired": bool(r["expired"]),
                "last_verified_at": r["last_verified_at"] or None,
            }
        )
        for r in rows
    ]


def policies(store: ReadStore, vault_id: str) -> list[PolicyRow]:
    return _policies(store, "p.vault_id = ?", (vault_id,))


def _policies(store: ReadStore, where: str, params: tuple[str, ...] = ()) -> list[PolicyRow]:
    """Each with the count of the actively protected items that name it (the items' rows say)."""
    rows = store.fetch(
        f"SELECT p.*, (SELECT COUNT(*) FROM {store.t('items')} i WHERE i.policy_id = p.policy_id AND {SCHEDULED}) "
        f"AS item_count FROM {store.t('policies')} p WHERE {where} ORDER BY p.name",
        params,
    )
    return [
        PolicyRow(**{**r, "schedule": json.loads(r["schedule"]), "retention": json.loads(r["retention"])}) for r in rows
    ]


def vaults(store: ReadStore, subscription: str | None = None) -> list[VaultRow]:
    if subscription is None:
        rows = store.fetch(f"SELECT * FROM {store.t('vaults')} ORDER BY subscription, name")
    else:
        rows = store.fetch(f"SELECT * FROM {store.t('vaults')} WHERE subscription = ? ORDER BY name", (subscription,))
    return [VaultRow(**r) for r in rows]


def vault(store: ReadStore, vault_id: str) -> VaultRow | None:
    rows = store.fetch(f"SELECT * FROM {store.t('vaults')} WHERE vault_id = ?", (vault_id,))
    return VaultRow(**rows[0]) if rows else None


def guards(store: ReadStore) -> list[GuardRow]:
    return [GuardRow(**r) for r in store.fetch(f"SELECT * FROM {store.t('guards')} ORDER BY name")]


def approvals(store: ReadStore, guard_id: str | None = None, *, state: str | None = None) -> list[ApprovalRow]:
    """A guard's approvals (or every guard's), newest first."""
    where, params = [], []
    for column, value in (("guard_id", guard_id), ("state", state)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = store.fetch(
        f"SELECT * FROM {store.t('guard_approvals')}{clause} ORDER BY approved_at DESC, approval_id", tuple(params)
    )
    return [ApprovalRow(**r) for r in rows]


def guards_with_due_approvals(store: ReadStore, now: datetime) -> list[str]:
    """The guards with open approvals past their time at `now`: what the scheduler expires."""
    rows = store.fetch(
        f"SELECT DISTINCT guard_id FROM {store.t('guard_approvals')} WHERE state = 'open' AND expires_at <= ?",
        (_utc(now),),
    )
    return sorted(r["guard_id"] for r in rows)
