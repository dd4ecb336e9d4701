"""Waiting for jobs: every way a job ends, jobs that ended before the wait, the time limit, unknown
ids, and one watch for many jobs (not one per job)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from orchestrator import Client, OrchestratorError
from orchestrator.domain import Job
from orchestrator.errors import ServiceUnavailableError
from projections import queries


def test_wait_all_returns_every_job_in_the_order_given_however_it_ended(client: Client, discovered_vault: str) -> None:
    early = client.register(discovered_vault, ["vm01"])[0]
    client.wait(early)  # ended before the next wait starts
    jobs = client.register(discovered_vault, ["vm02", "notready", "vm03"])
    rows = client.wait_all([jobs[2], early, jobs[1], jobs[0]])
    assert [r.job_id for r in rows] == [jobs[2], early, jobs[1], jobs[0]]
    assert [r.status for r in rows] == ["completed", "completed", "failed", "completed"]
    assert rows[2].error_code == "VmAgentNotReady"
    assert client.wait(jobs[1]).error_code == "VmAgentNotReady"


def test_one_watch_for_many_jobs(client: Client, discovered_vault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    vms = [f"vm{i:02d}" for i in range(1, 11)]
    client.wait_all(client.register(discovered_vault, vms))
    client.wait_all(client.protect(discovered_vault, vms))
    loads: list[Any] = []
    get = type(client._runtime.app).get

    def counted(app: Any, aggregate_id: Any, cls: type) -> Any:
        if cls is Job and threading.current_thread() is threading.main_thread():  # the workers are threads
            loads.append(aggregate_id)
        return get(app, aggregate_id, cls)

    monkeypatch.setattr(type(client._runtime.app), "get", counted)
    jobs = [client.backup_now(discovered_vault, vm) for vm in vms]
    client.job(jobs[-1])  # the jobs read model shows every one of them (in progress or ended)
    loads.clear()
    rows = client.wait_all(jobs)
    assert {r.status for r in rows} == {"completed"}
    # The read model tells, in one query, which had ended; after that only the log's job-ending
    # events are read: no job is loaded.
    assert loads == []
    # Jobs the read model does not show yet are each loaded once from the event store.
    monkeypatch.setattr(queries, "job_states", lambda store, ids: {})
    again = [client.backup_now(discovered_vault, vm) for vm in vms[:3]]
    loads.clear()
    assert {r.status for r in client.wait_all(again)} == {"completed"}
    assert sorted(map(str, loads)) == sorted(again)


def test_the_time_limit_names_a_job_still_running(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01", "vm02"]))
    client.wait_all(client.protect(discovered_vault, ["vm01", "vm02"]))
    client._runtime.close_workers()  # nothing runs them
    jobs = [client.backup_now(discovered_vault, vm) for vm in ("vm01", "vm02")]
    with pytest.raises(OrchestratorError) as caught:
        client.wait_all(jobs, timeout=0.3)
    assert caught.value.code == "WaitTimeout"
    assert jobs[0] in caught.value.message and "1 more with it" in caught.value.message
    with pytest.raises(OrchestratorError) as one:
        client.wait(jobs[1], timeout=0.1)
    assert one.value.code == "WaitTimeout" and jobs[1] in one.value.message and "more" not in one.value.message


def test_unknown_and_malformed_job_ids(client: Client) -> None:
    with pytest.raises(OrchestratorError) as unknown:
        client.wait("00000000-0000-4000-8000-000000000000", timeout=1)
    assert unknown.value.code == "JobNotFound"
    with pytest.raises(OrchestratorError) as malformed:
        client.wait("not-a-job", timeout=1)
    assert malformed.value.code == "CommandInvalid" and malformed.value.field == "job_id"


def test_read_models_behind_at_the_end_are_waited_out_until_the_deadline(
    client: Client, discovered_vault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a store outage the read models may lag the log for a while: the wait goes on."""
    job = client.register(discovered_vault, ["vm01"])[0]
    catch_up, behind = client._catch_up, [2]

    def lagging() -> None:
        if behind[0]:
            behind[0] -= 1
            raise ServiceUnavailableError("ReadModelBehind", "the read models did not catch up")
        catch_up()

    monkeypatch.setattr(client, "_catch_up", lagging)
    assert client.wait(job, timeout=30).status == "completed" and behind == [0]
    behind[0] = 1000
    with pytest.raises(ServiceUnavailableError) as caught:
        client.wait(job, timeout=0.2)
    assert caught.value.code == "ReadModelBehind"
