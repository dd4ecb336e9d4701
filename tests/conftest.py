from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import Client
from tests.helpers import fabric_with


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
