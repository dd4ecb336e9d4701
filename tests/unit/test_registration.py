from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Client, OrchestratorError
from tests.helpers import event_count, topics

HEALTHY = [f"vm{i:02d}" for i in range(1, 21)]


def test_discovery_lists_the_unregistered_vms_of_the_vault_region(client: Client) -> None:
    vault = client.create_vault("vault-east", "japaneast", "rg")
    job = client.wait(client.discover(vault))
    assert (job.operation, job.status) == ("discovery", "completed")
    assert set(job.result["new_vms"]) == set(HEALTHY) | {
        "noagent",
        "oldagent",
        "notready",
        "stopped",
        "shop-cs/shop",
        "blog-cs/shop",
    }
    assert {"vm": "westvm", "reason": "in region japanwest"} in job.result["excluded"]
    assert "othervm" not in str(job.result)  # another subscription


def test_registering_twenty_vms_completes_twenty_register_jobs(client: Client, discovered_vault: str) -> None:
    job_ids = client.register(discovered_vault, HEALTHY)
    jobs = client.wait_all(job_ids)
    assert len(jobs) == 20
    assert {(j.operation, j.status) for j in jobs} == {("register", "completed")}
    assert len({j.job_id for j in jobs}) == 20
    items = client.protected_items(discovered_vault)
    assert sorted(i.vm_name for i in items) == HEALTHY
    assert {i.status for i in items} == {"registered"} and all(i.extension_version for i in items)


def test_a_vm_without_agent_fails_its_job_with_the_remedy(client: Client, discovered_vault: str) -> None:
    [job] = client.wait_all(client.register(discovered_vault, ["noagent"]))
    assert (job.status, job.error_code) == ("failed", "VmAgentNotInstalled")
    assert "To fix: install the Azure VM agent" in job.error_message
    assert client.protected_items(discovered_vault) == []
    failed = client.protected_items(discovered_vault, include_former=True)
    assert [(i.vm_name, i.status) for i in failed] == [("noagent", "registration_failed")]


@pytest.mark.parametrize(("vm", "code"), [("oldagent", "VmAgentVersionTooOld"), ("notready", "VmAgentNotReady")])
def test_agent_problems_have_their_own_codes(client: Client, discovered_vault: str, vm: str, code: str) -> None:
    [job] = client.wait_all(client.register(discovered_vault, [vm]))
    assert (job.status, job.error_code) == ("failed", code)


def test_a_stopped_vm_registers_with_a_warning_about_its_extension(client: Client, discovered_vault: str) -> None:
    [job] = client.wait_all(client.register(discovered_vault, ["stopped"]))
    assert job.status == "completed_with_warnings"
    assert job.warnings[0]["code"] == "ExtensionPendingVmStart"


def test_registering_a_registered_vm_is_refused_and_stores_nothing(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.register(discovered_vault, ["vm01"])
    assert caught.value.code == "VmAlreadyRegistered"
    assert event_count(client) == before


def test_a_vm_in_another_vault_is_refused_naming_that_vault(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    other = client.create_vault("vault-two", "japaneast", "rg")
    client.wait(client.discover(other))
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.register(other, ["vm01"])
    assert caught.value.code == "VmInAnotherVault" and "vault-east" in caught.value.message
    assert event_count(client) == before


def test_discovery_does_not_list_vms_registered_anywhere(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    other = client.create_vault("vault-two", "japaneast", "rg")
    result = client.wait(client.discover(other)).result
    assert "vm01" not in result["new_vms"]
    assert {"vm": "vm01", "reason": "already registered in vault vault-east"} in result["excluded"]


@pytest.mark.parametrize(
    ("name", "code"),
    [("westvm", "RegionMismatch"), ("ghost", "VmNotFound"), ("othervm", "VmNotFound"), ("shop", "VmNameAmbiguous")],
)
def test_a_vm_that_cannot_join_says_why_and_nothing_is_stored(
    client: Client, discovered_vault: str, name: str, code: str
) -> None:
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.register(discovered_vault, ["vm01", name])
    assert caught.value.code == code and caught.value.field == "vm_names"
    assert event_count(client) == before  # vm01 was not registered either


def test_one_bad_name_among_many_lists_every_problem(client: Client, discovered_vault: str) -> None:
    with pytest.raises(OrchestratorError) as caught:
        client.register(discovered_vault, ["ghost", "westvm", "vm01"])
    assert [d["code"] for d in caught.value.details] == ["VmNotFound", "RegionMismatch"]


def test_classic_vms_of_the_same_name_are_told_apart_by_cloud_service(client: Client) -> None:
    vault = client.create_vault("classic", "japaneast", "rg", kind="backup_vault")
    client.wait(client.discover(vault))
    jobs = client.wait_all(client.register(vault, ["shop-cs/shop", "blog-cs/shop"]))
    assert [j.status for j in jobs] == ["completed", "completed"]
    assert sorted(i.vm_name for i in client.protected_items(vault)) == ["blog-cs/shop", "shop-cs/shop"]


def test_a_classic_backup_vault_refuses_resource_manager_vms(client: Client) -> None:
    vault = client.create_vault("classic", "japaneast", "rg", kind="backup_vault")
    client.wait(client.discover(vault))
    with pytest.raises(OrchestratorError) as caught:
        client.register(vault, ["vm01"])
    assert caught.value.code == "VmNotClassic"


def test_registration_needs_a_discovery_first(client: Client) -> None:
    vault = client.create_vault("vault-east", "japaneast", "rg")
    with pytest.raises(OrchestratorError) as caught:
        client.register(vault, ["vm01"])
    assert caught.value.code == "DiscoveryRequired"


def test_an_empty_registration_is_refused(client: Client, discovered_vault: str) -> None:
    with pytest.raises(OrchestratorError) as caught:
        client.register(discovered_vault, [])
    assert caught.value.code == "VmNamesRequired"


def test_a_name_given_twice_makes_one_job(client: Client, discovered_vault: str) -> None:
    assert len(client.register(discovered_vault, ["vm01", "VM01"])) == 1


def test_unregister_frees_the_vm_for_another_vault(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    job = client.wait(client.unregister(discovered_vault, "vm01"))
    assert (job.operation, job.status) == ("unregister", "completed")
    assert client.protected_items(discovered_vault) == []
    other = client.create_vault("vault-two", "japaneast", "rg")
    client.wait(client.discover(other))
    [again] = client.wait_all(client.register(other, ["vm01"]))
    assert again.status == "completed"


def test_unregistering_a_vm_that_is_not_registered_is_refused(client: Client, discovered_vault: str) -> None:
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.unregister(discovered_vault, "vm01")
    assert caught.value.code == "VmNotRegistered"
    assert event_count(client) == before


def test_a_failed_registration_can_be_tried_again(client: Client, discovered_vault: str) -> None:
    [failed] = client.wait_all(client.register(discovered_vault, ["noagent"]))
    assert failed.status == "failed"
    [retry] = client.register(discovered_vault, ["noagent"])
    assert client.wait(retry).error_code == "VmAgentNotInstalled"


def test_every_event_records_the_principal(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    app = client._runtime.app
    principals = {
        app.mapper.to_domain_event(n).principal for n in app.recorder.select_notifications(start=1, limit=1000)
    }
    assert principals == {"alice@example.com", "worker:alice@example.com"}


def test_registration_stores_the_expected_events(client: Client, discovered_vault: str) -> None:
    start = event_count(client) + 1
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    assert topics(client, start=start) == {
        "backup.job.created": 1,
        "backup.vm.registration_requested": 1,
        "backup.job.started": 1,
        "backup.job.checks_recorded": 1,
        "backup.vm.checks_recorded": 1,  # the register-stage prechecks
        "backup.vm.registered": 1,
        "backup.job.completed": 1,
    }


def test_the_prechecks_are_stored_with_the_start_of_the_job(
    client: Client, discovered_vault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker runs the stage's prechecks first and reports them with the start: one command and
    one transaction, not two."""
    from orchestrator.write.application import Orchestrator

    reported: list[Any] = []
    handle = Orchestrator.handle

    def spied(self: Orchestrator, command: Any, principal: str) -> Any:
        if principal.startswith("worker:"):
            reported.append(command)
        return handle(self, command, principal)

    monkeypatch.setattr(Orchestrator, "handle", spied)
    start = event_count(client) + 1
    [job] = client.wait_all(client.register(discovered_vault, ["vm01"]))
    assert job.status == "completed"
    assert [type(cmd).__name__ for cmd in reported] == ["StartJob", "CompleteRegistration"]
    assert reported[0].stage == "register" and reported[0].results == []  # a healthy VM: nothing found
    stored = client._runtime.app.recorder.select_notifications(start=start, limit=100)
    ids = {n.topic: n.id for n in stored}
    assert ids["backup.job.checks_recorded"] == ids["backup.job.started"] + 1  # saved together
    assert ids["backup.vm.checks_recorded"] == ids["backup.job.started"] + 2


def test_a_job_whose_vm_cannot_be_checked_fails_once_started(
    client: Client, discovered_vault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import work as jobs

    def gone(*args: Any) -> Any:
        raise OrchestratorError("VmNotFound", "no VM vm01 in the fabric")

    monkeypatch.setattr(jobs, "precheck", gone)
    start = event_count(client) + 1
    [job] = client.wait_all(client.register(discovered_vault, ["vm01"]))
    assert (job.status, job.error_code) == ("failed", "VmNotFound")
    found = topics(client, start=start)
    assert found["backup.job.started"] == 1 and found["backup.job.failed"] == 1
    assert "backup.job.checks_recorded" not in found
