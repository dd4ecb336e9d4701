"""RQ entry points. Each takes the worker's context (which the worker running it passes: the RQ
job names the task and its job id only) and a job id, does its work against the fabric and the
vault store, and reports back with a command. A second delivery of the same task finds its job ended and does
nothing; a task killed half-way leaves nothing visible and runs again from the start.

An outage of the event or read store met half-way is not the job's failure: the task waits until
the event store answers and runs its work again from the start, within the same delivery (so the
job's attempts do not grow: this delivery's `StartJob` is sent once). RQ's job timeout
(BACKUP_JOB_TIMEOUT) bounds the whole, waits included."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from orchestrator.domain import Job, Vault
from orchestrator.domain.values import CheckResult, Finding
from orchestrator.errors import OrchestratorError
from orchestrator.write import commands as c
from workers import restore as restore_work
from workers import work as jobs
from workers.context import WorkerContext
from workers.outages import OUTAGES, event_store_answers, is_outage
from workers.prechecks import Stage

log = logging.getLogger(__name__)
RECHECK_AFTER = 1.0  # seconds between checks of a store that did not answer


@dataclass
class _Delivery:
    """One RQ delivery of a job's task, however many times an outage makes it run the work again."""

    job_id: UUID
    attempts_before: int | None = None  # the job's attempts when this delivery first loaded it

    def start(self, ctx: WorkerContext, job: Job, command: c.StartJob) -> bool:
        """Send `StartJob` unless this delivery's is already stored (sent before an outage, even
        if its answer was lost then); False when the job has ended."""
        if self.attempts_before is None:
            self.attempts_before = job.attempts
        if job.attempts > self.attempts_before:
            return True
        return bool(ctx.report(command))


def _through_outages(ctx: WorkerContext, job_id: str, run: Callable[[_Delivery], str]) -> str:
    delivery = _Delivery(UUID(job_id))
    while True:
        try:
            return run(delivery)
        except OUTAGES as exc:
            if not is_outage(exc):
                raise
            log.warning("job %s: a store did not answer (%s); waiting for the event store", job_id, exc)
        _wait_for_event_store(ctx, job_id)


def _wait_for_event_store(ctx: WorkerContext, job_id: str) -> None:
    started = time.monotonic()
    while True:
        time.sleep(RECHECK_AFTER)
        if not event_store_answers(ctx.app):
            continue
        log.warning(
            "job %s: the event store answers (after %.0fs); running the job again", job_id, time.monotonic() - started
        )
        return


def _run(ctx: WorkerContext, job_id: str, work: Callable[[WorkerContext, Job], str]) -> str:
    """Start the job, run `work`, and turn an expected failure into the job's error code."""

    def once(delivery: _Delivery) -> str:
        job = ctx.app.get(delivery.job_id, Job)
        if job.state.is_terminal or not delivery.start(
            ctx, job, c.StartJob(job_id=job.id, worker=socket.gethostname())
        ):
            return "already ended"
        return _reporting_failure(ctx, job, lambda: work(ctx, job))

    return _through_outages(ctx, job_id, once)


def _run_checked(
    ctx: WorkerContext, job_id: str, stage: Stage, work: Callable[[WorkerContext, Job, list[Finding]], str]
) -> str:
    """`_run` for work that the VM's prechecks for `stage` must allow: they run first and are
    recorded with the start (one command); an error among them fails the job, and `work` gets
    their warnings."""

    def once(delivery: _Delivery) -> str:
        job = ctx.app.get(delivery.job_id, Job)
        if job.state.is_terminal:  # a second delivery: nothing to check
            return "already ended"
        results: list[CheckResult] = []
        unchecked: OrchestratorError | None = None
        try:
            results = jobs.precheck(ctx, job, stage)
        except OrchestratorError as exc:  # the VM gone from the fabric, say: the job fails once started
            if is_outage(exc):
                raise
            unchecked = exc
        if not delivery.start(
            ctx,
            job,
            c.StartJob(
                job_id=job.id, worker=socket.gethostname(), stage=stage if unchecked is None else "", results=results
            ),
        ):
            return "already ended"

        def checked_work() -> str:
            if unchecked is not None:
                raise unchecked
            return work(ctx, job, jobs.passed(results))

        return _reporting_failure(ctx, job, checked_work)

    return _through_outages(ctx, job_id, once)


def _reporting_failure(ctx: WorkerContext, job: Job, work: Callable[[], str]) -> str:
    """A started job's work: an expected failure ends the job with its error code (an outage is
    not one: it goes up, to run the work again once the store answers)."""
    try:
        return work()
    except OrchestratorError as exc:
        if is_outage(exc):
            raise
        ctx.report(c.FailJob(job_id=job.id, error_code=exc.code, error_message=exc.message))
        return exc.code


def discover(ctx: WorkerContext, job_id: str) -> str:
    """List the VMs of the vault's subscription; the orchestrator works out which are new."""

    def work(ctx: WorkerContext, job: Job) -> str:
        vault = ctx.app.get(job.vault_id, Vault)
        vms = ctx.fabric.list_vms(vault.subscription)
        ctx.report(c.RecordInventory(job_id=job.id, vms=[vm.ref for vm in vms]))
        return f"{len(vms)} VMs"

    return _run(ctx, job_id, work)


def register(ctx: WorkerContext, job_id: str) -> str:
    """Check the VM agent, then install or confirm the backup extension."""

    def work(ctx: WorkerContext, job: Job, checked: list[Finding]) -> str:
        version, warnings = jobs.with_extension(ctx, ctx.fabric.get_vm(job.vm_key), checked)
        ctx.report(c.CompleteRegistration(job_id=job.id, extension_version=version, warnings=warnings))
        return "registered"

    return _run_checked(ctx, job_id, "register", work)


def configure_protection(ctx: WorkerContext, job_id: str) -> str:
    """Check the VM again (it may have changed since registration), then apply the policy."""

    def work(ctx: WorkerContext, job: Job, checked: list[Finding]) -> str:
        _, warnings = jobs.with_extension(ctx, ctx.fabric.get_vm(job.vm_key), checked)
        ctx.report(c.CompleteProtection(job_id=job.id, protected_at=ctx.clock.now(), warnings=warnings))
        return "protected"

    return _run_checked(ctx, job_id, "protect", work)


def backup(ctx: WorkerContext, job_id: str) -> str:
    """Snapshot the VM's disks into the vault store; the recovery point appears once its manifest
    is committed and reported."""
    return _run_checked(ctx, job_id, "backup", jobs.run_backup)


def restore(ctx: WorkerContext, job_id: str) -> str:
    """Rebuild a recovery point's disks, verified block by block, as a new VM or into a directory."""
    return _run(ctx, job_id, restore_work.run_restore)


def restore_keys(ctx: WorkerContext, job_id: str) -> str:
    """Put an encrypted VM's BEK secret (and KEK key) back into a key vault from a recovery point."""
    return _run(ctx, job_id, jobs.run_restore_keys)


def retention(ctx: WorkerContext, job_id: str) -> str:
    """Expire recovery points past their retention, drop their manifests, collect unused blocks."""
    return _run(ctx, job_id, jobs.run_retention)


def verify(ctx: WorkerContext, job_id: str) -> str:
    """Read recovery points back and check every block."""
    return _run(ctx, job_id, jobs.run_verify)
