"""Aggregates sized by their invariants (issue 15, point 4): protecting many VMs at once, with four
worker processes reporting their protections at the same time, writes each VM's item and job only,
so no two reports ever contend for one aggregate.

A version conflict is a rejected insert: PostgreSQL takes the next value of the notification id
sequence for each row it tries to insert, and a rejected transaction gives none back. So the stored
notification ids have exactly one gap per row of a rejected write: no gaps, no conflicts (and no
retried command)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment
from tests.helpers import PG_DB, PG_HOST, PG_USER

pytestmark = pytest.mark.integration
VMS = [f"vm{i:03d}" for i in range(200)]


@pytest.fixture
def fabric(tmp_path: Path) -> Path:
    return write_fabric(tmp_path / "bulkfabric", {"default": [vm_entry(vm, "japaneast") for vm in VMS]}, disk_mib=1)


def rejected_rows(schema: str) -> int:
    """Notification ids taken by inserts that were rolled back: the holes in the stored sequence."""
    with psycopg.connect(host=PG_HOST, user=PG_USER, dbname=PG_DB) as conn:
        row = conn.execute(
            f"SELECT min(notification_id), max(notification_id), count(*) FROM {schema}.orchestrator_events"
        ).fetchone()
    assert row is not None
    low, high, count = row
    return int(high - low + 1 - count)


def test_protecting_200_vms_with_four_workers_records_no_version_conflict(
    deployment: Deployment, pg_schema: str
) -> None:
    deployment.start_all(workers=4)
    with deployment.client() as client:
        vault = client.create_vault("vault-bulk", "japaneast", "rg")
        assert client.wait(client.discover(vault), timeout=60).status == "completed", deployment.logs()
        registered = client.wait_all(client.register(vault, VMS), timeout=600)
        assert {j.status for j in registered} == {"completed"}, deployment.logs()
        protected = client.wait_all(client.protect(vault, VMS), timeout=600)
        assert {j.status for j in protected} == {"completed"}, deployment.logs()
        assert len(client.protected_items(vault)) == 200
        [default] = client.policies(vault)
        assert default.item_count == 200  # membership, derived from the items
    assert rejected_rows(pg_schema) == 0
    assert "version conflict" not in deployment.logs()
