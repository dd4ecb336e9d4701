"""The core flow on PostgreSQL and Redis, with `rq worker` and `backupctl serve` processes."""

from __future__ import annotations

from collections import Counter

import pytest

from orchestrator import OrchestratorError
from tests.deployment import Deployment
from tests.helpers import event_count, topics
from tests.unit.test_vault import INVALID_NAMES

pytestmark = pytest.mark.integration
HEALTHY = [f"vm{i:02d}" for i in range(1, 21)]


def test_twenty_vms_register_through_rq_workers_on_postgres(deployment: Deployment) -> None:
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        discovery = client.wait(client.discover(vault), timeout=60)
        assert discovery.status == "completed", deployment.logs()
        jobs = client.wait_all(client.register(vault, [*HEALTHY, "noagent"]), timeout=120)
        by_vm = {j.vm_name: j for j in jobs}
        assert {by_vm[vm].status for vm in HEALTHY} == {"completed"}
        assert by_vm["noagent"].error_code == "VmAgentNotInstalled"
        assert "install" in by_vm["noagent"].error_message.lower()
        assert len(client.protected_items(vault)) == 20

        before = event_count(client)
        with pytest.raises(OrchestratorError) as caught:
            client.register(vault, ["vm01"])
        assert caught.value.code == "VmAlreadyRegistered"
        assert event_count(client) == before

        counts = topics(client)
        assert counts["backup.job.started"] == 22  # every job ran once: no retries, no duplicates
        assert counts["backup.vm.registered"] == 20


def test_the_ten_invalid_vault_names_store_nothing_on_postgres(deployment: Deployment) -> None:
    with deployment.client() as client:
        for name, code, rule in INVALID_NAMES:
            with pytest.raises(OrchestratorError) as caught:
                client.create_vault(name, "japaneast", "rg")
            assert (caught.value.code, caught.value.details[0]["rule"]) == (code, rule)
        client.create_vault("vault-a", "japaneast", "rg")
        with pytest.raises(OrchestratorError) as caught:
            client.create_vault("VAULT-A", "japaneast", "rg")
        assert caught.value.code == "VaultNameTaken"
        assert event_count(client) == 2  # the vault and its DefaultPolicy


def test_every_process_killed_mid_flow_and_restarted_loses_nothing(deployment: Deployment) -> None:
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)
        job_ids = client.register(vault, HEALTHY)
        deployment.stop_all()  # SIGKILL dispatcher, projections, workers and their work horses
        deployment.start_all(workers=2)
        jobs = client.wait_all(job_ids, timeout=180)
        assert {j.status for j in jobs} == {"completed"}, deployment.logs()
        counts = topics(client)
        assert counts["backup.vm.registered"] == 20 and counts["backup.job.completed"] == 21
        completed = Counter(j.job_id for j in client.jobs(status="completed"))
        assert set(completed.values()) == {1}
