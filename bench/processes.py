"""Whole processes, timed: the one way the benches that compare commands start them."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def product_env(data_dir: Path, fabric: Path) -> dict[str, str]:
    """This process's environment but its BACKUP_ settings, with the embedded data set's own."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")},
        "BACKUP_DATA_DIR": str(data_dir),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_SCHEDULER_INTERVAL": "3600",
        "PYTHONPATH": str(ROOT),
    }


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of `command` as a new process (its output discarded; a failure raises)."""
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def protect_in_new_vault(backupctl: str, env: dict[str, str], vm: str) -> None:
    """A vault `bench` (locally redundant) protecting `vm` with the default policy, through the CLI."""
    for command in (
        ["vault", "create", "bench", "--region", "japaneast", "-g", "rg", "--replication", "local"],
        ["discover", "bench"],
        ["register", vm, "--vault", "bench"],
        ["protect", vm, "--vault", "bench"],
    ):
        subprocess.run([backupctl, *command], env=env, check=True, capture_output=True)
