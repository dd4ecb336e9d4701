"""The rebuild behind `audit replay` and `as_of`: the same rows as the live read models, progress to
the end, each read model stopped at its live position, in this process through the library's reader."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.audit import comparison, replay
from orchestrator.domain.schedule import Tier
from orchestrator.fabric.sample import vm_entry, write_fabric
from projections.runner import NAMES, PROJECTIONS

R = "japaneast"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    """A history with every read model's events (vaults, policies, items, jobs, points)."""
    inventory = write_fabric(tmp_path / "fabric", {"default": [vm_entry(f"vm{i}", R) for i in range(3)]}, disk_mib=1)
    with Client(data_dir=tmp_path / "data", fabric=inventory, principal="alice", scheduler_interval=3600) as c:
        vault = c.create_vault("vault-east", R, "rg")
        c.wait(c.discover(vault))
        vms = ["vm0", "vm1", "vm2"]
        c.wait_all(c.register(vault, vms))
        c.wait_all(c.protect(vault, vms))
        c.wait_all([c.backup_now(vault, vm) for vm in vms])
        spare = c.create_vault("vault-spare", R, "rg")
        for i in range(20):
            c.set_replication(spare, "local" if i % 2 else "geo")
            c.update_policy(
                vault, "DefaultPolicy", {"frequency": "daily", "times": ["01:00"]}, {"daily": {"days": 7 + i}}
            )
        yield c


def test_the_replay_equals_the_live_read_models_and_reports_progress(client: Client) -> None:
    seen: list[tuple[int, int]] = []
    report = client.audit_replay(lambda done, total: seen.append((done, total)))
    assert report.equal and not report.differences
    head = client._runtime.app.recorder.max_notification_id()
    assert report.events == head
    assert seen[-1] == (head, head) and all(done <= total for done, total in seen)
    assert report.replayed["vaults"].rows == 2 and report.replayed["items"].rows == 3
    assert report.replayed["recovery_points"].rows == 3 and report.replayed["jobs"].rows > 3


def test_a_rebuild_in_sections_gives_the_rows_of_one_pass(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    app = client._runtime.app
    rows = []
    for section in (replay.SECTION, 7):
        monkeypatch.setattr(replay, "SECTION", section)
        scratch = replay.ScratchStore()
        try:
            replay.rebuild(app, scratch.store)
            rows.append(comparison.store_rows(scratch.store))
        finally:
            scratch.close()
    assert rows[0] == rows[1] and rows[0]["vaults"] and rows[0]["items"]


def test_each_read_model_is_rebuilt_up_to_its_own_stop(client: Client) -> None:
    app = client._runtime.app
    head = app.recorder.max_notification_id() or 0
    first_vault = next(
        n.id for section in replay.sections(app, head) for n in section if n.topic.startswith("backup.vault.")
    )
    stops = dict.fromkeys(NAMES, head) | {"vaults": first_vault}
    scratch = replay.ScratchStore()
    try:
        replay.rebuild(app, scratch.store, stops=stops)
        assert scratch.store.positions(NAMES) == stops
        [vault] = comparison.table_rows(scratch.store, "vaults").values()
        assert '"name":"vault-east"' in vault  # the spare vault came after the stop
        assert len(comparison.table_rows(scratch.store, "items")) == 3
    finally:
        scratch.close()


def overwrite_runs(client: Client) -> None:
    """Runs of the other declared overwrites on one aggregate: a job's progress reported three times,
    a point's retention changed twice (through the aggregates, as their commands would), a vault's
    soft delete and its immutability set twice each (through the client)."""
    app = client._runtime.app
    head = app.recorder.max_notification_id() or 0
    created = {n.topic: n.originator_id for section in replay.sections(app, head) for n in section}
    job = app.repository.get(created["backup.job.created"])
    for done in (1, 2, 3):
        job.progress(done, 3)
    point = app.repository.get(created["backup.recovery_point.created"])
    for days in (30, 60):
        point.change_retention([Tier.DAILY], point.expires_at + timedelta(days=days), "policy edited")
    app.save(job, point)
    vault = client.vaults()[0].vault_id
    for days in (30, 60):
        client.set_soft_delete(vault, "enabled", days)
    for state in ("enabled", "disabled"):
        client.set_immutability(vault, state)


def test_compaction_skips_only_what_a_later_event_overwrites_and_leaves_the_same_rows(client: Client) -> None:
    overwrite_runs(client)
    app = client._runtime.app
    head = app.recorder.max_notification_id() or 0
    scratch = replay.ScratchStore()
    try:
        rebuilding = replay.Rebuild([cls(app, scratch.store) for cls in PROJECTIONS], [head] * len(PROJECTIONS), None)
        skipped = Counter(
            n.topic for section in replay.sections(app, head) for n in section if n.id in rebuilding.superseded(section)
        )
    finally:
        scratch.close()
    # every declared class was skipped at least once: all but the last of each run on one aggregate
    assert (
        set(skipped)
        == rebuilding.skippable
        == {
            "backup.policy.updated",
            "backup.vault.replication_changed",
            "backup.vault.soft_delete_changed",
            "backup.vault.immutability_changed",
            "backup.job.progressed",
            "backup.recovery_point.retention_changed",
        }
    )
    assert skipped["backup.job.progressed"] == 2 and skipped["backup.recovery_point.retention_changed"] == 1
    rows = []
    for compact in (True, False):
        scratch = replay.ScratchStore()
        try:
            replay.rebuild(app, scratch.store, compact=compact)
            rows.append(comparison.store_rows(scratch.store))
        finally:
            scratch.close()
    assert rows[0] == rows[1]
    assert client.audit_replay().equal


def test_an_event_of_the_aggregate_between_two_overwrites_keeps_the_first() -> None:
    """Only the aggregate's next event decides: another of its events between, one past the stops,
    or another aggregate's event of the topic keep an event applied."""
    from uuid import uuid4

    from eventsourcing.persistence import Notification

    a, b = uuid4(), uuid4()
    edit, other = "backup.policy.updated", "backup.policy.created"

    def log(*rows: tuple[object, str]) -> list[Notification]:
        return [
            Notification(id=i, originator_id=o, originator_version=i, topic=t, state=b"")
            for i, (o, t) in enumerate(rows, 1)
        ]

    rebuilding = replay.Rebuild([], [], None)
    rebuilding.skippable, rebuilding.horizon = frozenset({edit}), 100
    assert rebuilding.superseded(log((a, edit), (a, edit), (a, edit))) == {1, 2}
    assert rebuilding.superseded(log((a, edit), (a, other), (a, edit))) == set()
    assert rebuilding.superseded(log((a, edit), (b, edit), (a, edit))) == {1}
    assert rebuilding.superseded(log((a, other), (a, other))) == set()
    rebuilding.horizon = 1
    assert rebuilding.superseded(log((a, edit), (a, edit))) == set()


def test_a_changed_live_row_is_a_difference_named_by_table_and_key(client: Client) -> None:
    store = client._runtime.store
    client.vaults()  # the read models caught up: nothing of the history overwrites the change below
    [row] = store.fetch(f"SELECT vault_id FROM {store.t('vaults')} WHERE name = 'vault-spare'")
    with store.transaction() as tx:
        tx.execute(f"UPDATE {store.t('vaults')} SET replication = 'zone' WHERE vault_id = ?", (row["vault_id"],))
    report = client.audit_replay()
    assert not report.equal
    [difference] = report.differences
    assert (difference.table, difference.key) == ("vaults", row["vault_id"])
    assert difference.live is not None and '"replication":"zone"' in difference.live


def test_the_replay_modules_import_no_composition_root() -> None:
    code = (
        "import sys, orchestrator.audit.replay, orchestrator.audit.verify, orchestrator.audit.history; "
        "print('orchestrator.runtime.bootstrap' in sys.modules, 'multiprocessing' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
