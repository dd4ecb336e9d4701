"""The API service in the distributed deployment: two stateless replicas (`backupctl server`) in front
of PostgreSQL and Redis, with `rq worker` and `backupctl serve` processes doing the work."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from orchestrator import Client, OrchestratorError
from tests.deployment import Deployment
from tests.helpers import event_count, free_port
from tests.role_matrix import Service, check_role_matrix

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


def test_deletion_protection_and_a_guard_through_the_replicas_anchored_outside_the_database(
    deployment: Deployment,
) -> None:
    """On PostgreSQL + Redis with every service sealing its events and the projections service
    writing the witness: immutability, a guarded soft delete, undelete and a byte-for-byte restore."""
    deployment.env["BACKUP_AUDIT_KEY"] = base64.b64encode(os.urandom(32)).decode()
    deployment.env["BACKUP_AUDIT_WITNESS"] = str(deployment.tmp / "witness")
    deployment.start_all(workers=2)
    with deployment.client() as local:
        owner = local.create_identity("admin", "owner")
        approver = local.create_identity("gina", "guard_admin")
    first, second = start_replica(deployment, "api1"), start_replica(deployment, "api2")
    with Client(url=first, token=owner) as one, Client(url=second, token=approver) as gina:
        vault = one.create_vault("vault-east", "japaneast", "rg")
        one.wait(one.discover(vault), timeout=60)
        one.wait_all(one.register(vault, ["vm01"]), timeout=120)
        one.wait_all(one.protect(vault, ["vm01"]), timeout=120)
        assert one.wait(one.backup_now(vault, "vm01"), timeout=120).status == "completed", deployment.logs()
        [point] = one.recovery_points(vault)
        one.create_guard("guard-1")
        one.attach_guard(vault, "guard-1")
        one.set_immutability(vault, "enabled")
        codes = []
        for attempt in (
            lambda: one.stop_protection(vault, "vm01", delete_data=True),
            lambda: one.set_immutability(vault, "disabled"),
        ):
            with pytest.raises(OrchestratorError) as refused:
                attempt()
            codes.append(refused.value.code)
        assert codes == ["VaultImmutable", "MultiUserAuthorizationRequired"]
        gina.approve_operation("guard-1", vault, "disable_immutability", 10)
        one.set_immutability(vault, "disabled")
        gina.approve_operation("guard-1", vault, "delete_data", 10)
        stopped = one.wait(one.stop_protection(vault, "vm01", delete_data=True), timeout=60)
        assert stopped.result["soft_deleted"] is True
        with pytest.raises(OrchestratorError) as refused:
            one.restore(point.recovery_point_id, "vm01-copy")
        assert refused.value.code == "VmSoftDeleted"
        one.wait(one.undelete(vault, "vm01"), timeout=60)
        restored = one.wait(one.restore(point.recovery_point_id, "vm01-copy"), timeout=120)
        assert restored.status == "completed" and restored.result["verified"] is True, deployment.logs()
        assert [a.state for a in gina.approvals("guard-1")] == ["used", "used"]
    with deployment.client() as local:
        fabric = local._runtime.fabric
        source = dict(fabric.disk_paths("default/rg-japaneast/vm01"))
        copy = fabric.find_vm("default", "vm01-copy")
        assert copy is not None
        restored_disks = {d.name: copy.disk_path(d).read_bytes() for d in copy.spec.disks}
        assert sorted(restored_disks.values()) == sorted(p.read_bytes() for p in source.values())
        head = local._runtime.app.recorder.max_notification_id() or 0
        assert local._runtime.store.wait(["audit_chain"], head, 60)
        report = local.audit_verify(chain_only=True)
        assert report.clean, [f.describe() for f in report.findings]
        assert report.authenticated == report.checked and report.witness_heads >= 1


def test_the_role_matrix_on_postgres_and_redis(deployment: Deployment, tmp_path: Path) -> None:
    """tests/role_matrix.py against a replica of the distributed deployment (its work done by `rq
    worker` processes), every refusal checked against the PostgreSQL event store."""
    deployment.start_all(workers=2)
    with deployment.client() as local:
        owner = local.create_identity("admin", "owner")
        check_role_matrix(Service(local, start_replica(deployment, "api"), owner), tmp_path)
