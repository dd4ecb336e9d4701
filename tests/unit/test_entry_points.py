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


def test_the_cli_loads_without_the_client_until_a_command_needs_one() -> None:
    """Importing the client (the stores, the queue, the audit checks) was most of every command's
    start-up, `--help` and a refused argument included: the CLI imports it when a command runs."""
    program = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from orchestrator.entry.cli.main import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(app, ['jobs', '--limit', '0']).exit_code == 2\n"
        "heavy = ('orchestrator.entry.client', 'orchestrator.runtime.bootstrap', 'rq', 'redis')\n"
        "loaded = sorted(m for m in heavy if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
