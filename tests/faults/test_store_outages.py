"""PostgreSQL, then Redis, restarted while backups run: commands during the outage succeed or fail
with a clear retryable error, nothing is half-written, and the run completes once the store is back."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator import Client, OrchestratorError
from tests.deployment import Deployment, deployment_fixture
from tests.helpers import PrivatePostgres, PrivateRedis, need, redis_available

pytestmark = [pytest.mark.integration, pytest.mark.faults]
VMS = [f"vm{i:02d}" for i in range(1, 21)]


def _protected(client: Client) -> str:
    vault = client.create_vault("vault-east", "japaneast", "rg")
    client.wait(client.discover(vault), timeout=60)
    registered = client.wait_all(client.register(vault, VMS), timeout=120)
    assert {j.status for j in registered} == {"completed"}, [
        (j.error_code, j.error_message) for j in registered if j.status == "failed"
    ]
    protected = client.wait_all(client.protect(vault, VMS), timeout=120)
    assert {j.status for j in protected} == {"completed"}, [(j.error_code, j.error_message) for j in protected]
    return vault


def _outcome(action: object) -> str:
    """ "ok", or the code of a retryable refusal; anything else fails the test."""
    try:
        action()  # type: ignore[operator]
        return "ok"
    except OrchestratorError as exc:
        assert exc.code in ("EventStoreUnavailable", "ReadStoreUnavailable") and "retry" in exc.message, (
            exc.code,
            exc.message,
        )
        return exc.code


def _nothing_half_written(client: Client, vault: str) -> None:
    points = client.recovery_points(vault)
    assert client.check_vault(vault)["clean"]
    assert len({p.job_id for p in points}) == len(points)
    assert client.audit_replay().equal  # every stored event reads back and rebuilds the same read models
    assert client.audit_verify().clean


def test_postgres_restarted_mid_run(
    tmp_path: Path, fabric: Path, private_pg: PrivatePostgres, vault_store: dict[str, str]
) -> None:
    need(redis_available(), "Redis is not answering")
    from tests.helpers import REDIS_URL

    with contextmanager(deployment_fixture)(tmp_path, fabric, "public", REDIS_URL) as deployment:
        deployment.env.update(
            BACKUP_POSTGRES_PORT=str(private_pg.port),
            BACKUP_POSTGRES_DBNAME="postgres",
            BACKUP_POSTGRES_USER="postgres",
            **vault_store,
        )
        deployment.start_all(workers=2)
        with deployment.client() as client:
            vault = _protected(client)
            first = [client.backup_now(vault, vm) for vm in VMS[:10]]
            private_pg.stop()
            during = Counter([_outcome(lambda: client.backup_now(vault, VMS[10])), _outcome(lambda: client.jobs())])
            time.sleep(3)
            private_pg.start()
            assert set(during) <= {"ok", "EventStoreUnavailable", "ReadStoreUnavailable"} and during["ok"] < 2

            ended = client.wait_all(first, timeout=150)
            assert {j.status for j in ended} <= {"completed", "failed"}
            assert all(j.error_code for j in ended if j.status == "failed")
            # The run completes: whatever the outage stopped is backed up now.
            again = [
                client.backup_now(vault, vm)
                for vm in VMS
                if not any(p.vm_name == vm for p in client.recovery_points(vault))
            ]
            finished = client.wait_all(again, timeout=150)
            assert {j.status for j in finished} <= {"completed"}, (
                Counter(j.error_code for j in finished),
                _logs(deployment),
            )
            assert {p.vm_name for p in client.recovery_points(vault)} == set(VMS)
            _nothing_half_written(client, vault)


def test_redis_restarted_mid_run(
    tmp_path: Path, fabric: Path, pg_schema: str, private_redis: PrivateRedis, vault_store: dict[str, str]
) -> None:
    with contextmanager(deployment_fixture)(tmp_path, fabric, pg_schema, private_redis.url) as deployment:
        deployment.env.update(vault_store)
        deployment.start_all(workers=2)
        with deployment.client() as client:
            vault = _protected(client)
            jobs = [client.backup_now(vault, vm) for vm in VMS[:10]]
            private_redis.stop()
            during = [client.backup_now(vault, vm) for vm in VMS[10:]]  # commands need no Redis: all accepted
            time.sleep(2)
            private_redis.start()
            for name in [n for n in deployment.procs if n.startswith("worker")]:
                deployment.kill(name)  # an rq worker exits when its Redis goes away; a supervisor restarts it
                deployment.start(name)
            ended = client.wait_all(jobs + during, timeout=150)
            assert Counter(j.status for j in ended) == {"completed": len(VMS)}, _logs(deployment)
            _nothing_half_written(client, vault)


def _logs(deployment: Deployment) -> str:
    return deployment.logs()[-4000:]
