from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployment import Deployment, deployment_fixture
from tests.helpers import (
    REDIS_URL,
    PrivateRedis,
    drop_pg_schema,
    need,
    new_pg_schema,
    pg_available,
    redis_available,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_schema() -> Iterator[str]:
    need(pg_available(), "PostgreSQL is not answering on TEST_POSTGRES_HOST")
    schema = new_pg_schema()
    yield schema
    drop_pg_schema(schema)


@pytest.fixture
def deployment(tmp_path: Path, fabric: Path, pg_schema: str) -> Iterator[Deployment]:
    need(redis_available(), f"Redis is not answering at {REDIS_URL}")
    yield from deployment_fixture(tmp_path, fabric, pg_schema, REDIS_URL)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, to stop and start."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
