"""Shared test helpers: fabrics, services and event-store inspection."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.fabric.sample import vm_entry, write_fabric

IN_CI = os.environ.get("CI") == "true"
CLOCK_START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)  # where the `world` fixture's clock starts
PG_HOST = os.environ.get("TEST_POSTGRES_HOST", "127.0.0.1")
PG_USER = os.environ.get("TEST_POSTGRES_USER", "postgres")
PG_DB = os.environ.get("TEST_POSTGRES_DB", "test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def need(condition: bool, reason: str) -> None:
    """Skip for lack of a service outside CI; in CI a missing service is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def fabric_with(tmp: Path, healthy: int = 20, region: str = "japaneast", **extra: dict[str, Any]) -> Path:
    """A fabric of `healthy` running VMs in `region`, plus the special VMs the tests use."""
    vms = [vm_entry(f"vm{i:02d}", region) for i in range(1, healthy + 1)]
    vms += [
        vm_entry("noagent", region, agent={"installed": False}),
        vm_entry("oldagent", region, agent={"version": "2.6.1198.700"}),
        vm_entry("notready", region, agent={"ready": False}),
        vm_entry("stopped", region, power_state="stopped"),
        vm_entry("westvm", "japanwest"),
        vm_entry("shop", region, cloud_service="shop-cs", deployment_model="classic", resource_group="rg-c"),
        vm_entry("shop", region, cloud_service="blog-cs", deployment_model="classic", resource_group="rg-c"),
    ]
    return write_fabric(tmp / "fabric", {"default": vms, "other-sub": [vm_entry("othervm", region)]}, disk_mib=1)


def event_count(client: Any) -> int:
    return client._runtime.app.recorder.max_notification_id() or 0


def wait_dispatched(client: Any, timeout: float = 30.0) -> None:
    """Until the dispatcher has recorded its position past every event stored so far: it enqueues a
    job's task first and records its position after, and the reconciler looks only at jobs it passed."""
    runtime = client._runtime
    head = runtime.app.recorder.max_notification_id() or 0
    assert runtime.store.wait(["dispatcher"], head, timeout), "the dispatcher did not record its position"


def topics(client: Any, *, start: int = 1) -> Counter[str]:
    notifications = client._runtime.app.recorder.select_notifications(start=start, limit=100000)
    return Counter(n.topic for n in notifications)


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def redis_available(url: str = REDIS_URL) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def new_pg_schema() -> str:
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def pg_env(tmp_path: Path, fabric: Path, schema: str) -> dict[str, str]:
    """The BACKUP_* settings of a process on the real PostgreSQL, in a schema of the test's own (as
    `pg_client` has them)."""
    return {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_EVENT_STORE": "postgres",
        "BACKUP_POSTGRES_HOST": PG_HOST,
        "BACKUP_POSTGRES_USER": PG_USER,
        "BACKUP_POSTGRES_DBNAME": PG_DB,
        "BACKUP_POSTGRES_SCHEMA": schema,
    }


def pg_client(tmp_path: Path, fabric: Path, schema: str, **extra: Any) -> Any:
    """The embedded queue on the real PostgreSQL, in a schema of the test's own."""
    from orchestrator import Client

    return Client(
        data_dir=tmp_path / "data",
        fabric=fabric,
        event_store="postgres",
        postgres_host=PG_HOST,
        postgres_user=PG_USER,
        postgres_dbname=PG_DB,
        postgres_schema=schema,
        principal="alice",
        **extra,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(client: Any, log_level: str = "warning") -> Iterator[str]:
    """The API service over `client` (an in-process one) on a free port, in a thread; yields its URL."""
    import uvicorn

    from orchestrator.entry.api.server import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(client), host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class PrivateRedis:
    """A redis-server of the test's own, so a test can stop and start it."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        need(binary is not None, "redis-server is not installed")
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_available(self.url):
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def edit_vm(inventory: Path, name: str, **facts: Any) -> None:
    """Change a VM's facts in an inventory file, as an operator would."""
    import yaml

    data = yaml.safe_load(inventory.read_text())
    for sub in data["subscriptions"]:
        for vm in sub["vms"]:
            if vm["name"] == name:
                vm.update(facts)
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary directory), so that a test can
    stop it hard and start it again. Run as the `postgres` user when the tests run as root."""

    def __init__(self) -> None:
        import tempfile

        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="private-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        binary = shutil.which("pg_ctl")
        need(binary is not None, "pg_ctl is not installed")
        self.bin = Path(str(binary)).parent

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        """As a crash would: no checkpoint, connections cut."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def fabric_hanging_once(tmp: Path, disk_mib: int) -> tuple[Path, Path]:
    """A fabric of one Linux VM `db` whose post-snapshot script hangs (two minutes) the first time it
    runs and passes after: the script runs once every block is stored and before the manifest is
    committed, the worst moment for a worker to die. Returns the inventory and the marker file the
    first run creates as it starts hanging."""
    fabric = tmp / "slowfabric"
    fabric.mkdir()
    marker = tmp / "hung-once"
    (fabric / "post.sh").write_text(f"#!/bin/sh\nif [ ! -e {marker} ]; then touch {marker}; sleep 120; fi\n")
    (fabric / "post.sh").chmod(0o755)
    inventory = write_fabric(
        fabric,
        {
            "default": [
                vm_entry(
                    "db",
                    "japaneast",
                    os={"type": "linux", "version": "Ubuntu 16.04"},
                    freeze={"pre_script": None, "post_script": "post.sh", "script_timeout_s": 300},
                )
            ]
        },
        disk_mib=disk_mib,
    )
    return inventory, marker
