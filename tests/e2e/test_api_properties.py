"""A property test against the API service's OpenAPI description (schemathesis): requests made from
the description, valid and not, as an owner; none gets a 5xx, and every refusal carries an error
code. A real uvicorn server in front of an embedded client, as in test_api_service.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from orchestrator import Client
from tests.helpers import fabric_with, serving

EXAMPLES = 12  # per operation


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("api-properties")
    local = Client(data_dir=tmp / "data", fabric=fabric_with(tmp, healthy=2), scheduler_interval=3600)
    owner = local.create_identity("admin", "owner")
    vault = local.create_vault("vault-east", "japaneast", "rg")
    local.wait(local.discover(vault))
    try:
        with serving(local) as url:
            yield url, owner
    finally:
        local.close()


@pytest.fixture(scope="module")
def api_schema(served: tuple[str, str]) -> Any:
    url, _ = served
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error_and_every_refusal_has_a_code(case: Any, served: tuple[str, str]) -> None:
    url, owner = served
    if isinstance(case.body, dict) and "timeout" in case.body:  # a wait holds its call up to its timeout
        case.body["timeout"] = 0.5
    response = case.call(base_url=url, headers={"Authorization": f"Bearer {owner}"}, timeout=120)
    assert response.status_code < 500, (case.path, case.body, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and body.get("code"), (case.path, case.body, response.text)
        assert body.get("message"), response.text
