"""The block ledger's events of version 1 (a lease named by its backup job's id) read as version 2."""

from __future__ import annotations

from uuid import uuid4

from orchestrator.domain.ledger import BlockLedger
from orchestrator.write.persistence import upcast


def test_a_version_1_lease_is_its_jobs_and_is_released_as_such() -> None:
    job, ledger = uuid4(), uuid4()
    common = {"originator_id": str(ledger), "originator_version": 2, "timestamp": "2026-12-02T00:00:00+00:00"}
    taken = BlockLedger.LeaseTaken.model_validate(upcast(BlockLedger.LeaseTaken, {**common, "job_id": str(job)}))
    assert taken.lease_id == taken.job_id == job
    released = BlockLedger.LeasesReleased.model_validate(
        upcast(BlockLedger.LeasesReleased, {**common, "job_ids": [str(job)], "reason": "released"})
    )
    assert released.lease_ids == [job]
    aggregate = BlockLedger(vault_id=uuid4())
    aggregate.take_lease(job, job)  # as a version-1 history replays it
    assert aggregate.job_of(job) == job and aggregate.view()["leases"] == [str(job)]
    aggregate.release_leases(released.lease_ids, released.reason)
    assert aggregate.leases == []
