"""A vault with the embedded workers stopped, for tests that play its backups and its collector
step by step against the real block ledger (orchestrator/domain/ledger.py) in the event store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from orchestrator import Client
from orchestrator.domain import Job
from orchestrator.write import commands as c
from tests.helpers import fabric_with
from workers import collection
from workers.collection import BackupLease
from workers.context import WorkerContext
from workers.vaultstore import VaultStore


@dataclass
class Playing:
    client: Client
    ctx: WorkerContext
    vault: str
    store: VaultStore
    env: dict[str, str]  # the settings of the same deployment, for the CLI

    def started(self, job_id: str) -> Job:
        self.ctx.report(c.StartJob(job_id=UUID(job_id), worker="test"))
        return self.client._runtime.app.get(UUID(job_id), Job)

    def retention_job(self) -> Job:
        return self.started(self.client.run_retention(self.vault))

    def collect(self) -> dict[str, Any]:
        """One collection, as a retention job runs it (its job then completes)."""
        job = self.retention_job()
        outcome = collection.collect(self.ctx, job, self.store)
        self.ctx.report(c.CompleteJob(job_id=job.id, result=outcome))
        return outcome

    def lease(self, vm: str = "vm01") -> BackupLease:
        """A backup job of `vm`, started, and its lease (to enter), on a store of its own."""
        job = self.started(self.client.backup_now(self.vault, vm))
        return BackupLease(self.ctx, job, self.ctx.vault_store(job.vault_id))

    def ended(self, job: Job) -> None:
        self.ctx.report(c.FailJob(job_id=job.id, error_code="Test", error_message="ended by the test"))

    def ledger(self) -> dict[str, Any]:
        return self.client.collection(self.vault)


@contextmanager
def playing(tmp_path: Path, **settings: Any) -> Iterator[Playing]:
    """vm01..vm04 protected in a vault; then the embedded workers stop (the test plays them). A
    collection waits for no backup unless `collection_wait` says otherwise."""
    settings.setdefault("collection_wait", 0)
    fabric = fabric_with(tmp_path)
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_VAULT_STORE": str(tmp_path / "vaults"),
        "COLUMNS": "200",
    }
    with Client(data_dir=tmp_path / "data", fabric=fabric, vault_store=tmp_path / "vaults", **settings) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        vms = ["vm01", "vm02", "vm03", "vm04"]
        client.wait_all(client.register(vault, vms))
        client.wait_all(client.protect(vault, vms))
        client._runtime.close_workers()
        ctx = client._runtime.worker_context()
        yield Playing(client, ctx, vault, ctx.vault_store(UUID(vault)), env)
