"""Following the event store's notification log, on SQLite (which cannot be subscribed to) and
PostgreSQL alike: poll `select_notifications` from a recorded position."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from eventsourcing.application import Application

from projections.store import ReadStore

log = logging.getLogger(__name__)

BATCH = 500


class Follower(ABC):
    """Processes each event after its recorded position; `process` must record the new position
    (with its own writes, where it has any) so that a restart resumes where it stopped."""

    name: str = ""
    topics: Sequence[str] = ()  # empty: every event

    def __init__(self, app: Application[Any], store: ReadStore) -> None:
        self.app = app
        self.store = store
        # The position this process last read or wrote. Only ever at or behind the stored one (any
        # process only moves a position forward), so while the log's head is not past it there is
        # nothing to do, and no need to read the stored position.
        self.known_position = -1

    @abstractmethod
    def process(self, event: Any, notification_id: int) -> None: ...

    def process_batch(self, events: Sequence[tuple[Any, int]], last_id: int) -> None:
        """Process events in order (each with its notification id), up to `last_id`. Followers that
        can write a whole batch in one transaction override this."""
        for event, notification_id in events:
            self.process(event, notification_id)

    def behind(self, head: int | None) -> tuple[int, int] | None:
        """(stored position, head) when the log's head is past this follower, else None. `head`: the
        log's last notification id, when the caller has just read it for several followers."""
        if head is None:
            head = self.app.recorder.max_notification_id() or 0
        if head <= self.known_position:
            return None
        position = self.known_position = self.store.position(self.name)
        return (position, head) if head > position else None

    def run_once(self, head: int | None = None) -> int:
        """Process one batch; returns how many events it processed."""
        span = self.behind(head)
        if span is None:
            return 0
        position, head = span
        batch = self.app.recorder.select_notifications(start=position + 1, limit=BATCH, stop=head, topics=self.topics)
        if batch:
            self.process_batch([(self.app.mapper.to_domain_event(n), n.id) for n in batch], batch[-1].id)
            self.known_position = batch[-1].id
        if len(batch) < BATCH:
            # Events between here and `head` are not ours: move past them so waiters see us caught up.
            with self.store.transaction() as tx:
                self.store.advance(tx, self.name, head)
            self.known_position = head
        return len(batch)


class FollowerThread(threading.Thread):
    """Runs followers in turn until stopped. A failing follower is logged and retried after a
    back-off; it never skips an event."""

    def __init__(self, followers: Sequence[Follower], poll_interval: float, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.followers = list(followers)
        self.poll_interval = poll_interval
        self.stop_event = threading.Event()
        self.failures = 0

    def run(self) -> None:
        backoff = self.poll_interval
        while not self.stop_event.is_set():
            try:
                heads: dict[int, int] = {}  # one read of the log's head per pass, for all followers
                busy = 0
                for follower in self.followers:
                    recorder = follower.app.recorder
                    if id(recorder) not in heads:
                        heads[id(recorder)] = recorder.max_notification_id() or 0
                    busy += follower.run_once(heads[id(recorder)])
                backoff = self.poll_interval
            except Exception:
                self.failures += 1
                log.exception("%s failed; retrying in %.1fs", self.name, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if not busy:
                self.stop_event.wait(self.poll_interval)
            self.after_pass()

    def after_pass(self) -> None:
        """Hook for periodic work between passes (the dispatcher's reconciliation)."""

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.join(timeout)
