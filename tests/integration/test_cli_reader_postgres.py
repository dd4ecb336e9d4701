"""A read command's quick path on PostgreSQL: the read models in the schema's `rm_*` tables and the
event log's head through the library's PostgreSQL recorder (orchestrator/entry/reader.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import pg_client, pg_env
from tests.unit.test_cli_reader import backupctl

pytestmark = pytest.mark.integration


def test_a_read_on_current_postgres_read_models_loads_no_write_side(
    tmp_path: Path, fabric: Path, pg_schema: str
) -> None:
    env = pg_env(tmp_path, fabric, pg_schema)
    with pg_client(tmp_path, fabric, pg_schema, start_services=False) as client:  # the read models behind
        vault_id = client.create_vault("vault-east", "japaneast", "rg")
    behind = backupctl(env, "vault", "list", "--json")
    assert behind["exit"] == 0 and "orchestrator.entry.client" in behind["loaded"], behind
    assert [v["vault_id"] for v in json.loads(behind["output"])] == [vault_id]
    current = backupctl(env, "vault", "list", "--json")  # caught up by the client just now
    assert current["exit"] == 0 and current["loaded"] == [], current
    assert json.loads(current["output"]) == json.loads(behind["output"])
    items = backupctl(env, "items", "vault-east", "--json")
    assert items["exit"] == 0 and items["loaded"] == [] and json.loads(items["output"]) == []
