"""RQ entry points. Each takes a job id, does its work against the fabric, and reports back with
a command. A second delivery of the same task finds its job ended and does nothing."""

from __future__ import annotations

import socket
from uuid import UUID

from orchestrator import commands as c
from orchestrator.domain import Job, Vault
from orchestrator.domain.values import Finding
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.inventory import PowerState
from workers import context
from workers.checks import agent_problem


def _begin(job_id: str) -> tuple[context.WorkerContext, Job] | None:
    ctx = context.current()
    started = ctx.report(c.StartJob(job_id=UUID(job_id), worker=socket.gethostname()))
    return (ctx, ctx.app.get(UUID(job_id), Job)) if started else None


def discover(job_id: str) -> str:
    """List the VMs of the vault's subscription; the orchestrator works out which are new."""
    begun = _begin(job_id)
    if begun is None:
        return "already ended"
    ctx, job = begun
    vault = ctx.app.get(job.vault_id, Vault)
    try:
        vms = ctx.fabric.list_vms(vault.subscription)
    except OrchestratorError as exc:
        ctx.report(c.FailJob(job_id=job.id, error_code=exc.code, error_message=exc.message))
        return exc.code
    ctx.report(c.RecordInventory(job_id=job.id, vms=[vm.ref for vm in vms]))
    return f"{len(vms)} VMs"


def register(job_id: str) -> str:
    """Check the VM agent, then install or confirm the backup extension."""
    begun = _begin(job_id)
    if begun is None:
        return "already ended"
    ctx, job = begun
    try:
        vm = ctx.fabric.get_vm(job.vm_key)
        problem = agent_problem(vm)
        if problem is not None:
            ctx.report(c.FailJob(job_id=job.id, error_code=problem.code, error_message=problem.message))
            return problem.code
        warnings: list[Finding] = []
        version = ctx.fabric.extension_version(job.vm_key)
        if version is None and vm.spec.power_state is PowerState.RUNNING:
            version = ctx.fabric.install_extension(job.vm_key)
        elif version is None:
            warnings.append(Finding(
                code="ExtensionPendingVmStart",
                message=f"VM {vm.ref.display_name} is {vm.spec.power_state.value}: the backup "
                "extension will be installed when it next runs; until then backups are offline "
                "(crash-consistent).",
            ))
    except OrchestratorError as exc:
        ctx.report(c.FailJob(job_id=job.id, error_code=exc.code, error_message=exc.message))
        return exc.code
    ctx.report(c.CompleteRegistration(job_id=job.id, extension_version=version or "", warnings=warnings))
    return "registered"
