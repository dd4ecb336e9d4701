"""What a task needs (the application, the fabric, who it acts as), handed to it by the worker
that runs it: each kind of worker builds one when it starts (orchestrator/runtime/bootstrap.py) and passes
it to every task it runs (workers/queues.py's `TaskJob.func`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from orchestrator.clock import Clock
from orchestrator.config import DIRECTORY_BLOCK_SIZE, S3Location
from orchestrator.fabric import Fabric
from orchestrator.write.application import Orchestrator
from orchestrator.write.commands import Command
from projections.store import ReadStore
from workers.keys import KeyProtector
from workers.vaultstore import VaultStore, open_vault_store


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
    s3: S3Location | None = None  # the vault stores' object storage; None: directories under vault_store_root
    vault_kek: bytes = b""  # the vault stores' key-encryption key (workers/vaultcrypto.py: vault_kek)
    collection_wait: float = 60.0  # seconds a collection waits for the backups running at its mark
    block_size: int = DIRECTORY_BLOCK_SIZE  # what backups cut disks into (BACKUP_BLOCK_SIZE)
    opened_read_store: ReadStore | None = field(default=None, init=False)

    @property
    def read_store(self) -> ReadStore:
        """Opened on first use: few tasks query a read model."""
        if self.opened_read_store is None:
            self.opened_read_store = self.open_read_store()
        return self.opened_read_store

    def close(self) -> None:
        """Close the application and the read store (if opened): for the worker that built them."""
        if self.opened_read_store is not None:
            self.opened_read_store.close()
            self.opened_read_store = None
        self.app.close()

    def vault_store(self, vault_id: UUID) -> VaultStore:
        return open_vault_store(self.vault_store_root, self.s3, vault_id, self.vault_kek)

    def report(self, command: Command) -> Any:
        """Send a command through the same code path as an operator's."""
        return self.app.handle(command, self.principal)
