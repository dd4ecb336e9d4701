"""Tampering with the stored history by raw SQL, as someone with database access would, on SQLite
and PostgreSQL alike; and a small history to tamper with."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid4

from orchestrator import Client
from orchestrator.write import sealing

Sql = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
KINDS = ("modified", "deleted", "inserted", "reordered")


def small_history(client: Client) -> int:
    """A vault, discovery, registrations, protection and two backups; returns the last position."""
    vault = client.create_vault("vault-audit", "japaneast", "rg")
    client.wait(client.discover(vault))
    vms = ["vm01", "vm02", "vm03", "vm04"]
    client.wait_all(client.register(vault, vms))
    client.wait_all(client.protect(vault, vms))
    client.wait_all([client.backup_now(vault, vm) for vm in vms[:2]])
    head = client._runtime.app.recorder.max_notification_id() or 0
    assert client._runtime.store.wait(["audit_chain"], head, 30)
    return head


def tamper(kind: str, sql: Sql, table: str, id_column: str, middle: int) -> list[int]:
    """Tamper at `middle`; returns the notification ids `audit verify` must name."""
    if kind == "modified":
        [(state,)] = sql(f"SELECT state FROM {table} WHERE {id_column} = ?", (middle,))
        changed = bytes(state).replace(b"alice", b"mallo")
        assert changed != bytes(state)
        sql(f"UPDATE {table} SET state = ? WHERE {id_column} = ?", (changed, middle))
        return [middle]
    if kind == "deleted":
        sql(f"DELETE FROM {table} WHERE {id_column} = ?", (middle,))
        return [middle]
    if kind == "inserted":  # into the past: make room after `middle` and forge an event there
        [(topic, state)] = sql(f"SELECT topic, state FROM {table} WHERE {id_column} = ?", (middle,))
        sql(f"UPDATE {table} SET {id_column} = {id_column} + 1000000 WHERE {id_column} > ?", (middle,))
        sql(f"UPDATE {table} SET {id_column} = {id_column} - 999999 WHERE {id_column} > 1000000", ())
        columns = f"originator_id, originator_version, topic, state, {id_column}"
        new = uuid4()
        sql(
            f"INSERT INTO {table} ({columns}) VALUES (?, ?, ?, ?, ?)",
            (stored_id(new, id_column), 1, topic, forged_state(state, new, 1), middle + 1),
        )
        return [middle + 1]
    if kind == "reordered":  # two events swap places
        other = middle + 3
        sql(f"UPDATE {table} SET {id_column} = -1 WHERE {id_column} = ?", (middle,))
        sql(f"UPDATE {table} SET {id_column} = ? WHERE {id_column} = ?", (middle, other))
        sql(f"UPDATE {table} SET {id_column} = ? WHERE {id_column} = -1", (other,))
        return [middle, other]
    raise AssertionError(kind)


def stored_id(originator_id: UUID, id_column: str) -> str:
    """An originator id as the library stores it: 32 hex digits on SQLite (whose events table's
    notification id is its `rowid`), the uuid's text on PostgreSQL."""
    return originator_id.hex if id_column == "rowid" else str(originator_id)


def forged_state(state: bytes, originator_id: UUID, version: int) -> bytes:
    """Another event's (plain JSON, sealed or not) state under a new originator and version, written
    the way the product writes it but for the seal, which needs the audit key: a forgery whose columns
    agree with its state."""
    data = json.loads(sealing.unsealed(bytes(state)))
    data.update(originator_id=str(originator_id), originator_version=version)
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def append_forged(sql: Sql, table: str, id_column: str, template: int) -> int:
    """A forged event stored after the last one: event `template`'s state under a new originator
    (version 1). Returns its notification id."""
    [(topic, state)] = sql(f"SELECT topic, state FROM {table} WHERE {id_column} = ?", (template,))
    new = uuid4()
    sql(
        f"INSERT INTO {table} (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
        (stored_id(new, id_column), 1, topic, forged_state(state, new, 1)),
    )
    [(last,)] = sql(f"SELECT MAX({id_column}) FROM {table}", ())
    return int(last)


DASHED = (
    "originator_id = substr(originator_id, 1, 8) || '-' || substr(originator_id, 9, 4) || '-' "
    "|| substr(originator_id, 13, 4) || '-' || substr(originator_id, 17, 4) || '-' || substr(originator_id, 21)"
)
# Ways to leave one stored event row malformed by raw SQL: an assignment for `UPDATE ... SET`, and
# the column `audit verify` must name. SQLite stores whatever it is given in any column.
MALFORMED_SQLITE: dict[str, tuple[str, str]] = {
    "state_as_text": ("state = CAST(state AS TEXT)", "state"),
    "state_null": ("state = NULL", "state"),
    "state_not_json": ("state = CAST('not json' AS BLOB)", "state"),
    "state_an_integer": ("state = 42", "state"),
    "topic_unknown": ("topic = 'backup.no_such.event'", "topic"),
    "topic_null": ("topic = NULL", "topic"),
    "topic_as_blob": ("topic = CAST(topic AS BLOB)", "topic"),
    "originator_id_not_a_uuid": ("originator_id = 'not-a-uuid'", "originator_id"),
    "originator_id_dashed": (DASHED, "originator_id"),
    "originator_id_null": ("originator_id = NULL", "originator_id"),
    "originator_version_null": ("originator_version = NULL", "originator_version"),
    "originator_version_not_an_integer": ("originator_version = 'seven'", "originator_version"),
    "originator_version_not_the_states": ("originator_version = originator_version + 1000", "originator_version"),
}
# What PostgreSQL's typed, NOT NULL columns still let one write.
MALFORMED_POSTGRES: dict[str, tuple[str, str]] = {
    "state_null": ("state = NULL", "state"),
    "state_not_json": ("state = convert_to('not json', 'UTF8')", "state"),
    "topic_unknown": ("topic = 'backup.no_such.event'", "topic"),
    "topic_null": ("topic = NULL", "topic"),
    "originator_version_not_the_states": ("originator_version = originator_version + 1000", "originator_version"),
    "originator_id_not_the_states": ("originator_id = gen_random_uuid()", "originator_id"),
}
