"""Each module a process starts from imports first, in a fresh interpreter: the rq worker imports its
worker class (and the tasks) before anything else, the CLI its own module (an import cycle that
only shows in one order broke every `rq worker` once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "module",
    [
        "orchestrator.runtime.worker",
        "workers.tasks",
        "orchestrator.entry.cli.main",
        "orchestrator",
        "orchestrator.runtime.services",
        "workers.restore",
    ],
)
def test_an_entry_point_imports_first(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
