from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator import Client, OrchestratorError


@pytest.fixture
def history(client: Client, discovered_vault: str) -> str:
    client.wait_all(client.register(discovered_vault, ["vm01", "vm02", "noagent"]))
    return discovered_vault


def test_jobs_filter_by_status(client: Client, history: str) -> None:
    assert [j.vm_name for j in client.jobs(status="failed")] == ["noagent"]
    assert {j.vm_name for j in client.jobs(status="completed", operation="register")} == {"vm01", "vm02"}


def test_jobs_filter_by_operation(client: Client, history: str) -> None:
    assert len(client.jobs(operation="discovery")) == 1
    assert len(client.jobs(operation="register")) == 3


def test_jobs_filter_by_vault(client: Client, history: str) -> None:
    other = client.create_vault("vault-two", "japaneast", "rg")
    client.wait(client.discover(other))
    assert len(client.jobs(vault_id=other)) == 1
    assert len(client.jobs(vault_id=history)) == 4


def test_jobs_filter_by_start_time_window(client: Client, history: str) -> None:
    jobs = client.jobs()
    newest = max(j.started_at for j in jobs)
    assert client.jobs(start=newest + timedelta(microseconds=1)) == []
    assert len(client.jobs(end=newest)) == len(jobs) - 1
    past = datetime.now(UTC) - timedelta(days=1)
    assert len(client.jobs(start=past, end=past + timedelta(days=2))) == len(jobs)


def test_naive_times_are_taken_as_utc(client: Client, history: str) -> None:
    newest = max(j.started_at for j in client.jobs())
    assert len(client.jobs(start=newest.replace(tzinfo=None))) == 1


def test_jobs_come_newest_first_with_their_times(client: Client, history: str) -> None:
    jobs = client.jobs()
    assert [j.started_at for j in jobs] == sorted((j.started_at for j in jobs), reverse=True)
    assert all(j.ended_at and j.ended_at >= j.started_at and j.duration_seconds is not None for j in jobs)
    assert all(j.attempts == 1 and j.principal == "alice@example.com" for j in jobs)


@pytest.mark.parametrize(("field", "value"), [("operation", "teleport"), ("status", "done")])
def test_an_unknown_filter_value_is_refused_naming_the_field(client: Client, field: str, value: str) -> None:
    with pytest.raises(OrchestratorError) as caught:
        client.jobs(**{field: value})
    assert (caught.value.code, caught.value.field) == ("CommandInvalid", field)


def test_waiting_on_an_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(OrchestratorError) as caught:
        client.wait("00000000-0000-0000-0000-000000000000")
    assert caught.value.code == "JobNotFound"
