"""The fault suite uses the integration tests' fixtures (a PostgreSQL schema, a deployment, a
private Redis)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import deployment, pg_schema, private_redis  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.faults]
