"""Multi-user authorization: a resource guard attached to a vault, whose critical operations need an
approval by another identity holding guard_admin on it, unexpired and unused; each approval, use and
expiry an event. In process (identities as principals through `calling_as`) and over the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orchestrator import Client, OrchestratorError
from orchestrator.clock import ManualClock
from tests.helpers import event_count, fabric_with, serving, topics

START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
DAILY = {"frequency": "daily", "times": ["22:30"]}


@pytest.fixture
def guarded(tmp_path: Path, fabric: Path) -> Iterator[tuple[Client, ManualClock, str]]:
    """A vault with two protected VMs, each backed up, guarded by guard-1; alice is a contributor,
    gina and gus guard admins of guard-1, gwen of another guard."""
    clock = ManualClock(START)
    with Client(data_dir=tmp_path / "data", fabric=fabric, clock=clock, scheduler_interval=3600) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["vm01", "vm02"]))
        client.wait_all(client.protect(vault, ["vm01", "vm02"]))
        client.wait_all([client.backup_now(vault, vm) for vm in ("vm01", "vm02")])
        client.create_guard("guard-1")
        client.create_guard("guard-2")
        client.create_identity("alice", "contributor")
        client.create_identity("gina", "guard_admin", guard="guard-1")
        client.create_identity("gus", "guard_admin")  # on every guard
        client.create_identity("gwen", "guard_admin", guard="guard-2")
        client.attach_guard(vault, "guard-1")
        yield client, clock, vault


def refused(client: Client, call: Callable[[], Any]) -> OrchestratorError:
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        call()
    assert event_count(client) == before, caught.value.code
    return caught.value


def as_(client: Client, who: str, call: Callable[[], Any]) -> Any:
    with client.calling_as(who):
        return call()


def test_a_critical_operation_needs_another_identitys_unexpired_unused_approval(
    guarded: tuple[Client, ManualClock, str],
) -> None:
    client, clock, vault = guarded

    def delete(vm: str) -> Callable[[], Any]:
        return lambda: as_(client, "alice", lambda: client.stop_protection(vault, vm, delete_data=True))

    error = refused(client, delete("vm01"))
    assert (error.code, error.field) == ("MultiUserAuthorizationRequired", "operation")
    assert "guard-1" in error.message and "no open approval" in error.message

    approve = client.approve_operation
    assert refused(client, lambda: as_(client, "alice", lambda: approve("guard-1", vault, "delete_data"))).code == (
        "NotAuthorized"  # a contributor approves nothing
    )
    assert refused(client, lambda: as_(client, "gwen", lambda: approve("guard-1", vault, "delete_data"))).code == (
        "NotAuthorized"  # a guard admin of another guard
    )
    assert refused(client, lambda: approve("guard-1", vault, "delete_data")).code == "NotAuthorized"  # no identity
    error = refused(client, lambda: as_(client, "gina", lambda: approve("guard-1", vault, "delete_data", 0)))
    assert (error.code, error.field) == ("ApprovalDurationInvalid", "minutes")
    error = refused(client, lambda: as_(client, "gina", lambda: approve("guard-1", vault, "erase_everything")))
    assert error.field == "operation"

    approval = as_(client, "gina", lambda: approve("guard-1", vault, "delete_data", 60))
    own = refused(client, lambda: as_(client, "gina", lambda: client.stop_protection(vault, "vm01", delete_data=True)))
    assert own.code == "MultiUserAuthorizationRequired" and "'gina''s own" in own.message  # the approver itself

    stopped = client.wait(delete("vm01")())
    assert stopped.result["soft_deleted"] is True
    [used] = client.approvals("guard-1")
    assert (used.approval_id, used.state, used.used_by, used.approved_by) == (approval, "used", "alice", "gina")
    again = refused(client, delete("vm02"))  # used once: not twice
    assert again.code == "MultiUserAuthorizationRequired"

    as_(client, "gus", lambda: approve("guard-1", vault, "delete_data", 30))
    clock.advance(timedelta(minutes=31))
    late = refused(client, delete("vm02"))
    assert late.code == "MultiUserAuthorizationRequired" and "expired" in late.message
    client.run_scheduler()  # records the expiry
    assert [a.state for a in client.approvals("guard-1")] == ["expired", "used"]
    assert client.approvals("guard-1", state="open") == []
    counted = topics(client)
    assert (
        counted["backup.guard.approval_granted"],
        counted["backup.guard.approval_used"],
        counted["backup.guard.approval_expired"],
    ) == (2, 1, 1)
    [use] = client.history(vault_id=vault, event_type="guard.approval_used")
    assert (use.principal, use.data["used_by"], use.data["approval_id"]) == ("alice", "alice", approval)


def test_every_critical_operation_of_a_guarded_vault_is_refused_then_allowed_once_approved(
    guarded: tuple[Client, ManualClock, str],
) -> None:
    client, _, vault = guarded
    client.set_immutability(vault, "enabled")  # strengthening needs no approval
    client.set_soft_delete(vault, "enabled", 30)
    client.update_policy(vault, "DefaultPolicy", DAILY, {"daily": {"days": 60}})  # longer: no approval
    critical = {
        "disable_soft_delete": lambda: client.set_soft_delete(vault, "enabled", 14),  # a shorter window
        "disable_immutability": lambda: client.set_immutability(vault, "disabled"),
        "shorten_retention": lambda: client.update_policy(vault, "DefaultPolicy", DAILY, {"daily": {"days": 45}}),
        "detach_guard": lambda: client.detach_guard(vault),
    }
    for operation, call in critical.items():
        error = refused(client, lambda c=call: as_(client, "alice", c))
        assert error.code == "MultiUserAuthorizationRequired" and operation in error.message, (operation, error)
        as_(client, "gina", lambda o=operation: client.approve_operation("guard-1", vault, o, 10))
        as_(client, "alice", call)  # approved: it runs
    [row] = client.vaults()
    assert (row.soft_delete_days, row.immutability, row.guard) == (14, "disabled", "")
    assert {a.state for a in client.approvals("guard-1")} == {"used"} and len(client.approvals("guard-1")) == 4
    client.set_soft_delete(vault, "disabled")  # unguarded now: no approval asked
    error = refused(
        client, lambda: as_(client, "gina", lambda: client.approve_operation("guard-1", vault, "delete_data"))
    )
    assert error.code == "GuardNotAttached"


def test_guards_are_named_attached_once_and_guard_admins_scoped(guarded: tuple[Client, ManualClock, str]) -> None:
    client, _, vault = guarded
    assert refused(client, lambda: client.create_guard("guard-1")).code == "GuardNameTaken"
    assert refused(client, lambda: client.create_guard("-x")).code == "GuardNameInvalid"
    assert refused(client, lambda: client.attach_guard(vault, "guard-2")).code == "GuardAlreadyAttached"
    assert refused(client, lambda: client.attach_guard(vault, "guard-9")).code == "GuardNotFound"
    error = refused(client, lambda: client.create_identity("vic", "guard_admin", vault_id=vault))
    assert (error.code, error.field) == ("IdentityScopeInvalid", "vault_id")
    error = refused(client, lambda: client.create_identity("vic", "reader", guard="guard-1"))
    assert (error.code, error.field) == ("IdentityScopeInvalid", "guard")
    assert [g.name for g in client.guards()] == ["guard-1", "guard-2"]
    client.attach_guard(vault, "guard-1")  # attached already: nothing changes
    assert [v.guard for v in client.vaults()] == ["guard-1"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Client, str]]:
    local = Client(data_dir=tmp_path / "data", fabric=fabric_with(tmp_path, healthy=2), scheduler_interval=3600)
    try:
        with serving(local) as url:
            yield local, url
    finally:
        local.close()


def test_over_the_api_guard_admins_are_made_locally_and_approve_for_others(served: tuple[Client, str]) -> None:
    local, url = served
    owner = Client(url=url, token=local.create_identity("admin", "owner"))
    vault = owner.create_vault("vault-east", "japaneast", "rg")
    owner.wait(owner.discover(vault))
    owner.wait_all(owner.register(vault, ["vm01"]))
    owner.wait_all(owner.protect(vault, ["vm01"]))
    owner.wait(owner.backup_now(vault, "vm01"))
    owner.create_guard("guard-1")
    owner.attach_guard(vault, "guard-1")
    before = event_count(local)
    with pytest.raises(OrchestratorError) as caught:
        owner.create_identity("mallory", "guard_admin")  # a stolen owner token makes no approver
    assert caught.value.code == "NotAuthorized" and "local access" in caught.value.message
    assert event_count(local) == before
    admin = Client(url=url, token=local.create_identity("gina", "guard_admin", guard="guard-1"))

    raw = httpx.post(
        f"{url}/v1/stop_protection",
        json={"vault_id": vault, "vm_name": "vm01", "delete_data": True},
        headers={"Authorization": f"Bearer {owner.settings.token.get_secret_value()}"},  # type: ignore[union-attr]
    )
    assert raw.status_code == 403 and raw.json()["code"] == "MultiUserAuthorizationRequired"
    with pytest.raises(OrchestratorError) as caught:
        admin.stop_protection(vault, "vm01", delete_data=True)  # guard_admin holds no vault role
    assert caught.value.code == "NotAuthorized"
    with pytest.raises(OrchestratorError) as caught:
        admin.vaults()
    assert caught.value.code == "NotAuthorized"
    approval = admin.approve_operation("guard-1", vault, "delete_data", 15)
    assert [a.approval_id for a in admin.approvals("guard-1")] == [approval]
    assert owner.wait(owner.stop_protection(vault, "vm01", delete_data=True)).result["soft_deleted"] is True
    used = owner.history(event_type="guard.approval_used")
    assert [(e.principal, e.vault_id) for e in used] == [("admin", vault)]


def test_the_cli_approves_with_a_duration(tmp_path: Path, fabric: Path) -> None:
    from orchestrator.entry.cli.main import app

    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.create_identity("gina", "guard_admin")
    env = {"BACKUP_DATA_DIR": str(tmp_path / "data"), "BACKUP_FABRIC": str(fabric), "COLUMNS": "200"}
    runner = CliRunner()
    for args in (["guard", "create", "guard-1"], ["guard", "attach", "guard-1", "--vault", "vault-east"]):
        assert runner.invoke(app, args, env=env).exit_code == 0
    approve = ["guard", "approve", "guard-1", "--vault", "vault-east", "--operation", "delete_data"]
    done = runner.invoke(app, [*approve, "--for", "2h", "--json"], env={**env, "BACKUP_PRINCIPAL": "gina"})
    assert done.exit_code == 0, done.output
    bad = runner.invoke(app, [*approve, "--for", "soon"], env={**env, "BACKUP_PRINCIPAL": "gina"})
    assert bad.exit_code != 0 and "CommandInvalid" in bad.output
    listed = runner.invoke(app, ["guard", "approvals", "guard-1", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        [row] = client.approvals("guard-1")
        assert (row.approved_by, row.operation, row.state) == ("gina", "delete_data", "open")
        assert abs(row.expires_at - row.approved_at - timedelta(hours=2)) < timedelta(minutes=1)
        assert vault == client.vaults()[0].vault_id
