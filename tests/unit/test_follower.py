"""A follower reads the stored position only when the log has moved past what it knows, and a
position another process moved on is never processed twice."""

from __future__ import annotations

from typing import Any

from orchestrator import Client
from orchestrator.follower import Follower


class Recording(Follower):
    name = "recording"

    def __init__(self, app: Any, store: Any) -> None:
        super().__init__(app, store)
        self.seen: list[int] = []

    def process(self, event: Any, notification_id: int) -> None:
        self.seen.append(notification_id)
        with self.store.transaction() as tx:
            self.store.advance(tx, self.name, notification_id)


def test_an_idle_follower_does_not_read_its_position_and_resumes_from_the_stored_one(client: Client, monkeypatch: Any) -> None:
    runtime = client.runtime
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
