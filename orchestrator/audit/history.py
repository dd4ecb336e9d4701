"""The event history, filtered for an audit: by entity, vault, VM, event type and time. The entries
are read from the event store itself (not a read model), so they show exactly what is stored; which
ones match, the audit index says (projections/audit_index.py), so a call costs what it finds, not
the whole history. Events the index has not reached yet are read from the store and filtered here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification
from pydantic import BaseModel

from orchestrator.audit.verify import notifications
from projections.audit_index import AuditIndexFollower, ensure_tables, entry_vault, short_name, stated_owner
from projections.base import ts
from projections.follower import BATCH
from projections.store import ReadStore

COMMON = {"originator_id", "originator_version", "timestamp", "principal", "originator_topic"}


class HistoryEntry(BaseModel):
    position: int  # the event's notification id: its place in the history
    time: datetime
    principal: str
    event_type: str  # the stored topic, e.g. backup.job.failed
    entity_type: str  # vault, vm, job, policy, recovery_point, audit_checkpoint
    entity_id: str
    version: int
    vault_id: str  # of the entity at that point ("" when it has none)
    vm_name: str
    data: dict[str, Any]


def event_type_pattern(text: str) -> str:
    """`job.failed`, `job` or `backup.job.failed` all mean the stored topic prefix backup.job.failed."""
    return text if text.startswith("backup.") else f"backup.{text}"


@dataclass(frozen=True)
class Filters:
    """What an entry must match: each filter given (None: any)."""

    entity_id: str | None = None
    vault_id: str | None = None
    vm_name: str | None = None  # lower case
    event_type: str | None = None  # the stored topic prefix
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def of(
        cls,
        entity_id: UUID | str | None = None,
        vault_id: UUID | str | None = None,
        vm_name: str | None = None,
        event_type: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Filters:
        """The filters as `history` is given them (ids as UUIDs or text, a VM name in any case, an
        event type as `audit log --type` takes it)."""
        return cls(
            str(entity_id) if entity_id else None,
            str(vault_id) if vault_id else None,
            vm_name.lower() if vm_name else None,
            event_type_pattern(event_type) if event_type else None,
            start,
            end,
        )

    def admit(self, n: Notification, event: Any, vault: str, vm_name: str) -> bool:
        return (
            (self.entity_id is None or str(n.originator_id) == self.entity_id)
            and (self.vault_id is None or vault == self.vault_id)
            and (self.vm_name is None or self.vm_name in _vm_names(vm_name))
            and (self.event_type is None or _of_type(n.topic, self.event_type))
            and (self.start is None or event.timestamp >= self.start)
            and (self.end is None or event.timestamp < self.end)
        )


def _vm_names(name: str) -> tuple[str, str]:
    """A VM's name as an entry shows it, and without its resource group."""
    return name.lower(), short_name(name)


def _of_type(topic: str, pattern: str) -> bool:
    return topic == pattern or topic.startswith(pattern + ".")


class Owners:
    """Each entity's vault id and VM name, as last stated by its events (from `before`: what the
    entity had stated up to where the reading starts)."""

    def __init__(self, before: Callable[[str], tuple[str, str]] = lambda _: ("", "")) -> None:
        self.known: dict[str, tuple[str, str]] = {}
        self.before = before

    def of(self, n: Notification, event: Any) -> tuple[str, str]:
        entity = str(n.originator_id)
        known = self.known.get(entity) or self.before(entity)
        vault, name = self.known[entity] = stated_owner(event, known)
        return entry_vault(n.topic, entity, vault), name


def entry(n: Notification, event: Any, vault: str, vm_name: str) -> HistoryEntry:
    state = event.model_dump(mode="json")
    return HistoryEntry(
        position=n.id,
        time=event.timestamp,
        principal=event.principal,
        event_type=n.topic,
        entity_type=n.topic.split(".")[1],
        entity_id=str(n.originator_id),
        version=n.originator_version,
        vault_id=vault,
        vm_name=vm_name,
        data={k: v for k, v in state.items() if k not in COMMON},
    )


def history(
    app: Any,
    store: ReadStore,
    *,
    entity_id: UUID | None = None,
    vault_id: UUID | None = None,
    vm_name: str | None = None,
    event_type: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[HistoryEntry]:
    """Every stored event that matches all the filters given, oldest first (`start <= time < end`):
    those the audit index has reached found by it, the rest read one by one."""
    filters = Filters.of(entity_id, vault_id, vm_name, event_type, start, end)
    ensure_tables(store)
    indexed = store.position(AuditIndexFollower.name)
    found = _indexed(store, filters, indexed)
    for n in _read(app, sorted(found)):
        vault, name = found[n.id]
        yield entry(n, app.mapper.to_domain_event(n), vault, name)
    owners = Owners(lambda entity: _owner(store, entity))
    for n in notifications(app, start=indexed + 1):
        event = app.mapper.to_domain_event(n)
        vault, name = owners.of(n, event)
        if filters.admit(n, event, vault, name):
            yield entry(n, event, vault, name)


def scan(app: Any, **filters: Any) -> Iterator[HistoryEntry]:
    """The same entries read from the whole history, with no index: what `history` did before the
    index (bench/history.py's baseline, and the tests' reference)."""
    wanted = Filters.of(**filters)
    owners = Owners()
    for n in notifications(app):
        event = app.mapper.to_domain_event(n)
        vault, name = owners.of(n, event)
        if wanted.admit(n, event, vault, name):
            yield entry(n, event, vault, name)


def _indexed(store: ReadStore, f: Filters, upto: int) -> dict[int, tuple[str, str]]:
    """The matching events up to `upto` as the index has them: notification id -> (vault, VM name)."""
    where: list[str] = ["notification_id <= ?"]
    params: list[object] = [upto]
    for column, value in (("entity_id", f.entity_id), ("vault_id", f.vault_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if f.vm_name is not None:  # a qualified name matches the full name; a bare one, the name without qualifier
        where.append("vm_lower = ?" if "/" in f.vm_name else "vm_short = ?")
        params.append(f.vm_name)
    if f.event_type is not None:  # the topic itself, or one under it: "p." <= topic < "p/"
        where.append("(topic = ? OR (topic >= ? AND topic < ?))")
        params += [f.event_type, f.event_type + ".", f.event_type + "/"]
    if f.start is not None:
        where.append("time >= ?")
        params.append(ts(f.start))
    if f.end is not None:
        where.append("time < ?")
        params.append(ts(f.end))
    rows = store.fetch(
        f"SELECT notification_id, vault_id, vm_name FROM {store.t('audit_index')} WHERE {' AND '.join(where)}",
        tuple(params),
    )
    return {int(r["notification_id"]): (r["vault_id"], r["vm_name"]) for r in rows}


RUN_GAP = 64  # matching events this close are read in one range


def _read(app: Any, ids: list[int]) -> Iterator[Notification]:
    """The stored events `ids` (sorted), read range by range."""
    wanted = set(ids)
    runs: list[tuple[int, int]] = []
    for n in ids:
        if runs and n - runs[-1][1] <= RUN_GAP:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    for first, last in runs:
        position = first
        while position <= last:
            batch = app.recorder.select_notifications(start=position, limit=min(BATCH, last - position + 1), stop=last)
            if not batch:
                break
            yield from (n for n in batch if n.id in wanted)
            position = batch[-1].id + 1


def _owner(store: ReadStore, entity: str) -> tuple[str, str]:
    rows = store.fetch(f"SELECT vault_id, vm_name FROM {store.t('audit_owners')} WHERE entity_id = ?", (entity,))
    return (rows[0]["vault_id"], rows[0]["vm_name"]) if rows else ("", "")
