"""Snapshots of the aggregates whose histories keep growing (vault, policy, item): taken every
SNAPSHOT_INTERVAL events, stored through the same mapper as events, and loaded into exactly the
state the events give."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.persistence import OperationalError
from pydantic import ValidationError

from orchestrator import Client
from orchestrator.domain import BackupPolicy, Vault, VirtualMachine
from orchestrator.domain.base import SnapshotState
from orchestrator.domain.policy import policy_id_for
from orchestrator.domain.values import Replication
from orchestrator.write import commands as c
from orchestrator.write.application import SNAPSHOT_INTERVAL, Orchestrator


def from_events(app: Orchestrator, aggregate_id: UUID) -> Any:
    return project_aggregate(None, app.events.get(aggregate_id))


def state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def test_a_snapshot_of_each_kind_loads_into_the_state_its_events_give(client: Client, discovered_vault: str) -> None:
    app = client._runtime.app
    assert {j.status for j in client.wait_all(client.register(discovered_vault, ["vm01"]))} == {"completed"}
    assert {j.status for j in client.wait_all(client.protect(discovered_vault, ["vm01"]))} == {"completed"}
    assert client.wait(client.backup_now(discovered_vault, "vm01")).status == "completed"
    vault_id = UUID(discovered_vault)
    item_id = app.registered_item(app.get(vault_id, Vault), "vm01").id
    ids = {Vault: vault_id, BackupPolicy: policy_id_for(vault_id, "DefaultPolicy"), VirtualMachine: item_id}
    for cls, aggregate_id in ids.items():
        app.take_snapshot(aggregate_id)
        assert app.snapshots is not None
        snapshot = next(iter(app.snapshots.get(aggregate_id, desc=True, limit=1)))
        loaded = snapshot.mutate(None)
        assert type(loaded) is cls
        assert state(loaded) == state(from_events(app, aggregate_id)), cls.__name__
    item, vault, policy = (from_events(app, ids[cls]) for cls in (VirtualMachine, Vault, BackupPolicy))
    assert item.recovery_point_ids and item.last_backup_at is not None  # rich states were compared
    assert vault.discovered_at_job and vault.protection_started and policy.name == "DefaultPolicy"


def test_snapshots_are_taken_every_interval_and_loading_reads_only_what_follows(client: Client) -> None:
    app = client._runtime.app
    vault_id = UUID(client.create_vault("vault-a", "japaneast", "rg"))
    values = [Replication.LOCAL, Replication.GEO]
    for i in range(SNAPSHOT_INTERVAL + 5):
        app.handle(c.SetReplication(vault_id=vault_id, replication=values[i % 2]), "alice")
    assert app.snapshots is not None
    versions = [s.originator_version for s in app.snapshots.get(vault_id)]
    assert versions == [SNAPSHOT_INTERVAL]
    read: list[int] = []
    real_get = app.events.get

    def counting_get(originator_id: UUID, **kwargs: Any) -> Any:
        events = list(real_get(originator_id, **kwargs))
        read.extend(e.originator_version for e in events)
        return events

    app.events.get = counting_get  # type: ignore[method-assign]
    app.repository.cache = None  # a cold process
    loaded = app.get(vault_id, Vault)
    assert read == list(range(SNAPSHOT_INTERVAL + 1, SNAPSHOT_INTERVAL + 7))
    assert state(loaded) == state(from_events(app, vault_id))


def test_a_process_that_has_taken_no_snapshot_reads_them() -> None:
    """A work horse loads a vault from its snapshot before it ever writes one."""
    code = (
        "import orchestrator.domain\nfrom eventsourcing.utils import resolve_topic\n"
        "from orchestrator.domain.base import AggregateSnapshot\n"
        "assert resolve_topic(AggregateSnapshot.TOPIC) is AggregateSnapshot"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_a_snapshot_that_cannot_be_written_does_not_fail_the_stored_command(client: Client, monkeypatch: Any) -> None:
    app = client._runtime.app
    vault_id = UUID(client.create_vault("vault-a", "japaneast", "rg"))

    def toggle() -> None:  # one event
        other = Replication.LOCAL if app.get(vault_id, Vault).replication is Replication.GEO else Replication.GEO
        app.handle(c.SetReplication(vault_id=vault_id, replication=other), "alice")

    while app.get(vault_id, Vault).version < SNAPSHOT_INTERVAL - 1:
        toggle()

    def unavailable(*_: Any, **__: Any) -> None:
        raise OperationalError("the database system is shutting down")

    assert app.snapshots is not None
    monkeypatch.setattr(app.snapshots, "put", unavailable)
    toggle()  # the event at the interval is stored, and no error is raised
    assert app.get(vault_id, Vault).version == SNAPSHOT_INTERVAL
    assert list(app.snapshots.get(vault_id)) == []


def test_a_snapshot_model_out_of_step_with_its_aggregate_fails_loudly_after_the_command_is_stored(
    client: Client, monkeypatch: Any
) -> None:
    """A programming error, which the test of each kind's snapshot above catches first: raised, not
    swallowed (the events were stored before the snapshot was taken)."""
    app = client._runtime.app
    vault_id = UUID(client.create_vault("vault-a", "japaneast", "rg"))

    class Stale(SnapshotState):  # lists none of the vault's attributes
        pass

    monkeypatch.setattr(Vault, "snapshot_state", Stale)
    for i in range(SNAPSHOT_INTERVAL - 2):
        app.handle(
            c.SetReplication(vault_id=vault_id, replication=(Replication.LOCAL, Replication.GEO)[i % 2]), "alice"
        )
    with pytest.raises(ValidationError):
        app.handle(c.SetReplication(vault_id=vault_id, replication=Replication.LOCAL), "alice")
    assert app.get(vault_id, Vault).version == SNAPSHOT_INTERVAL
    assert app.snapshots is not None and list(app.snapshots.get(vault_id)) == []
