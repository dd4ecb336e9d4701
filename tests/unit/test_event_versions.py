"""Event class versions (issue 15, point 5): the mapper stores an event class's `class_version` with
its state and brings an older state up to date with the class's `upcast_v1_v2`... before validating
it, as the library's own mapper does. Two interpreters play two releases of the code: the first
stores an event of version 1, the second reads it with the class at version 2."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

RELEASE_1 = """
from eventsourcing.domain import event

class Note(Aggregate):
    TOPIC = "tests.note"

    class Created(Aggregate.Created):
        TOPIC = "tests.note.written"
        text: str

    @event(Created)
    def __init__(self, text: str) -> None:
        self.text = text
"""

RELEASE_2 = """
from typing import Any, ClassVar
from eventsourcing.domain import event

class Note(Aggregate):
    TOPIC = "tests.note"

    class Created(Aggregate.Created):
        # 2: the text became a title and a body
        TOPIC = "tests.note.written"
        class_version: ClassVar[int] = 2
        title: str
        body: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["title"], _, state["body"] = state.pop("text").partition(": ")

    @event(Created)
    def __init__(self, title: str, body: str) -> None:
        self.title = title
        self.body = body
"""

APP = """
import sys
from uuid import UUID
from orchestrator.write.application import Orchestrator
from orchestrator.domain.base import Aggregate
{release}
app = Orchestrator(env={{"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": sys.argv[1]}})
{action}
"""


def run(release: str, action: str, db: Path) -> str:
    code = APP.format(release=release, action=action)
    done = subprocess.run([sys.executable, "-c", code, str(db)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def stored_states(db: Path) -> list[dict[str, object]]:
    with sqlite3.connect(db) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT state FROM stored_events ORDER BY rowid")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.sqlite"


def test_an_event_stored_at_version_1_reads_back_through_the_upcaster_of_version_2(db: Path) -> None:
    note_id = run(RELEASE_1, 'note = Note(text="groceries: milk, eggs"); app.save(note); print(note.id)', db)
    assert "class_version" not in stored_states(db)[0]  # version 1 is stored as it always was
    read = run(
        RELEASE_2,
        f'note = app.repository.get(UUID("{note_id}")); print(note.title, "|", note.body, "|", note.version)',
        db,
    )
    assert read == "groceries | milk, eggs | 1"


def test_an_event_of_a_versioned_class_is_stored_with_its_version_and_reads_back(db: Path) -> None:
    note_id = run(RELEASE_2, 'note = Note(title="t", body="b"); app.save(note); print(note.id)', db)
    assert stored_states(db)[0]["class_version"] == 2
    read = run(RELEASE_2, f'note = app.repository.get(UUID("{note_id}")); print(note.title, note.body)', db)
    assert read == "t b"
    with sqlite3.connect(db) as conn:
        [(topic,)] = conn.execute("SELECT topic FROM stored_events").fetchall()
    assert topic == "tests.note.written"
