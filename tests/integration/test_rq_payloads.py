"""Finding 8 against a real `rq worker ... --worker-class orchestrator.runtime.worker.ProcessWorker` process and a
real Redis: an RQ job planted in Redis is failed without being unpickled, imported or called, and the
worker goes on to run the orchestrator's jobs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry

from tests.deployment import WORKER_ARGS, Deployment, wait_for
from tests.helpers import REDIS_URL
from tests.planting import Planted, plant, status
from workers.queues import JOBS

pytestmark = pytest.mark.integration
ENDED = ("finished", "failed")


def workers_format(payload: tuple[Any, ...]) -> bytes:
    """A payload in the format the deployment's workers are told to read (`--serializer`), pickle
    being RQ's default."""
    named = WORKER_ARGS[WORKER_ARGS.index("--serializer") + 1] if "--serializer" in WORKER_ARGS else "pickle"
    return json.dumps(payload).encode() if named == "json" else pickle.dumps(payload)


def _carries_on(deployment: Deployment) -> None:
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        job = client.wait(client.discover(vault), timeout=60)
        assert job.status == "completed", deployment.logs()


def test_finding_8_a_pickled_payload_planted_in_redis_is_not_executed(tmp_path: Path, deployment: Deployment) -> None:
    marker = tmp_path / "pwned"
    connection = redis.Redis.from_url(REDIS_URL)
    exploit = pickle.dumps(Planted(marker))
    plant(connection, "planted-pickle", exploit, meta=exploit)
    deployment.start_all(workers=1)

    wait_for(lambda: status(connection, "planted-pickle") in ENDED, 60, "the worker to take the planted job")
    assert not marker.exists(), deployment.logs()
    assert status(connection, "planted-pickle") == "failed"
    assert "planted-pickle" in FailedJobRegistry(JOBS, connection=connection)
    assert Queue(JOBS, connection=connection).intermediate_queue.get_job_ids() == []
    _carries_on(deployment)
    assert not marker.exists()


def test_finding_8_a_json_payload_naming_another_function_is_not_run(tmp_path: Path, deployment: Deployment) -> None:
    """`os.system` named in the payload format the workers read, and (whichever that is) in JSON."""
    connection = redis.Redis.from_url(REDIS_URL)
    as_read, as_json = tmp_path / "as-read", tmp_path / "as-json"
    plant(connection, "planted-read", workers_format(("os.system", None, [f"touch {as_read}"], {})))
    plant(connection, "planted-json", json.dumps(["os.system", None, [f"touch {as_json}"], {}]).encode())
    deployment.start_all(workers=1)

    for rq_id in ("planted-read", "planted-json"):
        wait_for(lambda rq_id=rq_id: status(connection, rq_id) in ENDED, 60, f"the worker to take {rq_id}")
    assert not as_read.exists() and not as_json.exists(), deployment.logs()
    assert {status(connection, rq_id) for rq_id in ("planted-read", "planted-json")} == {"failed"}
    _carries_on(deployment)
