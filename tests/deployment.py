"""The distributed deployment as processes: `backupctl serve` followers and `rq worker`s, on the
real PostgreSQL and Redis, each test in a PostgreSQL schema and Redis database of its own."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import redis

from orchestrator import Client
from orchestrator.config import load_settings
from tests.helpers import PG_DB, PG_HOST, PG_USER

WORKER_ARGS = [
    "--worker-ttl",
    "60",
    "--maintenance-interval",
    "30",
    "--job-monitoring-interval",
    "10",
    "--serializer",
    "json",
    "--worker-class",
    "orchestrator.runtime.worker.ProcessWorker",
]


class Deployment:
    def __init__(self, tmp: Path, fabric: Path, schema: str, redis_url: str) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).parents[1]),
            "BACKUP_DATA_DIR": str(tmp / "data"),
            "BACKUP_FABRIC": str(fabric),
            "BACKUP_EVENT_STORE": "postgres",
            "BACKUP_POSTGRES_HOST": PG_HOST,
            "BACKUP_POSTGRES_USER": PG_USER,
            "BACKUP_POSTGRES_DBNAME": PG_DB,
            "BACKUP_POSTGRES_SCHEMA": schema,
            "BACKUP_REDIS_URL": redis_url,
            "BACKUP_PRINCIPAL": "ops@example.com",
            "BACKUP_RECONCILE_INTERVAL": "1",
            "BACKUP_POLL_INTERVAL": "0.05",
            "BACKUP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode(),  # every process of it holds it
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def client(self) -> Client:
        environ = {k: v for k, v in self.env.items() if k.startswith("BACKUP_")}
        return Client(load_settings(environ), start_services=False)

    def start(self, name: str) -> None:
        if name.startswith("worker"):
            rq = Path(sys.executable).parent / "rq"
            args = [str(rq), "worker", "jobs", "--url", self.redis_url, *WORKER_ARGS, "--quiet"]
        else:
            args = [sys.executable, "-m", "orchestrator", "serve", name]
        log = (self.tmp / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=log, start_new_session=True)

    def start_all(self, workers: int = 2) -> None:
        for name in ["dispatcher", "projections", *(f"worker{i}" for i in range(workers))]:
            self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL the process and all its descendants (a job's scripts, say), wherever their process
        group is."""
        proc = self.procs.pop(name)
        for pid in [*_descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.tmp.glob("*.log"))


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def flush(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def deployment_fixture(tmp: Path, fabric: Path, schema: str, redis_url: str) -> Iterator[Deployment]:
    flush(redis_url)
    deployment = Deployment(tmp, fabric, schema, redis_url)
    try:
        yield deployment
    finally:
        deployment.stop_all()
        flush(redis_url)


def kill_a_backup_mid_snapshot(deployment: Deployment, client: Client, marker: Path) -> tuple[str, str, float, int]:
    """With the fabric of `fabric_hanging_once` and workers worker0 and worker1 running: protect `db`,
    start its backup, wait until it hangs in its post-snapshot script (every block stored, no manifest
    yet), SIGKILL both workers (whichever runs the snapshot dies in it) and start worker2. Returns the
    vault, the backup job, when it was killed, and the bytes the dead attempt stored."""
    vault = client.create_vault("vault-east", "japaneast", "rg")
    client.wait(client.discover(vault), timeout=60)
    client.wait_all(client.register(vault, ["db"]), timeout=60)
    client.wait_all(client.protect(vault, ["db"]), timeout=60)
    job_id = client.backup_now(vault, "db")
    wait_for(marker.exists, 60, "the backup to reach its post-snapshot script")
    store = client._runtime.worker_context().vault_store(UUID(vault))
    written = store.stored_bytes()
    assert store.manifest_ids() == [] and written > 0  # blocks written, no manifest
    killed_at = time.monotonic()
    for name in ("worker0", "worker1"):
        deployment.kill(name)
    deployment.start("worker2")
    return vault, job_id, killed_at, written
