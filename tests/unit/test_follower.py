"""A follower reads the stored position only when the log has moved past what it knows, and a
position another process moved on is never processed twice."""

from __future__ import annotations

from typing import Any

from orchestrator import Client
from orchestrator.audit.replay import ScratchStore, table_rows
from projections.base import ProjectionGroup
from projections.follower import Follower
from projections.runner import NAMES, PROJECTIONS, build_projections


class Recording(Follower):
    name = "recording"

    def __init__(self, app: Any, store: Any) -> None:
        super().__init__(app, store)
        self.seen: list[int] = []

    def process(self, event: Any, notification_id: int) -> None:
        self.seen.append(notification_id)
        with self.store.transaction() as tx:
            self.store.advance(tx, self.name, notification_id)


def test_an_idle_follower_does_not_read_its_position_and_resumes_from_the_stored_one(
    client: Client, monkeypatch: Any
) -> None:
    runtime = client._runtime
    client.create_vault("vault-a", "japaneast", "rg")
    first, second = Recording(runtime.app, runtime.store), Recording(runtime.app, runtime.store)
    assert first.run_once() > 0
    head = runtime.app.recorder.max_notification_id()
    assert first.seen[-1] <= head and first.known_position == head

    reads: list[str] = []
    real_position = runtime.store.position
    monkeypatch.setattr(runtime.store, "position", lambda name: reads.append(name) or real_position(name))
    assert [first.run_once(head) for _ in range(3)] == [0, 0, 0]
    assert reads == []  # nothing new: no read of the stored position

    client.create_vault("vault-b", "japaneast", "rg")
    assert second.run_once() > 0  # another process (same name) moves the position on
    assert first.run_once() == 0  # the log moved: `first` reads the stored position, already past it
    assert reads.count("recording") == 2 and set(first.seen).isdisjoint(second.seen)


def test_the_projection_group_reads_the_log_once_a_pass_and_builds_what_each_projection_builds(
    client: Client, discovered_vault: str, monkeypatch: Any
) -> None:
    runtime = client._runtime
    client.wait_all(client.register(discovered_vault, ["vm01", "vm02"]))
    client.wait_all(client.protect(discovered_vault, ["vm01", "vm02"]))
    client.wait(client.backup_now(discovered_vault, "vm01"))
    head = runtime.app.recorder.max_notification_id() or 0
    # every follower of the client caught up (the audit index reads the log too), so the reads
    # counted below are the group's
    assert runtime.store.wait([*NAMES, "audit_index", "audit_chain"], head, 30)
    scratch = ScratchStore()
    try:
        projections = build_projections(runtime.app, scratch.store)
        jobs = next(p for p in projections if p.name == "jobs")
        while jobs.run_once():  # one read model ahead of the others, as after a rebuild of the others
            pass
        reads: list[int] = []
        real_select = runtime.app.recorder.select_notifications
        monkeypatch.setattr(
            runtime.app.recorder, "select_notifications", lambda *a, **k: reads.append(1) or real_select(*a, **k)
        )
        monkeypatch.setattr("projections.base.BATCH", 5)  # several passes, each ending mid-log
        group = ProjectionGroup(runtime.app, scratch.store, projections)
        passes = 0
        while group.run_once():
            passes += 1
        assert passes > 3 and len(reads) == passes  # one read of the log per pass, for every read model
        assert scratch.store.positions(NAMES) == dict.fromkeys(NAMES, head)
        for table in (t for cls in PROJECTIONS for t in cls.owned):
            assert table_rows(scratch.store, table) == table_rows(runtime.store, table), table
    finally:
        scratch.close()
