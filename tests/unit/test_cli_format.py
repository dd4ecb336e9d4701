"""How `backupctl` lays out what it prints: compact table cells, and values shown as text, never read
as console markup (an error message or a name may hold brackets)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from orchestrator.entry.cli.common import JOB_COLUMNS, emit, err, out, refuse
from orchestrator.errors import OrchestratorError
from projections.queries import JobRow

STARTED = datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)  # a whole second: no fraction in its ISO form


def _job(**fields: Any) -> JobRow:
    row: dict[str, Any] = {
        "job_id": str(uuid4()),
        "vault_id": str(uuid4()),
        "operation": "backup",
        "status": "in_progress",
        "vm_name": "vm01",
        "started_at": STARTED,
        "ended_at": None,
        "attempts": 1,
        "error_code": "",
        "error_message": "",
        "warnings": [],
        "result": {},
        "principal": "ops",
        "created_seq": 1,
        "bytes_done": 0,
        "bytes_total": 0,
        "checks": [],
    }
    return JobRow(**{**row, **fields})


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "240")  # a row on one line (the console reads it as it prints)


def _table(rows: list[JobRow], columns: tuple[str, ...] = (*JOB_COLUMNS, "error_message")) -> str:
    with out.capture() as captured:
        emit(rows, False, columns)
    return captured.get()


def test_a_table_shows_times_to_the_second_and_ids_by_their_first_digits(wide: None) -> None:
    job = _job()
    text = _table([job])
    assert "05-01 12:34:56" in text and STARTED.isoformat() not in text and "2024-05-01T" not in text
    assert job.job_id[:8] in text and job.job_id not in text


def test_a_name_shaped_like_an_id_is_shown_whole(wide: None) -> None:
    name = "frontend-production-eu-west-00000001"  # 36 characters, four dashes: not an id
    assert name in _table([_job(vm_name=name)], ("job_id", "vm_name"))


def test_a_job_shows_its_progress_and_duration(wide: None) -> None:
    running = _job(bytes_done=50 * 2**20, bytes_total=100 * 2**20)
    ended = _job(status="completed", ended_at=STARTED + timedelta(seconds=83.25))
    text = _table([running, ended])
    assert "50% of 100 MiB" in text and "running" in text and "83.2s" in text


def test_a_value_holding_brackets_is_printed_as_it_is(wide: None) -> None:
    message = "agent said [/bold] then [bold]retry[/bold]"
    assert message in _table([_job(status="failed", error_message=message)])
    with out.capture() as captured:
        emit({"error": "[/] boom", "note": "[red]x[/red]"}, False)
    assert "error: [/] boom" in captured.get() and "note: [red]x[/red]" in captured.get()


def test_json_has_every_value_whole() -> None:
    job = _job()
    with out.capture() as captured:
        emit([job], True)
    [shown] = json.loads(captured.get())
    assert shown["job_id"] == job.job_id and datetime.fromisoformat(shown["started_at"]) == STARTED


def test_a_refusal_prints_its_code_and_message_as_they_are() -> None:
    with err.capture() as captured:
        assert refuse(OrchestratorError("VaultNameInvalid", "name [/x] is not [bold]allowed[/bold]")) == 2
    assert captured.get() == "error [VaultNameInvalid] name [/x] is not [bold]allowed[/bold]\n"
