"""The dashboard, per vault and overall, as of the moment it is asked: from the items, jobs,
policies and dashboard read models (time-dependent facts, such as a backup being overdue, are
worked out here, against `now`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from projections.base import ts
from projections.store import ReadStore

GIB = 1024**3
ACTIVE = ("protected", "protected_initial_backup_pending", "protection_error")  # still under protection
INTERVALS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


class Alert(BaseModel):
    code: str  # BackupFailed | BackupOverdue | PrecheckFailing
    vault_name: str
    vm_name: str
    message: str


class VaultDashboard(BaseModel):
    vault_id: str  # "" for the overall view
    vault_name: str
    protected_items: int
    items_by_status: dict[str, int]
    initial_backup_pending: int
    jobs_last_24h: dict[str, int]  # by status, for jobs started in the last 24 hours
    jobs_in_progress: int
    alerts: list[Alert]
    storage_logical_bytes: int  # the unexpired recovery points' data as the VMs hold it
    storage_stored_bytes: int  # what the vault store holds after deduplication
    protected_instances_by_size: dict[str, int]  # "< 50 GB", "50-500 GB", "500-1000 GB", ...


class Dashboard(BaseModel):
    at: datetime
    overall: VaultDashboard
    vaults: list[VaultDashboard]


def size_band(size_bytes: int) -> str:
    """Azure Backup's protected-instance bands: under 50 GB, 50-500 GB, then each further 500 GB."""
    gb = size_bytes / GIB
    if gb < 50:
        return "< 50 GB"
    if gb < 500:
        return "50-500 GB"
    low = int(gb // 500) * 500
    return f"{low}-{low + 500} GB"


def dashboard(store: ReadStore, now: datetime, vault_id: str | None = None) -> Dashboard:
    vaults = {r["vault_id"]: r["name"] for r in store.fetch(f"SELECT vault_id, name FROM {store.t('vaults')}")}
    items = store.fetch(
        f"SELECT i.*, d.protected_at, d.instance_bytes, p.schedule FROM {store.t('items')} i "
        f"LEFT JOIN {store.t('dash_items')} d ON d.item_id = i.item_id "
        f"LEFT JOIN {store.t('policies')} p ON p.policy_id = i.policy_id WHERE i.status <> 'unregistered'"
    )
    since = ts(now - timedelta(days=1))
    jobs = store.fetch(
        f"SELECT vault_id, status, started_at FROM {store.t('jobs')} WHERE started_at >= ? OR status = 'in_progress'",
        (since,),
    )
    logical = store.fetch(
        f"SELECT vault_id, SUM(logical_bytes) AS n FROM {store.t('dash_points')} WHERE expired = 0 GROUP BY vault_id"
    )
    stored = _stored(store)
    failed = store.fetch(
        f"SELECT vault_id, vm_name, recovery_point_id, verify_problem FROM {store.t('recovery_points')} "
        "WHERE verify_status = 'failed' AND expired = 0 ORDER BY vm_name, recovery_point_id"
    )
    per_vault = [
        _vault(
            vid,
            vaults[vid],
            _of(items, {vid}),
            _of(jobs, {vid}),
            _sum(logical, vid),
            stored.get(vid, 0),
            now,
            since,
            failed_points=_of(failed, {vid}),
        )
        for vid in sorted(vaults, key=vaults.__getitem__)
        if vault_id is None or vid == vault_id
    ]
    in_scope = {v.vault_id for v in per_vault}
    overall = _vault(
        "",
        "(all vaults)",
        _of(items, in_scope),
        _of(jobs, in_scope),
        sum(v.storage_logical_bytes for v in per_vault),
        sum(v.storage_stored_bytes for v in per_vault),
        now,
        since,
        vault_names=vaults,
        failed_points=_of(failed, in_scope),
    )
    return Dashboard(at=now, overall=overall, vaults=per_vault)


def _of(rows: list[dict[str, Any]], vault_ids: set[str]) -> list[dict[str, Any]]:
    return [r for r in rows if r["vault_id"] in vault_ids]


def _stored(store: ReadStore) -> dict[str, int]:
    """Each vault's stored bytes: its vault store's latest usage report, or, for a history without
    one, new blocks written minus blocks freed."""
    counted = {
        r["vault_id"]: int(r["n"] or 0)
        for r in store.fetch(f"SELECT vault_id, stored_bytes - freed_bytes AS n FROM {store.t('dash_storage')}")
    }
    reported = {
        r["vault_id"]: int(r["stored_bytes"])
        for r in store.fetch(f"SELECT vault_id, stored_bytes FROM {store.t('dash_usage')}")
    }
    return {**counted, **reported}


def _sum(rows: list[dict[str, Any]], vault_id: str) -> int:
    return sum(int(r["n"] or 0) for r in rows if r["vault_id"] == vault_id)


def _vault(
    vault_id: str,
    name: str,
    items: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    logical: int,
    stored: int,
    now: datetime,
    since: str,
    vault_names: dict[str, str] | None = None,
    failed_points: Sequence[dict[str, Any]] = (),
) -> VaultDashboard:
    protected = [i for i in items if i["status"] in ACTIVE]
    names = vault_names or {vault_id: name}
    return VaultDashboard(
        vault_id=vault_id,
        vault_name=name,
        protected_items=len(protected),
        items_by_status=dict(sorted(Counter(i["status"] for i in items).items())),
        initial_backup_pending=sum(i["status"] == "protected_initial_backup_pending" for i in items),
        jobs_last_24h=dict(sorted(Counter(j["status"] for j in jobs if j["started_at"] >= since).items())),
        jobs_in_progress=sum(j["status"] == "in_progress" for j in jobs),
        alerts=[a for i in items for a in _alerts(i, names.get(i["vault_id"], ""), now)]
        + [_verify_failed(p, names.get(p["vault_id"], "")) for p in failed_points],
        storage_logical_bytes=logical,
        storage_stored_bytes=stored,
        protected_instances_by_size=dict(
            Counter(size_band(int(i["instance_bytes"] or 0)) for i in protected if i["instance_bytes"])
        ),
    )


def _verify_failed(point: dict[str, Any], vault_name: str) -> Alert:
    return Alert(
        code="VerifyFailed",
        vault_name=vault_name,
        vm_name=point["vm_name"],
        message=f"recovery point {point['recovery_point_id']} of {point['vm_name']} failed its last verify: "
        f"{point['verify_problem']}",
    )


def _alerts(item: dict[str, Any], vault_name: str, now: datetime) -> list[Alert]:
    vm = item["vm_name"]
    alerts = []
    if item["last_backup_status"] == "failed":
        alerts.append(
            Alert(code="BackupFailed", vault_name=vault_name, vm_name=vm, message=f"the last backup of {vm} failed")
        )
    if item["status"] in ACTIVE and item["schedule"]:
        frequency = json.loads(item["schedule"]).get("frequency", "daily")
        interval = INTERVALS.get(frequency, INTERVALS["daily"])
        last = item["last_backup_at"] or item["protected_at"]
        if last and datetime.fromisoformat(last) + interval < now:
            what = f"since {last[:16].replace('T', ' ')} UTC" if item["last_backup_at"] else "since it was protected"
            alerts.append(
                Alert(
                    code="BackupOverdue",
                    vault_name=vault_name,
                    vm_name=vm,
                    message=(f"{vm} has no successful backup {what}, longer than its {frequency} policy's interval"),
                )
            )
    errors = [c["code"] for c in json.loads(item["checks"] or "[]") if c.get("severity") == "error"]
    if errors:
        alerts.append(
            Alert(
                code="PrecheckFailing",
                vault_name=vault_name,
                vm_name=vm,
                message=f"{vm} fails its prechecks: {', '.join(errors)}",
            )
        )
    return alerts
