"""What a task needs (the application, the fabric, who it acts as), found without arguments.

Embedded worker threads are bound to their process's runtime; a distributed `rq worker` builds
its own from the BACKUP_* environment on first use, once per process.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from uuid import UUID

from orchestrator.application import Orchestrator
from orchestrator.clock import Clock
from orchestrator.commands import Command
from orchestrator.fabric import Fabric
from projections.store import ReadStore
from workers.keys import KeyProtector
from workers.vaultstore import VaultStore


@dataclass
class WorkerContext:
    app: Orchestrator
    fabric: Fabric
    principal: str
    vault_store_root: Path
    clock: Clock
    keys: KeyProtector
    open_read_store: Callable[[], ReadStore]
    own_dirs: tuple[Path, ...] = ()  # the deployment's own directories: never a restore's target

    @cached_property
    def read_store(self) -> ReadStore:
        """Opened on first use: few tasks query a read model, and a distributed worker's work horse
        would otherwise open a database connection per job for nothing."""
        return self.open_read_store()

    def vault_store(self, vault_id: UUID) -> VaultStore:
        return VaultStore(self.vault_store_root / str(vault_id))

    def report(self, command: Command) -> Any:
        """Send a command through the same code path as an operator's."""
        return self.app.handle(command, self.principal)


_bound = threading.local()
_per_process: dict[int, WorkerContext] = {}
_lock = threading.Lock()
_inherited: tuple[int, WorkerContext] | None = None  # (the rq worker process, the context its horses use)


def inherit(context: WorkerContext) -> None:
    """In an rq worker process: the context its forked work horses use instead of building their own
    (never this process itself, which does not run tasks)."""
    global _inherited
    _inherited = (os.getpid(), context)
    atexit.register(_close_inherited, os.getpid())


def _close_inherited(pid: int) -> None:
    """At the worker process's exit (horses leave by `os._exit`), while the modules are all there."""
    if _inherited is not None and _inherited[0] == pid == os.getpid():
        _inherited[1].app.close()


def bind(context: WorkerContext | None) -> None:
    _bound.context = context


def current() -> WorkerContext:
    context: WorkerContext | None = getattr(_bound, "context", None)
    if context is not None:
        return context
    with _lock:
        pid = os.getpid()
        if pid not in _per_process:
            if _inherited is not None and _inherited[0] != pid:  # a work horse of the process that built it
                _per_process[pid] = _inherited[1]
            else:
                from orchestrator.bootstrap import worker_context_from_env

                _per_process[pid] = worker_context_from_env()
        return _per_process[pid]
