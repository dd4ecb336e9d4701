"""The audit index: where each stored event is, by entity, vault, VM, type, principal and time, so that
`history()` and `backupctl audit log` read the events that match a filter, not the whole history.
Each event's vault and VM name are those its entity last stated (as orchestrator/audit/history.py's
`Owners` has them), kept per entity in `audit_owners`.

The index only says where to look: the entries themselves are read from the event store. A row
deleted or changed here would hide an event from the audit log, so `audit verify` rebuilds the index
from the events and names any difference (`index_mismatch`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from projections.base import ts
from projections.follower import Follower
from projections.store import ReadStore, Tx

TABLES = (
    (
        "CREATE TABLE IF NOT EXISTS {t}audit_index (notification_id BIGINT PRIMARY KEY, topic TEXT NOT NULL, "
        "entity_id TEXT NOT NULL, vault_id TEXT NOT NULL, vm_name TEXT NOT NULL, vm_lower TEXT NOT NULL, "
        "vm_short TEXT NOT NULL, principal TEXT NOT NULL, time TEXT NOT NULL)"
    ),
    "CREATE INDEX IF NOT EXISTS {i}audit_index_entity ON {t}audit_index (entity_id, notification_id)",
    "CREATE INDEX IF NOT EXISTS {i}audit_index_vault ON {t}audit_index (vault_id, notification_id)",
    "CREATE INDEX IF NOT EXISTS {i}audit_index_vm ON {t}audit_index (vm_short, notification_id)",
    "CREATE INDEX IF NOT EXISTS {i}audit_index_vm_full ON {t}audit_index (vm_lower, notification_id)",
    "CREATE INDEX IF NOT EXISTS {i}audit_index_topic ON {t}audit_index (topic, notification_id)",
    "CREATE INDEX IF NOT EXISTS {i}audit_index_time ON {t}audit_index (time, notification_id)",
    (
        "CREATE TABLE IF NOT EXISTS {t}audit_owners (entity_id TEXT PRIMARY KEY, vault_id TEXT NOT NULL, "
        "vm_name TEXT NOT NULL)"
    ),
)


def ensure_tables(store: ReadStore) -> None:
    store.create_tables(*(s.format(t=store.prefix + "rm_", i="rm_") for s in TABLES))


def stated_owner(event: Any, known: tuple[str, str]) -> tuple[str, str]:
    """The entity's vault and VM name after `event`, from what was `known` before it."""
    vault = str(getattr(event, "vault_id", None) or known[0])
    ref = getattr(event, "vm", None)
    name = ref.display_name if ref is not None else getattr(event, "vm_name", None) or known[1]
    return vault, name


def entry_vault(topic: str, entity_id: str, vault: str) -> str:
    """The vault an entry is of: a vault's own events are of that vault."""
    return entity_id if topic.startswith("backup.vault.") else vault


def short_name(vm_name: str) -> str:
    """A VM name lowered, without its qualifier: what a `vm` filter matches (with the full name)."""
    return vm_name.lower().rsplit("/", 1)[-1]


def index_row(notification_id: int, event: Any, owner: tuple[str, str]) -> tuple[Any, ...]:
    """The index's row for `event`, its entity's vault and VM name being `owner` after it."""
    topic, entity = type(event).TOPIC, str(event.originator_id)
    vault, name = owner
    return (
        notification_id,
        topic,
        entity,
        entry_vault(topic, entity, vault),
        name,
        name.lower(),
        short_name(name),
        event.principal,
        ts(event.timestamp),
    )


class AuditIndexFollower(Follower):
    name = "audit_index"

    def __init__(self, app: Any, store: ReadStore) -> None:
        super().__init__(app, store)
        ensure_tables(store)

    def process(self, event: Any, notification_id: int) -> None:  # pragma: no cover - batches only
        self.process_batch([(event, notification_id)], notification_id)

    def process_batch(self, events: Sequence[tuple[Any, int]], last_id: int) -> None:
        with self.store.transaction() as tx:
            if not self.store.advance(tx, self.name, last_id):
                return
            stated: dict[str, tuple[str, str]] = {}
            for event, notification_id in events:
                entity = str(event.originator_id)
                before = stated.get(entity) or self._owner(tx, entity)
                owner = stated[entity] = stated_owner(event, before)
                tx.execute(
                    f"INSERT INTO {self.store.t('audit_index')} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    index_row(notification_id, event, owner),
                )
            for entity, (vault, name) in stated.items():
                tx.execute(f"DELETE FROM {self.store.t('audit_owners')} WHERE entity_id = ?", (entity,))
                tx.execute(f"INSERT INTO {self.store.t('audit_owners')} VALUES (?, ?, ?)", (entity, vault, name))

    def _owner(self, tx: Tx, entity: str) -> tuple[str, str]:
        """What the entity last stated before this batch (read in the batch's transaction: another
        process may have indexed the batch before)."""
        tx.execute(f"SELECT vault_id, vm_name FROM {self.store.t('audit_owners')} WHERE entity_id = ?", (entity,))
        row = tx.one()
        return (row["vault_id"], row["vm_name"]) if row else ("", "")
