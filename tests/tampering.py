"""Tampering with the stored history by raw SQL, as someone with database access would, on SQLite
and PostgreSQL alike; and a small history to tamper with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import uuid4

from orchestrator import Client

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
        sql(f"INSERT INTO {table} ({columns}) VALUES (?, ?, ?, ?, ?)", (str(uuid4()), 1, topic, state, middle + 1))
        return [middle + 1]
    if kind == "reordered":  # two events swap places
        other = middle + 3
        sql(f"UPDATE {table} SET {id_column} = -1 WHERE {id_column} = ?", (middle,))
        sql(f"UPDATE {table} SET {id_column} = ? WHERE {id_column} = ?", (middle, other))
        sql(f"UPDATE {table} SET {id_column} = ? WHERE {id_column} = -1", (other,))
        return [middle, other]
    raise AssertionError(kind)
