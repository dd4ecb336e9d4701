"""The API service in the distributed deployment: two stateless replicas (`backupctl server`) in front
of PostgreSQL and Redis, with `rq worker` and `backupctl serve` processes doing the work."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from orchestrator import Client, OrchestratorError
from tests.deployment import Deployment
from tests.helpers import event_count, free_port

pytestmark = pytest.mark.integration


def start_replica(deployment: Deployment, name: str) -> str:
    port = free_port()
    log = (deployment.tmp / f"{name}.log").open("ab")
    deployment.procs[name] = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "server", "--host", "127.0.0.1", "--port", str(port)],
        env=deployment.env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, deployment.logs()
        time.sleep(0.2)


def test_two_replicas_serve_one_deployment_under_the_callers_identity(deployment: Deployment) -> None:
    deployment.start_all(workers=2)
    with deployment.client() as local:  # on the database itself: the first owner
        owner = local.create_identity("admin", "owner")
    first, second = start_replica(deployment, "api1"), start_replica(deployment, "api2")
    with Client(url=first, token=owner) as one, Client(url=second, token=owner) as two:
        vault = one.create_vault("vault-east", "japaneast", "rg")
        two.wait(two.discover(vault), timeout=60)
        one.wait_all(one.register(vault, ["vm01", "vm02"]), timeout=120)
        two.wait_all(two.protect(vault, ["vm01"]), timeout=120)
        job = one.wait(two.backup_now(vault, "vm01"), timeout=120)
        assert job.status == "completed", deployment.logs()
        assert [p.vm_name for p in two.recovery_points(vault)] == ["vm01"]
        reader_token = one.create_identity("auditor", "reader", vault)
        principals = {e.principal for e in two.history(vault_id=vault) if not e.principal.startswith("worker:")}
        assert principals == {"admin"}
    with Client(url=second, token=reader_token) as reader, deployment.client() as local:
        assert [v.name for v in reader.vaults()] == ["vault-east"]
        before = event_count(local)
        with pytest.raises(OrchestratorError) as refused:
            reader.backup_now(vault, "vm01")
        assert refused.value.code == "NotAuthorized" and "operator" in refused.value.message
        assert event_count(local) == before
