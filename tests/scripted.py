"""A scripted history of more than 10,000 events through the client, with the read models captured
at instants along the way: for the as-of and replay checks, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from orchestrator import Client
from orchestrator.entry.queries import ReadModels

TARGET_EVENTS = 10_000
VMS = [f"vm{i:02d}" for i in range(1, 11)]


def snapshot(view: ReadModels, now: datetime | None = None) -> dict[str, Any]:
    """Every read model, as plain data."""
    vaults = view.vaults()
    data: dict[str, Any] = {"vaults": vaults, "jobs": view.jobs(), "dashboard": view.dashboard(now=now)}
    for vault in vaults:
        data[vault.name] = (
            view.protected_items(vault.vault_id, include_former=True),
            view.recovery_points(vault.vault_id, include_expired=True),
            view.policies(vault.vault_id),
        )
    return data


def run_script(client: Client) -> list[tuple[datetime, dict[str, Any]]]:
    """The operator's script; after each phase (nothing in flight), the instant and the read models."""
    captured: list[tuple[datetime, dict[str, Any]]] = []

    def capture() -> None:
        client.vaults()  # the read models have caught up
        time.sleep(0.005)
        instant = datetime.now(UTC)
        captured.append((instant, snapshot(client, instant)))
        time.sleep(0.005)  # later events carry later times

    main = client.create_vault("vault-main", "japaneast", "rg")
    client.wait(client.discover(main))
    client.wait_all(client.register(main, VMS))
    client.wait_all(client.protect(main, VMS))
    capture()
    for _ in range(2):
        client.wait_all([client.backup_now(main, vm) for vm in VMS])
    client.stop_protection(main, VMS[-1])
    capture()
    spare = [client.create_vault(f"vault-{i:02d}", "japaneast", "rg") for i in range(60)]
    capture()
    nightly = {"frequency": "daily", "times": ["01:00"]}

    def edit(vault: str, rounds: range) -> None:
        """One operator per vault, at the same time as the others."""
        for round_ in rounds:
            client.set_replication(vault, "local" if round_ % 2 == 0 else "geo")
            client.update_policy(vault, "DefaultPolicy", nightly, {"daily": {"days": 7 + round_ % 50}}, "Asia/Tokyo")

    with ThreadPoolExecutor(4) as pool:
        for rounds in (range(40), range(40, 85)):
            list(pool.map(lambda v: edit(v, rounds), spare))  # noqa: B023 - used before the next round
            capture()
    client.wait(client.run_retention(main))
    capture()
    return captured
