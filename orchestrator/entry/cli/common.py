"""What every `backupctl` command shares: the Typer apps, output and error handling."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

from orchestrator import safefs
from orchestrator.errors import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.entry.client import Client
    from orchestrator.entry.queries import ReadModels
    from orchestrator.entry.reader import Reader
    from projections.queries import JobRow


class CodedGroup(TyperGroup):
    """The root command: every refusal is `error [Code] message` and exit 2, a usage mistake (an
    unknown option, a value of the wrong type, a missing argument) included, as `CommandInvalid`."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            outcome = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
            code = outcome if isinstance(outcome, int) else 0
        except TyperException as exc:  # the command line itself: an unknown option, a bad value...
            code = _usage_error(exc)
        except typer.Abort:
            err.print("aborted")
            code = 1
        except OrchestratorError as exc:  # raised before a command's own handling (settings, say)
            code = refuse(exc)
        if standalone_mode:
            sys.exit(code)
        return code


def _usage_error(exc: TyperException) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":  # a group called without a command: its help
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return int(getattr(exc, "exit_code", 2))
    context = getattr(exc, "ctx", None)
    if context is not None:
        err.print(context.get_usage(), markup=False, highlight=False)
    return refuse(
        OrchestratorError("CommandInvalid", exc.format_message(), field=getattr(exc, "param_hint", None) or None)
    )


def refuse(exc: OrchestratorError) -> int:
    err.print(Text.assemble(("error", "red"), f" [{exc.code}] {exc.message}"))
    return 2


app = typer.Typer(
    cls=CodedGroup, no_args_is_help=True, add_completion=False, help="Event-sourced VM backup orchestrator."
)
vault_app = typer.Typer(no_args_is_help=True, help="Create and inspect vaults.")
fabric_app = typer.Typer(no_args_is_help=True, help="The local fabric (VM inventory and disk images).")
serve_app = typer.Typer(no_args_is_help=True, help="Run a service of the distributed deployment.")
app.add_typer(vault_app, name="vault")
app.add_typer(fabric_app, name="fabric")
app.add_typer(serve_app, name="serve")

out = Console()
err = Console(stderr=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Subscription = Annotated[str, typer.Option("--subscription", "-s", help="Subscription of the vault.")]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the jobs to end.")]

AsOfTime = Annotated[
    datetime | None,
    typer.Option("--as-of", help="Answer as of this past instant (UTC), from the events stored up to then."),
]
SHORT_ID = 8  # hex digits of an id in a table
TABLE_TIME = "%m-%d %H:%M:%S"  # a time in a table (UTC, as stored)
JOB_COLUMNS = ("job_id", "operation", "status", "vm_name", "started_at", "duration", "progress", "error_code")


def make_client(start_services: bool | None = None) -> Client:
    """The client a command runs with: with the embedded services when the queue is embedded,
    unless `start_services` says otherwise. (Imported here: `--help` and a refused argument need no
    client, and importing it is most of the CLI's start-up.)"""
    from orchestrator.entry.client import Client

    return Client(start_services=start_services)


def emit(rows: Sequence[BaseModel] | BaseModel | dict[str, Any], as_json: bool, columns: Sequence[str] = ()) -> None:
    """Print rows as a table of `columns` (or a dict as `key: value` lines), or all of them as JSON."""
    if isinstance(rows, BaseModel):
        rows = [rows]
    if as_json:
        data = rows if isinstance(rows, dict) else [r.model_dump(mode="json") for r in rows]
        if out.is_terminal:  # for a person: highlighted
            out.print_json(data=data, default=str)
        else:  # to a file or a pipe: plain, without rich's highlighter (half the time of a big listing)
            out.out(json.dumps(data, indent=2, default=str), highlight=False)
        return
    if isinstance(rows, dict):
        for key, value in rows.items():
            out.print(Text.assemble((str(key), "bold"), f": {value}"))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell(row, column)) for column in columns))  # Text: a value is never markup
    out.print(table)


def export(path: Path, lines: Iterable[str]) -> int:
    """Write `lines` into a new file at `path` (0600, never over a file or a link that is there);
    returns how many. `ExportPathInvalid` says why not, and nothing is written."""
    try:
        fd = safefs.create(path)
    except OSError as exc:
        why = "exists (an export never replaces a file)" if isinstance(exc, FileExistsError) else exc.strerror
        raise OrchestratorError("ExportPathInvalid", f"cannot export to {path}: {why}", field="jsonl") from None
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
                count += 1
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return count


def cell(row: BaseModel, column: str) -> str:
    """A compact table cell: an id's first hex digits, a time to the second (UTC), a job's progress
    and duration (`--json` has every value whole)."""
    from projections.queries import JobRow  # here: `--help` and a refusal need no row type

    value = getattr(row, column, None)
    if isinstance(value, datetime):
        return value.strftime(TABLE_TIME)
    if isinstance(row, JobRow) and column in ("progress", "duration"):
        return _job_progress(row) if column == "progress" else _job_duration(row)
    shown = row.model_dump(mode="json", include={column}).get(column)
    if shown is None:
        return ""
    if column.endswith("_id"):
        return short_id(str(shown))
    return str(shown)


def short_id(text: str) -> str:
    """The first hex digits of a UUID (enough to tell a table's rows apart); anything else whole."""
    try:
        return UUID(text).hex[:SHORT_ID]
    except ValueError:
        return text


def _job_progress(job: JobRow) -> str:
    return f"{job.bytes_done / job.bytes_total:.0%} of {job.bytes_total / 2**20:.0f} MiB" if job.bytes_total else ""


def _job_duration(job: JobRow) -> str:
    seconds = job.duration_seconds
    return "running" if seconds is None else f"{seconds:.1f}s"


def vault_ref(client: Client | Reader, vault: str, subscription: str) -> str:
    try:
        return str(UUID(vault))
    except ValueError:
        return client.vault_id(vault, subscription)


def as_utc(moment: datetime) -> datetime:
    """A time from the command line: one given without its zone is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read(as_of: datetime | None, action: Callable[[Client | Reader, ReadModels], None], quick: bool = True) -> None:
    """Run a read command on the live read models, or on those rebuilt as of `as_of` (UTC if naive).
    Live and `quick`, it reads them without starting anything when they are current
    (orchestrator/entry/reader.py), and asks the client, which catches them up, when they are not."""
    if as_of is None and quick:
        try:
            if _read_current(action):
                return
        except OrchestratorError as exc:
            raise typer.Exit(refuse(exc)) from None

    def go(client: Client) -> None:
        if as_of is None:
            action(client, client)
            return
        with client.as_of(as_utc(as_of)) as view:
            action(client, view)

    run(go)


def _read_current(action: Callable[[Client | Reader, ReadModels], None]) -> bool:
    """Whether `action` ran on the read models as they stand (False: they trail, or cannot tell)."""
    from orchestrator.entry.reader import Stale, open_reader

    reader = open_reader()
    if reader is None:
        return False
    with reader:
        try:
            action(reader, reader)
        except Stale:
            return False
    return True


def run(action: Callable[[Client], None], *, services: bool = True) -> None:
    """Run a command's action on a client; `services=False`: one that starts no services (a check
    that must not let the followers move while it reads, as `audit verify`)."""
    try:
        with make_client(None if services else False) as client:
            action(client)
    except OrchestratorError as exc:
        raise typer.Exit(refuse(exc)) from None
