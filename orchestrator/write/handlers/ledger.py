"""The block ledger's commands: backups' leases and rescues, collection's mark, sweep and end. Each
names a job, whose vault's ledger it changes: a lease for a backup job that runs, a collection for a
retention job that runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from orchestrator.domain import Job
from orchestrator.domain.ledger import BlockLedger, ledger_id_for
from orchestrator.domain.values import Operation
from orchestrator.errors import DomainError
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


def _running(app: Orchestrator, job_id: UUID, operation: Operation) -> Job:
    job = app.get(job_id, Job)
    if job.operation is not operation or job.state.is_terminal:
        raise DomainError(
            "JobNotRunning",
            f"job {job_id} is not a running {operation.value} job ({job.operation.value}, {job.state.value})",
            field="job_id",
        )
    return job


def _ledger(app: Orchestrator, vault_id: UUID) -> BlockLedger:
    return app.find(ledger_id_for(vault_id), BlockLedger) or BlockLedger(vault_id=vault_id)


def _collection(ledger: BlockLedger) -> dict[str, Any] | None:
    return None if ledger.collection is None else ledger.collection.model_dump(mode="json")


@handles(c.TakeLease)
def take_lease(app: Orchestrator, cmd: c.TakeLease) -> dict[str, Any] | None:
    job = _running(app, cmd.job_id, Operation.BACKUP)
    ledger = _ledger(app, job.vault_id)
    ledger.take_lease(job.id, cmd.lease_id)
    app.save(ledger)
    return _collection(ledger)


@handles(c.ReleaseLease)
def release_lease(app: Orchestrator, cmd: c.ReleaseLease) -> None:
    job = app.get(cmd.job_id, Job)
    ledger = app.find(ledger_id_for(job.vault_id), BlockLedger)
    if ledger is not None and cmd.lease_id in ledger.leases:
        ledger.release_leases([cmd.lease_id], "released")
        app.save(ledger)


@handles(c.RescueBlocks)
def rescue_blocks(app: Orchestrator, cmd: c.RescueBlocks) -> bool:
    job = _running(app, cmd.job_id, Operation.BACKUP)
    ledger = _ledger(app, job.vault_id)
    kept = ledger.rescue(job.id, cmd.digests)
    app.save(ledger)
    return kept


@handles(c.MarkCollection)
def mark_collection(app: Orchestrator, cmd: c.MarkCollection) -> None:
    job = _running(app, cmd.job_id, Operation.RETENTION)
    ledger = _ledger(app, job.vault_id)
    ledger.mark(job.id, cmd.candidates, cmd.candidate_count, cmd.now)
    app.save(ledger)


@handles(c.TakeOverCollection)
def take_over_collection(app: Orchestrator, cmd: c.TakeOverCollection) -> dict[str, Any] | None:
    job = _running(app, cmd.job_id, Operation.RETENTION)
    ledger = _ledger(app, job.vault_id)
    if ledger.collection is None:
        return None
    running = app.find(ledger.collection.job_id, Job)
    ledger.take_over(job.id, running_job_ended=running is None or running.state.is_terminal)
    app.save(ledger)
    return _collection(ledger)


@handles(c.StartSweep)
def start_sweep(app: Orchestrator, cmd: c.StartSweep) -> list[str]:
    job = _running(app, cmd.job_id, Operation.RETENTION)
    ledger = _ledger(app, job.vault_id)
    waited = {ledger.job_of(lease) for lease in ledger.collection.waiting_for} if ledger.collection else set()
    ended = [j for j in sorted(waited) if (backup := app.find(j, Job)) is None or backup.state.is_terminal]
    waiting = ledger.start_sweep(job.id, ended)
    app.save(ledger)
    return [str(j) for j in waiting]


@handles(c.RecordSweepProgress)
def record_sweep_progress(app: Orchestrator, cmd: c.RecordSweepProgress) -> None:
    job = _running(app, cmd.job_id, Operation.RETENTION)
    ledger = _ledger(app, job.vault_id)
    ledger.progress(job.id, cmd.swept, cmd.removed, cmd.freed)
    app.save(ledger)


@handles(c.FinishCollection)
def finish_collection(app: Orchestrator, cmd: c.FinishCollection) -> dict[str, Any]:
    job = _running(app, cmd.job_id, Operation.RETENTION)
    ledger = _ledger(app, job.vault_id)
    summary = ledger.finish(job.id, cmd.now)
    app.save(ledger)
    return summary.model_dump(mode="json")
