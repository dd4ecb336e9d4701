from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Client, OrchestratorError
from tests.helpers import edit_vm, event_count

DAILY = {"frequency": "daily", "times": ["22:30"]}


def _retention(**tiers: Any) -> dict[str, Any]:
    return tiers or {"daily": {"days": 30}}


def test_every_vault_has_the_default_policy(client: Client) -> None:
    vault = client.create_vault("vault-a", "japaneast", "rg")
    [policy] = client.policies(vault)
    assert policy.name == "DefaultPolicy"
    assert policy.schedule == {"frequency": "daily", "times": ["22:30:00"], "weekdays": []}
    assert policy.retention["daily"] == {"days": 30} and policy.timezone == "UTC"


def test_a_policy_with_all_four_tiers_in_a_time_zone(client: Client) -> None:
    vault = client.create_vault("vault-a", "japaneast", "rg")
    client.create_policy(
        vault,
        "LongTerm",
        {"frequency": "daily", "times": ["01:00", "13:00"]},
        {
            "daily": {"days": 90},
            "weekly": {"weekdays": ["sunday"], "weeks": 104},
            "monthly": {"on": {"weeks": ["last"], "weekdays": ["sunday"]}, "months": 120},
            "yearly": {"months_of_year": [1], "on": {"weeks": ["first"], "weekdays": ["sunday"]}, "years": 99},
        },
        timezone="Asia/Tokyo",
    )
    assert [p.name for p in client.policies(vault)] == ["DefaultPolicy", "LongTerm"]


BAD = [
    ("x", DAILY, _retention(), "UTC", "PolicyNameInvalid", "name"),
    ("Nightly", DAILY, _retention(), "Mars/Olympus", "TimeZoneUnknown", "timezone"),
    ("Nightly", {"frequency": "daily", "times": []}, _retention(), "UTC", "CommandInvalid", "schedule.times"),
    (
        "Nightly",
        {"frequency": "daily", "times": ["01:00", "01:00"]},
        _retention(),
        "UTC",
        "ScheduleTimesInvalid",
        "schedule.times",
    ),
    (
        "Nightly",
        {"frequency": "weekly", "times": ["01:00"]},
        _retention(),
        "UTC",
        "ScheduleWeekdaysRequired",
        "schedule.weekdays",
    ),
    (
        "Nightly",
        {"frequency": "daily", "times": ["01:00"], "weekdays": ["monday"]},
        _retention(),
        "UTC",
        "ScheduleWeekdaysNotAllowed",
        "schedule.weekdays",
    ),
    ("Nightly", DAILY, {}, "UTC", "RetentionRequired", "retention"),
    ("Nightly", DAILY, {"daily": {"days": 6}}, "UTC", "RetentionOutOfRange", "retention.daily"),
    ("Nightly", DAILY, {"daily": {"days": 10000}}, "UTC", "RetentionOutOfRange", "retention.daily"),
    (
        "Nightly",
        DAILY,
        {"daily": {"days": 7}, "weekly": {"weekdays": ["sunday"], "weeks": 5164}},
        "UTC",
        "RetentionOutOfRange",
        "retention.weekly",
    ),
    (
        "Nightly",
        DAILY,
        {"daily": {"days": 7}, "yearly": {"months_of_year": [1], "on": {"days": [1]}, "years": 100}},
        "UTC",
        "RetentionOutOfRange",
        "retention.yearly",
    ),
    (
        "Nightly",
        DAILY,
        {"weekly": {"weekdays": ["sunday"], "weeks": 4}},
        "UTC",
        "DailyRetentionRequired",
        "retention.daily",
    ),
    (
        "Nightly",
        {"frequency": "weekly", "times": ["01:00"], "weekdays": ["sunday"]},
        {"daily": {"days": 7}},
        "UTC",
        "DailyRetentionNotAllowed",
        "retention.daily",
    ),
    (
        "Nightly",
        {"frequency": "weekly", "times": ["01:00"], "weekdays": ["sunday"]},
        {"weekly": {"weekdays": ["monday"], "weeks": 4}},
        "UTC",
        "WeeklyRetentionDaysMismatch",
        "retention.weekly.weekdays",
    ),
    (
        "Nightly",
        DAILY,
        {"daily": {"days": 7}, "monthly": {"on": {"days": [29]}, "months": 3}},
        "UTC",
        "RetentionSelectorInvalid",
        "retention.monthly.on",
    ),
    (
        "Nightly",
        DAILY,
        {"daily": {"days": 7}, "monthly": {"on": {"weeks": ["fifth"], "weekdays": ["sunday"]}, "months": 3}},
        "UTC",
        "RetentionSelectorInvalid",
        "retention.monthly.on",
    ),
    (
        "Nightly",
        DAILY,
        {"daily": {"days": 7}, "weekly": {"weekdays": ["funday"], "weeks": 3}},
        "UTC",
        "WeekdayInvalid",
        "retention.weekly.weekdays",
    ),
]


@pytest.mark.parametrize(("name", "schedule", "retention", "tz", "code", "field"), BAD)
def test_a_bad_policy_gives_its_code_and_field_and_stores_nothing(
    client: Client, name: str, schedule: dict[str, Any], retention: dict[str, Any], tz: str, code: str, field: str
) -> None:
    vault = client.create_vault("vault-a", "japaneast", "rg")
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.create_policy(vault, name, schedule, retention, timezone=tz)
    assert (caught.value.code, caught.value.field) == (code, field)
    assert event_count(client) == before


def test_a_policy_name_is_unique_in_its_vault(client: Client) -> None:
    vault = client.create_vault("vault-a", "japaneast", "rg")
    with pytest.raises(OrchestratorError) as caught:
        client.create_policy(vault, "defaultpolicy", DAILY, _retention())
    assert caught.value.code == "PolicyNameTaken"


def test_protecting_with_an_unknown_policy_is_refused(client: Client, discovered_vault: str) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    with pytest.raises(OrchestratorError) as caught:
        client.protect(discovered_vault, ["vm01"], policy="Nope")
    assert caught.value.code == "PolicyNotFound"


def test_protection_needs_registration_and_happens_once(client: Client, discovered_vault: str) -> None:
    with pytest.raises(OrchestratorError) as caught:
        client.protect(discovered_vault, ["vm01"])
    assert caught.value.code == "VmNotRegistered"
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    client.wait_all(client.protect(discovered_vault, ["vm01"]))
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        client.protect(discovered_vault, ["vm01"])
    assert caught.value.code == "VmAlreadyProtected"
    assert event_count(client) == before


def test_replication_is_locked_once_an_item_is_protected(client: Client, discovered_vault: str) -> None:
    client.set_replication(discovered_vault, "local")
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    client.wait_all(client.protect(discovered_vault, ["vm01"]))
    with pytest.raises(OrchestratorError) as caught:
        client.set_replication(discovered_vault, "geo")
    assert caught.value.code == "ReplicationLocked"


def test_a_vm_without_agent_fails_its_protection_job(client: Client, discovered_vault: str, tmp_path: Any) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    edit_vm(client._runtime.fabric.inventory_path, "vm01", agent={"installed": False})  # removed since registration
    [job] = client.wait_all(client.protect(discovered_vault, ["vm01"]))
    assert (job.status, job.error_code) == ("failed", "VmAgentNotInstalled")
    assert client.protected_items(discovered_vault)[0].status == "registered"
