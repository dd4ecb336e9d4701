"""The API service (issue 16, parts 1-3): the client contract over HTTP, the client that talks to it,
identities and roles. A real uvicorn server on a free port, in front of an embedded client."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator import Client
from orchestrator.entry.api.contract import LOCAL_ONLY, OPERATIONS
from orchestrator.entry.api.remote import RemoteClient
from orchestrator.errors import DomainError, NotFoundError, OrchestratorError
from tests.helpers import event_count, fabric_with, serving
from tests.role_matrix import Service, check_role_matrix


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    local = Client(data_dir=tmp_path / "data", fabric=fabric_with(tmp_path, healthy=4), scheduler_interval=3600)
    owner = local.create_identity("admin", "owner")
    try:
        with serving(local) as url:
            yield Service(local, url, owner)
    finally:
        local.close()


def test_every_method_of_the_client_is_served_or_stays_in_the_process() -> None:
    public = {name for name, _ in inspect.getmembers(Client, inspect.isfunction) if not name.startswith("_")}
    served = {name for name in OPERATIONS if "." not in name}
    assert public - served == LOCAL_ONLY
    for name in served:
        assert RemoteClient.__dict__.get(name) is not None, name
        assert inspect.signature(getattr(RemoteClient, name)) == inspect.signature(getattr(Client, name))


def test_the_client_over_http_returns_what_the_in_process_one_does(service: Service) -> None:
    remote = service.client(service.owner)
    assert isinstance(remote, RemoteClient)
    vault = remote.create_vault("vault-east", "japaneast", "rg")
    remote.wait(remote.discover(vault))
    remote.wait_all(remote.register(vault, ["vm01", "vm02"]))
    remote.wait_all(remote.protect(vault, ["vm01"]))
    job = remote.wait(remote.backup_now(vault, "vm01"))
    assert job == service.local.job(job.job_id)  # the same row, of the same type
    [point] = remote.recovery_points(vault)
    assert point == service.local.recovery_points(vault)[0]
    now = datetime.now(UTC)
    assert remote.dashboard(vault, now) == service.local.dashboard(vault, now)
    assert remote.precheck(vault, "vm01") == service.local.precheck(vault, "vm01")
    assert remote.audit_verify(chain_only=True).clean
    with remote.as_of(datetime.now(UTC)) as past:
        assert [v.name for v in past.vaults()] == ["vault-east"]
    with remote.as_of(datetime.now(UTC) - timedelta(days=1)) as before:
        assert before.vaults() == []


def test_errors_keep_their_codes_and_classes_and_store_nothing(service: Service) -> None:
    remote = service.client(service.owner)
    before = event_count(service.local)
    with pytest.raises(DomainError) as refused:
        remote.create_vault("-bad-", "japaneast", "rg")
    assert refused.value.code == "VaultNameInvalid" and refused.value.field == "name"
    with pytest.raises(NotFoundError) as missing:
        remote.job("0" * 8 + "-0000-0000-0000-" + "0" * 12)
    assert missing.value.code == "JobNotFound"
    with pytest.raises(OrchestratorError) as invalid:
        remote.jobs(status=5)  # type: ignore[arg-type]
    assert invalid.value.code == "CommandInvalid" and invalid.value.field == "status"
    assert event_count(service.local) == before


def test_the_principal_is_the_identity_and_never_the_callers(service: Service) -> None:
    remote = service.client(service.owner)
    vault = remote.create_vault("vault-east", "japaneast", "rg")
    assert {e.principal for e in remote.history(vault_id=vault)} == {"admin"}
    posing = httpx.post(
        f"{service.url}/v1/set_replication",
        json={"vault_id": vault, "replication": "local", "principal": "mallory"},
        headers={"Authorization": f"Bearer {service.owner}"},
    )
    assert posing.status_code == 422 and posing.json()["code"] == "CommandInvalid"
    assert posing.json()["field"] == "principal"


def test_no_token_a_wrong_one_or_a_revoked_one_is_unauthenticated(service: Service) -> None:
    remote = service.client(service.owner)
    token = remote.create_identity("bob", "reader")
    assert service.client(token).vaults() == []
    remote.revoke_identity("bob")
    for bad in (None, "nonsense", token, token[:-4] + "AAAA", service.owner.replace("bko_", "bko_0")):
        with pytest.raises(OrchestratorError) as refused:
            service.client(bad).vaults()
        assert refused.value.code == "Unauthenticated"
    raw = httpx.post(f"{service.url}/v1/vaults", json={})
    assert raw.status_code == 401 and raw.headers["www-authenticate"] == "Bearer"
    assert [(i.name, i.revoked) for i in remote.identities()] == [("admin", False), ("bob", True)]
    again = remote.create_identity("bob", "operator")  # a revoked name made again: a new token
    assert again != token and service.client(again).vaults() == []


def test_the_openapi_document_describes_every_operation_with_its_role(service: Service) -> None:
    document = httpx.get(f"{service.url}/openapi.json").json()
    for operation in OPERATIONS.values():
        described = document["paths"][operation.path]["post"]
        assert described["x-role"] == operation.role.value
        assert "401" in described["responses"] and "403" in described["responses"]


def test_backupctl_uses_the_service_when_backup_url_is_set(service: Service, tmp_path: Path) -> None:
    service.client(service.owner).create_vault("vault-east", "japaneast", "rg")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")},
        "BACKUP_URL": service.url,
        "BACKUP_TOKEN": service.owner,
        "BACKUP_DATA_DIR": str(tmp_path / "elsewhere"),  # never opened: the service holds the data
    }
    listed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "vault", "list", "--json"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert [v["name"] for v in json.loads(listed.stdout)] == ["vault-east"]
    assert not (tmp_path / "elsewhere").exists()
    refused = subprocess.run(
        [sys.executable, "-m", "orchestrator", "vault", "list"],
        env={**env, "BACKUP_TOKEN": "bko_nonsense"},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "[Unauthenticated]" in refused.stderr


def test_calls_are_served_side_by_side_while_a_backup_runs(service: Service) -> None:
    owner = service.client(service.owner)
    vault = owner.create_vault("vault-east", "japaneast", "rg")
    owner.wait(owner.discover(vault))
    owner.wait_all(owner.register(vault, ["vm01", "vm02", "vm03"]))
    owner.wait_all(owner.protect(vault, ["vm01", "vm02", "vm03"]))
    jobs = [owner.backup_now(vault, vm) for vm in ("vm01", "vm02", "vm03")]
    results: list[Any] = []

    def read() -> None:
        reader = service.client(service.owner)
        results.append((len(reader.vaults()), reader.wait_all(jobs, timeout=120)))

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(results) == 6
    assert all(count == 1 and {j.status for j in ended} == {"completed"} for count, ended in results)


def test_every_operation_for_every_role_and_scope_is_allowed_or_refused_with_nothing_stored(
    service: Service, tmp_path: Path
) -> None:
    check_role_matrix(service, tmp_path)
