"""The fast-forwarding aggregate cache: a process reads only an aggregate's newer events, sees what
other processes stored, and a command's changes reach the cache only by being stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.domain import Job, Vault
from orchestrator.domain.values import Replication
from orchestrator.errors import SettingsError
from orchestrator.runtime.bootstrap import build_app
from orchestrator.write import commands as c
from orchestrator.write.application import Orchestrator


def two_processes(tmp_path: Path) -> tuple[Orchestrator, Orchestrator]:
    """Two applications on one event store, as two processes of a deployment would have."""
    settings = load_settings({}, data_dir=tmp_path / "data")
    return build_app(settings), build_app(settings)


def test_each_application_caches_aggregates_and_fast_forwards_to_what_others_stored(tmp_path: Path) -> None:
    first, second = two_processes(tmp_path)
    vault_id = first.handle(c.CreateVault(name="vault-a", region="japaneast", resource_group="rg"), "alice")
    assert first.get(vault_id, Vault).replication is Replication.GEO
    assert first.repository.cache is not None and first.repository.cache.get(vault_id).version == 1

    second.handle(c.SetReplication(vault_id=vault_id, replication=Replication.LOCAL), "bob")
    assert first.get(vault_id, Vault).replication is Replication.LOCAL  # not the cached GEO
    first.handle(c.SetReplication(vault_id=vault_id, replication=Replication.GEO), "alice")  # no conflict
    assert second.get(vault_id, Vault).replication is Replication.GEO
    assert [e.principal for e in first.repository.event_store.get(vault_id)][1:] == ["bob", "alice"]


def test_a_command_changes_its_own_copy_and_the_cache_only_through_the_store(tmp_path: Path) -> None:
    app, _ = two_processes(tmp_path)
    vault_id = app.handle(c.CreateVault(name="vault-a", region="japaneast", resource_group="rg"), "alice")
    job_id = app.handle(c.DiscoverVms(vault_id=vault_id), "alice")
    copy = app.get(job_id, Job)
    copy.progress(10, 100)  # triggered, never saved (a command that failed)
    copy.parameters["target_vm_name"] = "changed in place"
    fresh = app.get(job_id, Job)
    assert (fresh.bytes_done, fresh.parameters, fresh.version) == (0, {}, 1)
    assert fresh.collect_events() == []
    assert fresh.parameters is not app.repository.cache.get(job_id).parameters


def test_the_cache_size_is_a_setting_and_zero_turns_it_off(tmp_path: Path) -> None:
    app = build_app(load_settings({"BACKUP_AGGREGATE_CACHE_SIZE": "0"}, data_dir=tmp_path / "data"))
    assert app.repository.cache is None
    with pytest.raises(SettingsError) as caught:
        load_settings({"BACKUP_AGGREGATE_CACHE_SIZE": "-1"})
    assert caught.value.field == "BACKUP_AGGREGATE_CACHE_SIZE"
