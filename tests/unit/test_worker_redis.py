"""The rq worker looks up what redis-py tells the server about itself once, for all its horses, and
reads JSON payloads whatever it is told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import redis.utils

from workers.worker import PreloadedWorker


@pytest.fixture(autouse=True)
def no_inherited_context(monkeypatch: Any) -> None:
    from workers import context

    monkeypatch.setattr(context, "_inherited", None)


def test_new_connections_of_a_worker_do_not_read_the_package_metadata(
    tmp_path: Path, fabric: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redis.driver_info")  # redis-py 8: before it, the version is read once at import
    monkeypatch.setenv("BACKUP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BACKUP_FABRIC", str(fabric))
    connection = redis.Redis.from_url("redis://127.0.0.1:6379/15")  # nothing is sent: no server needed
    worker = PreloadedWorker(["jobs"], connection=connection)
    lookups: list[str] = []
    monkeypatch.setattr(redis.utils, "get_lib_version", lambda: lookups.append("looked up") or "0")
    made = [worker.connection.connection_pool.make_connection() for _ in range(3)]  # as horses would
    assert lookups == []
    assert {c.driver_info.lib_version for c in made} == {redis.__version__}  # type: ignore[attr-defined]
    assert {c.driver_info.formatted_name for c in made} == {"redis-py"}  # type: ignore[attr-defined]
    plain = redis.Redis.from_url("redis://127.0.0.1:6379/15").connection_pool.make_connection()
    assert lookups == ["looked up"] and plain is not None  # without the worker, every connection looks it up


@pytest.mark.parametrize("serializer", [None, "pickle", "rq.serializers.DefaultSerializer", "json"])
def test_finding_8_a_worker_reads_json_whatever_serializer_its_command_line_names(
    tmp_path: Path, fabric: Path, monkeypatch: pytest.MonkeyPatch, serializer: str | None
) -> None:
    """As `rq worker` builds it: the queues made with the command line's serializer (RQ's pickle
    unless `--serializer json`), the worker given the same."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    monkeypatch.setenv("BACKUP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BACKUP_FABRIC", str(fabric))
    connection = fakeredis.FakeRedis()
    queues = [Queue("jobs", connection=connection, serializer=serializer)]
    worker = PreloadedWorker(queues, connection=connection, serializer=serializer, job_class="rq.job.Job")
    assert worker.serializer is JSONSerializer
    assert [(q.name, q.serializer) for q in worker.queues] == [("jobs", JSONSerializer)]
