from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.clock import ManualClock
from tests.helpers import CLOCK_START, fabric_with

SERVICE_DIRS = ("integration", "faults")  # tests that use the real PostgreSQL and Redis


def pytest_configure(config: pytest.Config) -> None:
    """xdist's workers run with COLUMNS=80, from which the CLI's consoles (made when it is imported)
    would fix their width; the CLI tests pass the width they want per invocation."""
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its hook may be registered later)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the real services share them (Redis database 15): one xdist group, run in turn."""
    for item in items:
        if item.path.parent.name in SERVICE_DIRS:
            item.add_marker(pytest.mark.xdist_group("services"))


@pytest.fixture(autouse=True)
def _services_one_at_a_time(request: pytest.FixtureRequest) -> None:
    """Under xdist the real-service tests must be that one group: a pytest or pytest-xdist upgrade
    that loses the grouping fails here rather than as cross-talk between two tests' deployments."""
    if os.environ.get("PYTEST_XDIST_WORKER") and request.node.path.parent.name in SERVICE_DIRS:
        assert request.node.nodeid.endswith("@services"), "the real-service tests are not grouped"


@pytest.fixture
def bulk(tmp_path: Path) -> Iterator[Path]:
    """A directory for a test's big data (disk images, vault stores): removed when the test ends,
    whatever its outcome. (A passing test's tmp_path goes too, `tmp_path_retention_policy`; a
    failing one's is kept for its logs and data, but not for hundreds of MiB of images.)"""
    path = tmp_path / "bulk"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fabric(tmp_path: Path) -> Path:
    return fabric_with(tmp_path)


@pytest.fixture
def client(tmp_path: Path, fabric: Path) -> Iterator[Client]:
    """The embedded default: SQLite, in-process fakeredis, worker threads."""
    with Client(data_dir=tmp_path / "data", fabric=fabric, principal="alice@example.com") as c:
        yield c


@pytest.fixture
def discovered_vault(client: Client) -> str:
    vault = client.create_vault("vault-east", "japaneast", "rg-backup")
    assert client.wait(client.discover(vault)).status == "completed"
    return vault


@pytest.fixture
def world(tmp_path: Path, fabric: Path) -> Iterator[tuple[Client, ManualClock, str]]:
    """A vault protecting vm01 and vm02 with the default policy, on a clock the test moves (from
    CLOCK_START), its scheduler's own passes an hour apart: the test runs the scheduler itself."""
    clock = ManualClock(CLOCK_START)
    with Client(data_dir=tmp_path / "data", fabric=fabric, clock=clock, scheduler_interval=3600) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["vm01", "vm02"]))
        client.wait_all(client.protect(vault, ["vm01", "vm02"]))
        yield client, clock, vault
