"""`backupctl audit ...` (the event history, its replay and its hash chain) and `backupctl dashboard`."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from orchestrator.entry.cli.common import (
    AsOfTime,
    Json,
    Subscription,
    app,
    emit,
    err,
    export,
    out,
    read,
    run,
    vault_ref,
)
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.audit.verify import Report
    from orchestrator.entry.client import Client
    from orchestrator.entry.queries import ReadModels
    from orchestrator.entry.reader import Reader
    from projections.dashboard_query import Dashboard, VaultDashboard

audit_app = typer.Typer(no_args_is_help=True, help="Audit: history, replay, tamper evidence.")
app.add_typer(audit_app, name="audit")


def _expectation(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    position, _, digest = text.partition(":")
    if not position.isdigit() or len(digest) != 64:
        raise OrchestratorError(
            "CommandInvalid", "--expect takes POSITION:HASH as `audit verify` printed it", field="expect"
        )
    return int(position), digest


@audit_app.command("verify")
def audit_verify(
    expect: Annotated[str | None, typer.Option(help="POSITION:HASH kept from an earlier run.")] = None,
    chain_only: Annotated[
        bool,
        typer.Option("--chain-only", help="Only the hash chain: do not compare the read models with their replay."),
    ] = False,
    as_json: Json = False,
) -> None:
    """Recompute the hash chain over the stored history; name every changed, deleted, inserted or
    reordered event, a chain table cut short and every stored row that does not read back; then
    compare every read model with its replay from the events. Exits 1 when it finds one. Starts no
    services: the chain is not extended while (or by) checking it."""

    def action(c: Client) -> None:
        with Progress(console=err, transient=True, disable=as_json) as bar:
            task = bar.add_task("verifying", total=None)
            report = c.audit_verify(
                _expectation(expect),
                lambda done, total: bar.update(task, completed=done, total=total),
                chain_only=chain_only,
            )
        if as_json:
            out.print_json(data={**asdict(report), "clean": report.clean})
        else:
            _print_verified(report)
        if not report.clean:
            raise typer.Exit(1)

    run(action, services=False)


def _print_verified(report: Report) -> None:
    out.print(
        f"checked {report.checked} events, {report.chained} chained, {report.unchained} not yet chained "
        f"(the chain had reached {report.reach}), {report.checkpoints} checkpoints, {report.snapshots} snapshots"
    )
    out.print(
        f"{report.read_models} read models compared with their replay"
        if not report.read_models_skipped
        else f"read models not compared: {report.read_models_skipped}"
    )
    if report.authenticated_from or report.authenticated:
        out.print(
            f"{report.authenticated} events sealed with the audit key "
            f"(sealed from notification {report.authenticated_from})"
        )
    if report.witness_heads:
        out.print(f"{report.witness_heads} signed heads in the witness, the newest at {report.witness_position}")
    out.print(f"head {report.head_position}:{report.head_hash}")
    for finding in report.findings:
        out.print(f"[red]{escape(finding.describe())}[/red]")
    out.print("[green]clean[/green]" if report.clean else f"[red]{len(report.findings)} findings[/red]")


@audit_app.command("log")
def audit_log(
    entity: Annotated[str | None, typer.Option(help="An entity's id (vault, VM item, job, policy, point).")] = None,
    vault: Annotated[str | None, typer.Option("--vault", "-v", help="Vault name or id.")] = None,
    vm: Annotated[str | None, typer.Option(help="VM name.")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Event type or prefix: job, job.failed, ...")] = None,
    start: Annotated[datetime | None, typer.Option(help="At or after (UTC).")] = None,
    end: Annotated[datetime | None, typer.Option(help="Before (UTC).")] = None,
    jsonl: Annotated[Path | None, typer.Option("--jsonl", help="Export to this file as JSON Lines.")] = None,
    subscription: Subscription = "default",
    as_json: Json = False,
) -> None:
    """The stored events, filtered: when, who, what, on which entity."""

    def action(c: Client) -> None:
        entries = c.history(
            entity, vault_ref(c, vault, subscription) if vault else None, vm, event_type, _utc(start), _utc(end)
        )
        if jsonl is not None:
            written = export(jsonl, (e.model_dump_json() for e in entries))
            out.print(f"{written} events written to {jsonl}")
        elif as_json:
            emit(entries, True)
        else:
            emit(entries, False, ("position", "time", "principal", "event_type", "entity_type", "vm_name", "data"))

    run(action, services=False)  # a read: what the audit index has not reached is read from the store


@audit_app.command("replay")
def audit_replay(as_json: Json = False) -> None:
    """Rebuild every read model from the history into a fresh store and compare it with the live
    ones (a digest per read model, and the rows that differ). Exits 1 on a difference."""

    def action(c: Client) -> None:
        with Progress(console=err, transient=True, disable=as_json) as bar:
            task = bar.add_task("replaying", total=None)
            report = c.audit_replay(lambda done, total: bar.update(task, completed=done, total=total))
        if as_json:
            out.print_json(
                data={**asdict(report), "equal": report.equal, "events_per_second": round(report.events_per_second)}
            )
        else:
            out.print(
                f"replayed {report.events} events in {report.seconds:.2f}s ({report.events_per_second:,.0f} events/s)"
            )
            for table, live in report.live.items():
                replayed = report.replayed[table]
                mark = "[green]equal[/green]" if live.digest == replayed.digest else "[red]DIFFERENT[/red]"
                out.print(
                    f"{table:16} {live.rows:>8} rows  live {live.digest[:16]}  replayed {replayed.digest[:16]}  {mark}"
                )
            for d in report.differences:
                out.print(f"[red]{d.table} {d.key}[/red]\n  live:     {d.live}\n  replayed: {d.replayed}")
        if not report.equal:
            raise typer.Exit(1)

    run(action)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def render_dashboard(board: Dashboard) -> Group:
    """The dashboard as a terminal layout: one panel per vault, then the overall figures."""
    panels = [_panel(v) for v in [*board.vaults, board.overall]]
    return Group(Text(f"Backup dashboard at {board.at:%Y-%m-%d %H:%M:%S} UTC", style="bold"), *panels)


def _panel(v: VaultDashboard) -> Panel:
    figures = Table.grid(padding=(0, 2))
    figures.add_column(style="bold")
    figures.add_column()
    figures.add_row("protected VMs", str(v.protected_items))
    figures.add_row("initial backup pending", str(v.initial_backup_pending))
    figures.add_row("items by status", ", ".join(f"{k} {n}" for k, n in v.items_by_status.items()) or "-")
    jobs = v.jobs_last_24h
    figures.add_row(
        "jobs, last 24 h",
        f"completed {jobs.get('completed', 0) + jobs.get('completed_with_warnings', 0)}"
        f"  failed {jobs.get('failed', 0)}  in progress {v.jobs_in_progress}",
    )
    figures.add_row(
        "storage",
        f"{_size(v.storage_logical_bytes)} logical, "
        f"{_size(v.storage_stored_bytes)} stored after deduplication and compression",
    )
    figures.add_row(
        "instances by size", ", ".join(f"{k}: {n}" for k, n in v.protected_instances_by_size.items()) or "-"
    )
    parts: list[Any] = [figures]
    if v.alerts:
        alerts = Table(box=None, pad_edge=False, show_header=False)
        for a in v.alerts:
            alerts.add_row(Text(a.code, style="red"), a.vault_name if not v.vault_id else "", a.message)
        parts += [Text(f"alerts ({len(v.alerts)})", style="bold red"), alerts]
    return Panel(Group(*parts), title=v.vault_name, expand=False)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"


@app.command()
def dashboard(
    vault: Annotated[str | None, typer.Argument(help="One vault (name or id); default: every vault.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until interrupted.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.", min=0.1)] = 5.0,
    times: Annotated[int, typer.Option(help="With --watch: stop after this many refreshes (0: never).", min=0)] = 0,
    subscription: Subscription = "default",
    as_json: Json = False,
    as_of: AsOfTime = None,
) -> None:
    """Protected VMs, items by status, the last 24 hours' jobs, alerts, storage and instance sizes."""
    if watch and (as_json or as_of):
        raise typer.BadParameter("--watch shows the live dashboard in the terminal; drop --json / --as-of")

    def show(c: Client | Reader, view: ReadModels) -> None:
        vault_id = vault_ref(c, vault, subscription) if vault else None
        if as_json:
            out.print_json(view.dashboard(vault_id).model_dump_json())
        elif not watch:
            out.print(render_dashboard(view.dashboard(vault_id)))
        else:
            shown = 0
            with Live(render_dashboard(view.dashboard(vault_id)), console=out, auto_refresh=False) as live:
                while True:
                    shown += 1
                    if times and shown >= times:
                        break
                    time.sleep(interval)
                    live.update(render_dashboard(view.dashboard(vault_id)), refresh=True)

    read(as_of, show, quick=not watch)  # watching: the client's followers keep the board moving
