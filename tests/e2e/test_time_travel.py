"""Read models as of past instants, and the replay digest, after a scripted history of more than
10,000 events (SQLite here; PostgreSQL in tests/integration/test_audit_postgres.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator import Client
from tests.scripted import TARGET_EVENTS, run_script, snapshot


def test_as_of_and_replay_after_ten_thousand_events(
    tmp_path: Path, fabric: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forks: list[int] = []
    fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or fork())
    with Client(data_dir=tmp_path / "data", fabric=fabric, principal="alice", scheduler_interval=3600) as client:
        captured = run_script(client)
        assert (client._runtime.app.recorder.max_notification_id() or 0) >= TARGET_EVENTS
        assert len(captured) >= 5
        for instant, expected in captured:
            with client.as_of(instant) as past:
                assert snapshot(past) == expected, instant
        replayed = client.audit_replay()
        assert replayed.equal and not replayed.differences
        assert replayed.events >= TARGET_EVENTS
        assert forks == []  # rebuilt in this process, with the caller's application and store
