"""`backupctl`: a thin layer over the client. Tables by default, `--json` for machines."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.entry.cli import access as cli_access  # noqa: F401  (their commands register on import)
from orchestrator.entry.cli import audit as cli_audit  # noqa: F401
from orchestrator.entry.cli import backups as cli_backups
from orchestrator.entry.cli.common import (
    JOB_COLUMNS,
    AsOfTime,
    Json,
    Subscription,
    Wait,
    app,
    emit,
    err,
    fabric_app,
    out,
    read,
    refuse,
    run,
    serve_app,
    vault_app,
    vault_ref,
)
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.entry.client import Client
    from orchestrator.entry.queries import ReadModels
    from orchestrator.entry.reader import Reader


@vault_app.command("create")
def vault_create(
    name: str,
    region: Annotated[str, typer.Option(help="Region, e.g. japaneast.")],
    resource_group: Annotated[str, typer.Option("--resource-group", "-g")],
    subscription: Subscription = "default",
    kind: Annotated[str, typer.Option(help="recovery_services or backup_vault (classic).")] = "recovery_services",
    replication: Annotated[str, typer.Option(help="geo or local.")] = "geo",
    as_json: Json = False,
) -> None:
    """Create a vault."""
    run(
        lambda c: emit(
            {"vault_id": c.create_vault(name, region, resource_group, subscription, kind, replication)}, as_json
        )
    )


@vault_app.command("list")
def vault_list(
    subscription: Annotated[str | None, typer.Option("--subscription", "-s")] = None,
    as_json: Json = False,
    as_of: AsOfTime = None,
) -> None:
    """List vaults."""
    read(
        as_of,
        lambda c, v: emit(
            v.vaults(subscription),
            as_json,
            ("name", "subscription", "region", "kind", "replication", "soft_delete", "immutability", "vault_id"),
        ),
    )


@vault_app.command("set-replication")
def vault_set_replication(vault: str, replication: str, subscription: Subscription = "default") -> None:
    """Set storage replication (geo or local); allowed until the first item is protected."""
    run(lambda c: c.set_replication(vault_ref(c, vault, subscription), replication))


@vault_app.command("delete")
def vault_delete(vault: str, subscription: Subscription = "default") -> None:
    """Delete an empty vault (an owner's); its history stays and its name is not made again."""
    run(lambda c: c.delete_vault(vault_ref(c, vault, subscription)))


@vault_app.command("set-soft-delete")
def vault_set_soft_delete(
    vault: str,
    state: Annotated[str, typer.Argument(help="enabled, disabled or always_on (cannot be turned off again).")],
    retention_days: Annotated[int, typer.Option(help="How long deleted backup data is kept (14-180).")] = 14,
    subscription: Subscription = "default",
) -> None:
    """Set soft delete: deleted backup data is kept for its window before the purge."""
    run(lambda c: c.set_soft_delete(vault_ref(c, vault, subscription), state, retention_days))


@vault_app.command("set-immutability")
def vault_set_immutability(
    vault: str,
    state: Annotated[str, typer.Argument(help="disabled, enabled or locked (cannot be undone).")],
    subscription: Subscription = "default",
) -> None:
    """Set immutability: no deleting or shortening of backup data while enabled or locked."""
    run(lambda c: c.set_immutability(vault_ref(c, vault, subscription), state))


@vault_app.command("check")
def vault_check(vault: str, subscription: Subscription = "default", as_json: Json = False) -> None:
    """Check that every manifest's blocks exist and hash right; report orphan blocks."""
    cli_backups.vault_check(vault, subscription, as_json)


@vault_app.command("collection")
def vault_collection(vault: str, subscription: Subscription = "default", as_json: Json = False) -> None:
    """Show the vault's block collection: backups holding leases, the one under way, the last."""
    run(lambda c: emit(c.collection(vault_ref(c, vault, subscription)), as_json))


@app.command()
def discover(vault: str, subscription: Subscription = "default", as_json: Json = False) -> None:
    """Discover the VMs of the vault's region that are not registered anywhere."""

    def action(c: Client) -> None:
        job = c.wait(c.discover(vault_ref(c, vault, subscription)))
        emit(job.result if job.status != "failed" else {"error": f"[{job.error_code}] {job.error_message}"}, as_json)

    run(action)


@app.command()
def register(
    vm_names: list[str],
    vault: Annotated[str, typer.Option("--vault", "-v")],
    subscription: Subscription = "default",
    wait: Wait = True,
    as_json: Json = False,
) -> None:
    """Register VMs in a vault (one job each; `cloud-service/name` tells classic VMs apart)."""

    def action(c: Client) -> None:
        job_ids = c.register(vault_ref(c, vault, subscription), vm_names)
        rows = c.wait_all(job_ids) if wait else [c.job(j) for j in job_ids]
        emit(rows, as_json, (*JOB_COLUMNS, "error_message"))

    run(action)


@app.command()
def unregister(
    vm_name: str,
    vault: Annotated[str, typer.Option("--vault", "-v")],
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """Unregister a VM from its vault."""
    run(lambda c: emit(c.job(c.unregister(vault_ref(c, vault, subscription), vm_name)), as_json, JOB_COLUMNS))


JOBS_SHOWN = 100  # `backupctl jobs` without --limit or --all


@app.command()
def jobs(
    status: Annotated[str | None, typer.Option(help="in_progress, completed, completed_with_warnings, failed")] = None,
    operation: Annotated[str | None, typer.Option(help="discovery, register, unregister, ...")] = None,
    start: Annotated[datetime | None, typer.Option(help="Jobs started at or after (UTC).")] = None,
    end: Annotated[datetime | None, typer.Option(help="Jobs started before (UTC).")] = None,
    vault: Annotated[str | None, typer.Option("--vault", "-v")] = None,
    limit: Annotated[int, typer.Option(help="Show the newest this many.", min=1, max=100_000)] = JOBS_SHOWN,
    show_all: Annotated[bool, typer.Option("--all", help="Show every job that matches.")] = False,
    subscription: Subscription = "default",
    as_json: Json = False,
    as_of: AsOfTime = None,
) -> None:
    """List jobs, newest first (the newest 100 unless --limit or --all)."""

    def show(c: Client | Reader, v: ReadModels) -> None:
        vault_id = vault_ref(c, vault, subscription) if vault else None
        rows = v.jobs(status, operation, start, end, vault_id, None if show_all else limit + 1)
        more = not show_all and len(rows) > limit
        emit(rows[:limit] if more else rows, as_json, JOB_COLUMNS)
        if more and not as_json:
            err.print(f"the newest {limit} jobs shown; more match: --limit N or --all")

    read(as_of, show)


@app.command()
def wait(job_ids: list[str], timeout: float = 300.0, as_json: Json = False) -> None:
    """Wait for jobs to end and show them."""
    run(lambda c: emit(c.wait_all(job_ids, timeout), as_json, (*JOB_COLUMNS, "error_message")))


@app.command()
def items(vault: str, subscription: Subscription = "default", as_json: Json = False, as_of: AsOfTime = None) -> None:
    """The VMs of a vault and their status."""
    read(
        as_of,
        lambda c, v: emit(
            v.protected_items(vault_ref(c, vault, subscription)),
            as_json,
            ("vm_name", "status", "region", "deployment_model", "extension_version", "purge_at"),
        ),
    )


@app.command()
def health(as_json: Json = False) -> None:
    """Check the event store, the queue and the read models; exit 1 when one is not healthy."""
    try:
        from orchestrator.entry.client import Client

        with Client(start_services=False) as client:
            report = client.health()
    except OrchestratorError as exc:
        report = {"healthy": False, "error": f"[{exc.code}] {exc.message}"}
    emit(report, as_json)
    if not report["healthy"]:
        raise typer.Exit(1)


@fabric_app.command("init")
def fabric_init(directory: Path) -> None:
    """Write a sample fabric: a dozen VMs in two regions, with small real disk images."""
    from orchestrator.fabric.sample import write_sample_fabric

    path = write_sample_fabric(directory)
    out.print(f"wrote {path}; use it with BACKUP_FABRIC={path}")


@app.command()
def demo(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to keep the demo's data (default: a new temporary directory).")
    ] = None,
) -> None:
    """Run the operator flow on the embedded default: sample fabric, vault, discovery, registration."""
    from orchestrator.entry.demo import run_demo

    try:
        run_demo(directory, out)
    except OrchestratorError as exc:
        raise typer.Exit(refuse(exc)) from None


@serve_app.command("dispatcher")
def serve_dispatcher() -> None:
    """Follow the event log and enqueue work; reconcile jobs whose worker was lost."""
    from orchestrator.runtime.services import serve

    serve("dispatcher")


@serve_app.command("projections")
def serve_projections() -> None:
    """Follow the event log and keep the read models up to date."""
    from orchestrator.runtime.services import serve

    serve("projections")


@serve_app.command("scheduler")
def serve_scheduler() -> None:
    """Trigger due scheduled backups and the daily retention job of each vault."""
    from orchestrator.runtime.services import serve

    serve("scheduler")


def main() -> None:
    app()  # CodedGroup: every refusal is `error [Code] message`, exit 2
