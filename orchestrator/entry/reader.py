"""A read command's quick path: the read models as they stand, opened without the application, the
aggregates or any service, when they are current (every read model at the event log's head, its
tables at this code's version). When they trail, or when anything cannot be told from the read store
alone (a vault it does not list), the answer is the client's, which catches them up and refuses what
it refuses (`Stale`). It needs neither the event cipher key nor the vault key: it reads no event, only
the event log's newest position. On the embedded default it holds the data dir's lock, as the client
does, for as long as it reads."""

from __future__ import annotations

import os
import sqlite3
from contextlib import ExitStack
from typing import Self

from eventsourcing.persistence import PersistenceError

from orchestrator.config import Settings, load_settings
from orchestrator.domain.names import vault_id_for
from orchestrator.entry.edge import strict
from orchestrator.entry.queries import ReadModels
from orchestrator.errors import ServiceUnavailableError
from orchestrator.runtime.stores import event_log_head, open_read_store, take_data_dir
from projections import queries
from projections.names import NAMES, VERSIONS
from projections.store import ReadStore

UNOPENED = (PersistenceError, sqlite3.Error, OSError, ServiceUnavailableError)


class Stale(Exception):
    """The read models cannot answer this alone: ask the client."""


class Reader(ReadModels):
    def __init__(self, store: ReadStore, lock: int | None) -> None:
        self._store = store
        self._lock = lock

    def _read_store(self) -> ReadStore:
        return self._store

    @strict
    def vault_id(self, name: str, subscription: str = "default") -> str:
        """The id of the vault called `name` in `subscription`, when the vaults read model lists it;
        `Stale` otherwise (a deleted vault's history, or VaultNotFound, is the event store's to tell)."""
        vault_id = str(vault_id_for(subscription, name))
        if queries.vault(self._store, vault_id) is None:
            raise Stale(vault_id)
        return vault_id

    def close(self) -> None:
        self._store.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def open_reader(settings: Settings | None = None) -> Reader | None:
    """The read models, when they are current and this process can open them alone; None when the
    client must answer (settings naming an API service, a data dir not made yet, a read model behind
    or at another version, a store that does not open: the client says why, with its code)."""
    settings = settings or load_settings()
    if settings.url is not None:
        return None
    if settings.event_store == "sqlite" and not (settings.data_dir / "readmodels.sqlite").exists():
        return None
    with ExitStack() as undo:  # whatever is open is closed again unless a reader is returned
        lock = take_data_dir(settings) if settings.event_store == "sqlite" else None  # DataDirInUse, as the client
        if lock is not None:
            undo.callback(os.close, lock)
        try:
            store = open_read_store(settings)
            undo.callback(store.close)
            if not _current(settings, store):
                return None
        except UNOPENED:
            return None  # the client opens the stores, and says with its code what it cannot open
        undo.pop_all()
        return Reader(store, lock)


def _current(settings: Settings, store: ReadStore) -> bool:
    names = list(NAMES)
    if store.versions(names) != VERSIONS:
        return False
    head = event_log_head(settings)
    positions = store.positions(names)
    return all(positions.get(name, 0) >= head for name in names)
