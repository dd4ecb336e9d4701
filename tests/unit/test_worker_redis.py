"""The rq worker reads JSON payloads whatever it is told."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from orchestrator.runtime.worker import ProcessWorker


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
    worker = ProcessWorker(queues, connection=connection, serializer=serializer, job_class="rq.job.Job")
    try:
        assert worker.serializer is JSONSerializer
        assert [(q.name, q.serializer) for q in worker.queues] == [("jobs", JSONSerializer)]
    finally:
        worker.teardown()
