"""The replay split over processes: the same read models as one process rebuilds, progress to the
end, a failing process named, and a process that does not start rebuilt in the caller."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client
from orchestrator.audit import replay
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.sample import vm_entry, write_fabric
from projections.base import Projection
from projections.policies import PoliciesProjection
from projections.runner import PROJECTIONS

R = "japaneast"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """A history with every read model's events (vaults, policies, items, jobs, points), long enough
    for the split once the threshold is lowered."""
    monkeypatch.setattr(replay, "PARALLEL_MIN_EVENTS", 50)
    inventory = write_fabric(tmp_path / "fabric", {"default": [vm_entry(f"vm{i}", R) for i in range(3)]}, disk_mib=1)
    with Client(
        data_dir=tmp_path / "data", fabric=inventory, principal="alice", scheduler_interval=3600, replay_processes=3
    ) as c:
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


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    calls: list[Any] = []
    original = getattr(replay, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(replay, name, counted)
    return calls


def test_the_split_replay_equals_the_live_read_models_and_reports_progress(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _counting(monkeypatch, "_run_parts")
    seen: list[tuple[int, int]] = []
    report = client.audit_replay(lambda done, total: seen.append((done, total)))
    assert len(runs) == 1 and len(runs[0][3]) >= 2  # split over at least two processes
    assert report.equal and not report.differences
    assert report.events == client._runtime.app.recorder.max_notification_id()
    head = report.events
    assert seen[-1] == (head, head) and all(done <= total for done, total in seen)
    assert report.replayed["vaults"].rows == 2 and report.replayed["items"].rows == 3
    assert report.replayed["recovery_points"].rows == 3 and report.replayed["jobs"].rows > 3


def test_one_process_and_the_split_rebuild_the_same_rows(client: Client) -> None:
    app, settings = client._runtime.app, client.settings
    rows = []
    for processes in (1, 3):
        scratch = replay.ScratchStore()
        try:
            replay.rebuild_scratch(app, settings.model_copy(update={"replay_processes": processes}), scratch)
            rows.append({t: replay.table_rows(scratch.store, t) for t in replay._all_tables()})
            assert not list(scratch.part(0).parent.iterdir())  # merged and removed
        finally:
            scratch.close()
    assert rows[0] == rows[1] and rows[0]["vaults"] and rows[0]["items"]


def test_a_failing_process_is_named_and_nothing_is_left_behind(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(self: Projection, events: Any, last_id: int) -> None:
        raise RuntimeError("disk full")

    # A rebuild writes each batch through process_batch (the live read models do not); the forked
    # processes inherit the patch.
    monkeypatch.setattr(PoliciesProjection, "process_batch", broken)
    scratches: list[replay.ScratchStore] = []
    original = replay.ScratchStore.__init__

    def remembered(self: replay.ScratchStore) -> None:
        original(self)
        scratches.append(self)

    monkeypatch.setattr(replay.ScratchStore, "__init__", remembered)
    with pytest.raises(OrchestratorError) as caught:
        client.audit_replay()
    assert caught.value.code == "ReplayFailed"
    assert "policies" in str(caught.value) and "RuntimeError: disk full" in str(caught.value)
    assert scratches and not scratches[0].part(0).parent.exists()


def test_a_process_that_does_not_start_is_rebuilt_here(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import orchestrator.bootstrap

    def stuck(*args: Any, **kwargs: Any) -> Any:  # as a lock held by another thread at the fork would
        import time

        time.sleep(60)

    monkeypatch.setattr(replay, "READY_TIMEOUT", 0.5)
    monkeypatch.setattr(orchestrator.bootstrap, "build_app", stuck)  # only the forked processes call it
    with caplog.at_level(logging.WARNING, logger="orchestrator.audit.replay"):
        report = client.audit_replay()
    assert report.equal and not report.differences
    assert "did not start" in caplog.text


def test_partition_splits_read_models_keyed_by_aggregate_and_balances_the_parts() -> None:
    by_name = {cls.name: cls for cls in PROJECTIONS}
    counts = {topic: 0 for cls in PROJECTIONS for topic in cls.topics}
    for topic in by_name["policies"].topics:
        counts[topic] = 1000
    for topic in by_name["vaults"].topics:
        counts[topic] = 900
    for topic in by_name["dashboard"].topics:
        counts[topic] = 500
    shared_topics = {topic for cls in PROJECTIONS if cls.by_aggregate for topic in cls.topics}
    events = sum(counts[topic] for topic in shared_topics)
    aggregates = [(f"{i:032x}", events // 100) for i in range(100)]  # 100 aggregates of equal size
    parts = replay.partition(PROJECTIONS, counts, 2, aggregates)
    assert len(parts) == 2
    split = {cls.name for cls in PROJECTIONS if cls.by_aggregate}
    assert split == {"vaults", "policies", "items", "jobs", "recovery_points"}
    assert all(set(part.shared) == split for part in parts)
    assert [name for part in parts for name in part.whole] == ["dashboard"]  # the one not keyed by aggregate
    # The ranges follow each other and cover every id; the part rebuilding the dashboard gets fewer.
    assert parts[0].bounds[0] is None and parts[-1].bounds[1] is None
    assert parts[0].bounds[1] == parts[1].bounds[0]
    cut = parts[0].bounds[1]
    assert cut is not None
    below = sum(1 for origin, _ in aggregates if origin < cut)
    light = 0 if parts[0].whole else 1
    assert (below if light == 0 else 100 - below) < 50 < (100 - below if light == 0 else below)
    # One process: every read model whole, nothing split. Without counts per aggregate: equal ranges of ids.
    assert replay.partition(PROJECTIONS, counts, 1) == [
        replay.Part(tuple(cls.name for cls in sorted(PROJECTIONS, key=lambda c: -sum(counts[t] for t in c.topics))))
    ]
    # One aggregate holding every event: it cannot be split, and no process is started for nothing.
    lone = replay.partition(PROJECTIONS, counts, 3, [("a" * 32, events)])
    assert [part.bounds for part in lone] == [(None, "a" * 32), ("a" * 32, None)] and lone[0].whole == ("dashboard",)
    halves = replay.partition(PROJECTIONS, counts, 2)
    assert [part.bounds for part in halves] == [
        (None, "80000000-0000-0000-0000-000000000000"),
        ("80000000-0000-0000-0000-000000000000", None),
    ]


def test_a_part_reads_only_its_share_of_the_aggregates(client: Client) -> None:
    app = client._runtime.app
    head = app.recorder.max_notification_id()
    topics = sorted({topic for cls in PROJECTIONS if cls.by_aggregate for topic in cls.topics})
    aggregates = replay.aggregate_sizes(app)
    assert [origin for origin, _ in aggregates] == sorted(origin for origin, _ in aggregates)
    assert sum(n for _, n in aggregates) == head  # every event belongs to one aggregate
    cut = aggregates[len(aggregates) // 2][0]
    low = list(replay.stored(app, head, shared=topics, bounds=(None, cut), batch=7))
    high = list(replay.stored(app, head, shared=topics, bounds=(cut, None), batch=7))
    assert low and high and all(origin < cut for *_, origin in low) and all(origin >= cut for *_, origin in high)
    assert sorted(row[0] for row in low + high) == [row[0] for row in replay.stored(app, head, whole=topics)]
    assert len(low) + len(high) == sum(n for topic, n in replay.topic_counts(app, head).items() if topic in topics)


def test_a_short_history_or_one_process_replays_in_this_process(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _counting(monkeypatch, "_run_parts")
    monkeypatch.setattr(replay, "PARALLEL_MIN_EVENTS", 10_000)
    assert client.audit_replay().equal
    one = client.settings.model_copy(update={"replay_processes": 1})
    monkeypatch.setattr(replay, "PARALLEL_MIN_EVENTS", 50)
    scratch = replay.ScratchStore()
    try:
        replay.rebuild_scratch(client._runtime.app, one, scratch)
    finally:
        scratch.close()
    assert runs == []
