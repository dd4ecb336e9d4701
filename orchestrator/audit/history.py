"""The event history, filtered for an audit: by entity, vault, VM, event type and time. Read from
the event store itself (not a read model), so it shows exactly what is stored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from orchestrator.audit.chain import notifications

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


def history(
    app: Any,
    *,
    entity_id: UUID | None = None,
    vault_id: UUID | None = None,
    vm_name: str | None = None,
    event_type: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[HistoryEntry]:
    """Every stored event that matches all the filters given, oldest first (`start <= time < end`)."""
    owners: dict[str, tuple[str, str]] = {}  # entity -> (vault id, VM name) as last stated by its events
    pattern = event_type_pattern(event_type) if event_type else None
    vm = vm_name.lower() if vm_name else None
    for n in notifications(app):
        event = app.mapper.to_domain_event(n)
        vault, name = owners.get(str(n.originator_id), ("", ""))
        vault = str(getattr(event, "vault_id", None) or vault)
        ref = getattr(event, "vm", None)
        name = ref.display_name if ref is not None else getattr(event, "vm_name", None) or name
        owners[str(n.originator_id)] = (vault, name)
        if n.topic.startswith("backup.vault."):
            vault = str(n.originator_id)
        if entity_id is not None and str(n.originator_id) != str(entity_id):
            continue
        if vault_id is not None and vault != str(vault_id):
            continue
        if vm is not None and vm not in (name.lower(), name.lower().rsplit("/", 1)[-1]):
            continue
        if pattern is not None and not (n.topic == pattern or n.topic.startswith(pattern + ".")):
            continue
        if (start is not None and event.timestamp < start) or (end is not None and event.timestamp >= end):
            continue
        state = event.model_dump(mode="json")
        yield HistoryEntry(
            position=n.id,
            time=event.timestamp,
            principal=event.principal,
            event_type=n.topic,
            entity_type=n.topic.split(".")[1],
            entity_id=str(n.originator_id),
            version=n.originator_version,
            vault_id=vault,
            vm_name=name,
            data={k: v for k, v in state.items() if k not in COMMON},
        )
