"""Docker does not run here, so check what compose would run: every orchestrator service's command
exists and starts, with the settings compose gives it (addresses pointed at this machine)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deployment import flush
from tests.helpers import PG_DB, PG_HOST, PG_USER, REDIS_URL, need, redis_available

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


def _interpolated(value: str) -> str:
    """`${NAME:-default}` as compose fills it in from the environment."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)


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
