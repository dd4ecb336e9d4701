"""The event history, filtered for an audit: by entity, vault, VM, event type and time. Read from
the event store itself (not a read model), so it shows exactly what is stored."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification
from pydantic import BaseModel

from orchestrator.audit.verify import notifications

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
    lowered = name.lower()
    return lowered, lowered.rsplit("/", 1)[-1]


def _of_type(topic: str, pattern: str) -> bool:
    return topic == pattern or topic.startswith(pattern + ".")


class Owners:
    """Each entity's vault id and VM name, as last stated by its events."""

    def __init__(self) -> None:
        self.known: dict[str, tuple[str, str]] = {}

    def of(self, n: Notification, event: Any) -> tuple[str, str]:
        vault, name = self.known.get(str(n.originator_id), ("", ""))
        vault = str(getattr(event, "vault_id", None) or vault)
        ref = getattr(event, "vm", None)
        name = ref.display_name if ref is not None else getattr(event, "vm_name", None) or name
        self.known[str(n.originator_id)] = (vault, name)
        return (str(n.originator_id) if n.topic.startswith("backup.vault.") else vault), name


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
    *,
    entity_id: UUID | None = None,
    vault_id: UUID | None = None,
    vm_name: str | None = None,
    event_type: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[HistoryEntry]:
    """Every stored event that matches all the filters given, oldest first (`start <= time < end`)."""
    filters = Filters(
        str(entity_id) if entity_id is not None else None,
        str(vault_id) if vault_id is not None else None,
        vm_name.lower() if vm_name else None,
        event_type_pattern(event_type) if event_type else None,
        start,
        end,
    )
    owners = Owners()
    for n in notifications(app):
        event = app.mapper.to_domain_event(n)
        vault, name = owners.of(n, event)
        if filters.admit(n, event, vault, name):
            yield entry(n, event, vault, name)
