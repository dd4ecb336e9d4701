"""Ten simulated days with a controllable clock: one backup per due slot, missed slots recorded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.clock import ManualClock
from orchestrator.dispatch.scheduler import Scheduler
from orchestrator.domain import VirtualMachine
from orchestrator.domain.item import item_id_for

START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)


@pytest.fixture
def sim(tmp_path: Path, fabric: Path) -> Iterator[tuple[Client, ManualClock, str]]:
    clock = ManualClock(START)
    with Client(data_dir=tmp_path / "data", fabric=fabric, clock=clock, scheduler_interval=3600) as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.create_policy(
            vault, "TwiceDaily", {"frequency": "daily", "times": ["06:00", "18:00"]}, {"daily": {"days": 7}}
        )
        client.wait_all(client.register(vault, ["vm01", "vm02"]))
        client.wait_all(client.protect(vault, ["vm01", "vm02"], policy="TwiceDaily"))
        yield client, clock, vault


def _run_hours(client: Client, clock: ManualClock, hours: int) -> list[str]:
    jobs = []
    for _ in range(hours):
        clock.advance(timedelta(hours=1))
        created = client.run_scheduler()
        client.wait_all(created)
        jobs += created
    return jobs


def _started_slots(client: Client, vm: str) -> list[datetime]:
    events = client._runtime.app.events.get(item_id_for(f"default/rg-japaneast/{vm}"))
    return [e.slot for e in events if isinstance(e, VirtualMachine.BackupStarted) and e.slot is not None]


def test_ten_days_make_exactly_one_backup_per_due_slot(sim: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = sim
    jobs = _run_hours(client, clock, 24 * 10)
    expected = [START + timedelta(days=d, hours=h) for d in range(10) for h in (6, 18)]
    for vm in ("vm01", "vm02"):
        assert _started_slots(client, vm) == expected
    finished = client.jobs(operation="backup")
    assert len(jobs) == len(finished) == 40
    assert {j.status for j in finished} == {"completed"}
    items = {i.vm_name: i for i in client.protected_items(vault)}
    assert items["vm01"].status == "protected" and items["vm01"].missed_slots == 0


def test_a_second_scheduler_and_a_repeated_tick_add_nothing(sim: tuple[Client, ManualClock, str]) -> None:
    client, clock, _vault = sim
    clock.advance(timedelta(hours=7))
    first = client.run_scheduler()
    assert len(first) == 2
    runtime = client._runtime
    other = Scheduler(runtime.app, runtime.store, clock)
    assert other.tick() == [] and client.run_scheduler() == []
    client.wait_all(first)
    assert client.run_scheduler() == []
    assert len(client.jobs(operation="backup")) == 2


def test_a_day_without_scheduler_records_missed_slots_and_one_catch_up(sim: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = sim
    _run_hours(client, clock, 24)  # day one: two slots each
    clock.advance(timedelta(hours=30))  # the scheduler is down from 00:00 on day two until 06:00 on day three
    catch_up = client.run_scheduler()
    assert len(catch_up) == 2  # one per VM
    client.wait_all(catch_up)
    events = client._runtime.app.events.get(item_id_for("default/rg-japaneast/vm01"))
    missed = [e for e in events if isinstance(e, VirtualMachine.SlotsMissed)]
    assert len(missed) == 1
    assert missed[0].slots == [START + timedelta(days=1, hours=6), START + timedelta(days=1, hours=18)]
    assert "not running" in missed[0].reason
    assert _started_slots(client, "vm01")[-1] == START + timedelta(days=2, hours=6)  # the catch-up
    assert {i.missed_slots for i in client.protected_items(vault)} == {2}
    assert _run_hours(client, clock, 1) == []  # nothing more until the next slot


def test_a_slot_due_while_a_backup_runs_is_recorded_as_missed(sim: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = sim
    client._runtime.close_workers()
    client.backup_now(vault, "vm01")  # stays in progress
    clock.advance(timedelta(hours=7))
    created = client.run_scheduler()
    assert len(created) == 1  # vm02 only
    events = client._runtime.app.events.get(item_id_for("default/rg-japaneast/vm01"))
    [missed] = [e for e in events if isinstance(e, VirtualMachine.SlotsMissed)]
    assert "still running" in missed.reason


def test_scheduled_points_get_their_tiers_from_the_policy(sim: tuple[Client, ManualClock, str]) -> None:
    client, clock, vault = sim
    _run_hours(client, clock, 7)
    [rp] = client.recovery_points(vault, "vm01")
    assert rp.tiers == ["daily"]
    assert rp.taken_at == START + timedelta(hours=6)  # the 06:00 slot, taken when it fell due
    assert rp.expires_at == rp.taken_at + timedelta(days=7)
    assert Counter(r.vm_name for r in client.recovery_points(vault)) == {"vm01": 1, "vm02": 1}
