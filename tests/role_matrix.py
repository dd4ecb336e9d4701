"""The role matrix (issue 16): every operation of the API service, for an identity of each role on
every vault and on vault A only, aimed at vault A and at vault B: the allowed result, or 403 with its
code and nothing stored. Run on the embedded default (tests/e2e/test_api_service.py) and on
PostgreSQL + Redis (tests/integration/test_api_distributed.py)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from orchestrator import Client
from orchestrator.domain.identity import Role
from orchestrator.entry.api.contract import OPERATIONS, Operation, Scope
from tests.helpers import event_count


@dataclass
class Service:
    local: Client  # in process, on the deployment's stores
    url: str
    owner: str  # an owner's token

    def client(self, token: str | None) -> Client:
        return Client(url=self.url, token=token)


class World:
    """Two vaults with a protected VM, a completed backup and its point each."""

    def __init__(self, service: Service) -> None:
        owner = service.client(service.owner)
        self.vaults: dict[str, str] = {}
        self.jobs: dict[str, str] = {}
        self.points: dict[str, str] = {}
        for key, vm in (("A", "vm01"), ("B", "vm02")):
            vault = owner.create_vault(f"vault-{key.lower()}", "japaneast", "rg")
            owner.wait(owner.discover(vault))
            owner.wait_all(owner.register(vault, [vm, f"vm0{3 if key == 'A' else 4}"]))
            owner.wait_all(owner.protect(vault, [vm]))
            self.jobs[key] = owner.wait(owner.backup_now(vault, vm)).job_id
            self.points[key] = owner.recovery_points(vault)[0].recovery_point_id
            self.vaults[key] = vault
            owner.create_guard(f"guard-{key.lower()}")
            owner.attach_guard(vault, f"guard-{key.lower()}")
        self.vms = {"A": "vm01", "B": "vm02"}
        self.spare = {"A": "vm03", "B": "vm04"}
        self.count = 0

    def args(self, operation: Operation, target: str, tmp: Path) -> dict[str, Any]:
        self.count += 1
        values: dict[str, Any] = {
            "vault_id": self.vaults[target],
            "job_id": self.jobs[target],
            "job_ids": [self.jobs[target]],
            "recovery_point_id": self.points[target],
            "vm_name": self.vms[target],
            "vm_names": [self.vms[target]],
            "region": "japaneast",
            "resource_group": "rg",
            "replication": "local",
            "schedule": {"frequency": "daily", "times": ["02:00"]},
            "retention": {"daily": {"days": 30}},
            "policy": "DefaultPolicy",
            "role": "reader",
            "timeout": 30.0,
            "guard": f"guard-{target.lower()}",
            "operation": "delete_data",
        }
        special: dict[str, dict[str, Any]] = {
            "vault_id": {"name": f"vault-{target.lower()}"},
            "create_vault": {"name": f"made-{self.count}"},
            "create_policy": {"name": f"Policy{self.count}"},
            "update_policy": {"name": "DefaultPolicy"},
            "create_identity": {"name": f"made-{self.count}", "vault_id": self.vaults[target]},
            "revoke_identity": {"name": "nobody"},
            "unregister": {"vm_name": self.spare[target]},
            "restore": {"target_vm_name": f"copy{self.count}", "mode": "disks", "target_dir": str(tmp)},
            "history": {"vault_id": self.vaults[target]},
            "set_soft_delete": {"state": "enabled"},
            "set_immutability": {"state": "disabled"},
            "create_guard": {"name": f"guard-made-{self.count}"},
            "attach_guard": {"guard": f"guard-{target.lower()}"},
        }
        values |= special.get(operation.name.split(".")[-1], {})
        chosen = {
            p.name: values[p.name]
            for p in operation.parameters
            if p.default is inspect.Parameter.empty or p.name == "vault_id"  # the filter too, where optional
        }
        chosen |= special.get(operation.name.split(".")[-1], {})
        if operation.as_of:
            chosen["when"] = datetime.now(UTC)
        return {k: v for k, v in chosen.items() if k in {p.name for p in operation.parameters} | {"when"}}


def caused_by(client: Client, principal: str, after: int) -> list[str]:
    """The topics of the events stored after `after` that `principal` caused (the workers go on
    with jobs the allowed calls started, so the log moves on its own)."""
    app = client._runtime.app
    stored = app.recorder.select_notifications(start=after + 1, limit=10_000)
    return [n.topic for n in stored if app.mapper.to_domain_event(n).principal == principal]


def allowed(operation: Operation, role: Role, scoped: bool, target: str) -> bool:
    if not role.holds(operation.role):
        return False
    if not scoped or operation.scope is Scope.ROWS:  # rows: narrowed to the identity's vault, not refused
        return True
    return operation.scope is not Scope.GLOBAL and target == "A"


# Run last: they change what the others act on (the items' protection, the VMs' registration).
LAST = ("stop_protection", "unregister", "run_retention")


def check_role_matrix(service: Service, tmp_path: Path) -> None:
    """Every operation x every role x on every vault or on A x aimed at A or B."""
    world = World(service)
    owner = service.client(service.owner)
    tokens = {
        (role, scoped): owner.create_identity(
            f"{role.value}-{'a' if scoped else 'all'}", role.value, world.vaults["A"] if scoped else None
        )
        for role in Role
        if role is not Role.GUARD_ADMIN
        for scoped in (False, True)
    } | {  # guard admins are made with local access only, on guard A or on every guard
        (Role.GUARD_ADMIN, scoped): service.local.create_identity(
            f"guard_admin-{'a' if scoped else 'all'}", "guard_admin", guard="guard-a" if scoped else None
        )
        for scoped in (False, True)
    }
    order = sorted(OPERATIONS.values(), key=lambda o: o.name.split(".")[-1] in LAST)
    checked = 0
    for operation in order:
        for (role, scoped), token in tokens.items():
            for target in ("A", "B"):
                args = world.args(operation, target, tmp_path / f"restore-{world.count}")
                if operation.name == "restore":
                    (tmp_path / f"restore-{world.count}").mkdir()
                before = event_count(service.local)
                response = httpx.post(
                    service.url + operation.path,
                    content=operation.request(**args).model_dump_json(),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                    timeout=120,
                )
                code = response.json().get("code") if not response.is_success else None
                where = f"{operation.name} as {role.value} {'on A' if scoped else 'global'} on {target}"
                if allowed(operation, role, scoped, target):
                    assert code not in ("NotAuthorized", "Unauthenticated"), where
                    assert response.status_code < 500, (where, response.text)
                    if operation.scope is Scope.ROWS and scoped:
                        assert {row["vault_id"] for row in response.json()} <= {world.vaults["A"]}, where
                else:
                    assert response.status_code == 403 and code == "NotAuthorized", (where, response.text)
                    assert operation.role.value in response.json()["message"], where
                    assert not caused_by(service.local, f"{role.value}-{'a' if scoped else 'all'}", before), where
                checked += 1
    assert checked == len(OPERATIONS) * len(Role) * 2 * 2
