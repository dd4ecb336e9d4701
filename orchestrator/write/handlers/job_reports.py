"""Reports any job's worker sends: started, progress, done, failed. A report on an ended job is
ignored, so a task delivered twice adds nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.domain.base import Aggregate
from orchestrator.domain.job import Job
from orchestrator.domain.values import CheckResult, Operation
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


@handles(c.StartJob)
def start_job(app: Orchestrator, cmd: c.StartJob) -> bool:
    """The job started (once more, on a redelivery), with the prechecks its worker ran for it when
    there were any: one transaction instead of two."""
    job = app.open_job(cmd.job_id)
    if job is None:
        return False
    job.start(cmd.worker)
    app.save(*_checks_recorded(app, job, cmd.stage, cmd.results) if cmd.stage else [job])
    return True


@handles(c.RecordChecks)
def record_checks(app: Orchestrator, cmd: c.RecordChecks) -> None:
    job = app.open_job(cmd.job_id)
    if job is not None:
        app.save(*_checks_recorded(app, job, cmd.stage, cmd.results))


def _checks_recorded(app: Orchestrator, job: Job, stage: str, results: list[CheckResult]) -> list[Aggregate]:
    """Check results go on the job and on its VM's item (the item shows its latest): what to save."""
    job.record_checks(stage, results)
    changed: list[Aggregate] = [job]
    item = app.item_of(job.vm_key) if job.vm_key else None
    if item is not None:
        item.record_checks(stage, results)
        changed.append(item)
    return changed


@handles(c.RecordProgress)
def record_progress(app: Orchestrator, cmd: c.RecordProgress) -> None:
    job = app.open_job(cmd.job_id)
    if job is not None and cmd.bytes_done > job.bytes_done:
        job.progress(cmd.bytes_done, cmd.bytes_total)
        app.save(job)


@handles(c.CompleteJob)
def complete_job(app: Orchestrator, cmd: c.CompleteJob) -> None:
    job = app.open_job(cmd.job_id)
    if job is not None:
        job.complete(result=cmd.result, warnings=cmd.warnings)
        app.save(job)


@handles(c.FailJob)
def fail_job(app: Orchestrator, cmd: c.FailJob) -> None:
    job = app.open_job(cmd.job_id)
    if job is None:
        return
    job.fail(cmd.error_code, cmd.error_message)
    changed: list[Aggregate] = [job]
    item = app.item_of(job.vm_key) if job.vm_key else None
    if item is not None:
        if job.operation is Operation.REGISTER and item.job_id == job.id:
            item.registration_failed(job.id, cmd.error_code)
            changed.append(item)
        elif job.operation is Operation.CONFIGURE_PROTECTION and item.job_id == job.id:
            item.protection_failed(job.id, cmd.error_code)
            changed.append(item)
        elif job.operation is Operation.BACKUP and item.backup_job_id == job.id:
            item.backup_failed(job.id, cmd.error_code)
            changed.append(item)
    app.save(*changed)
