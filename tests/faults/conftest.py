"""The fault suite uses the integration tests' fixtures (a PostgreSQL schema, a deployment, a
private Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import PrivatePostgres
from tests.integration.conftest import deployment, pg_schema, private_redis  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own, to stop hard and start again."""
    server = PrivatePostgres()
    server.init()
    server.start()
    yield server
    server.remove()
