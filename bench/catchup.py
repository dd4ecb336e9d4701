"""Projection catch-up over a long history against raw notification-log reading, in the same run.

    python bench/catchup.py [--events 1000000] [--dir /tmp/bench-catchup]

Writes `--events` events on the embedded SQLite store (1,000 vaults through the client, then their
replication changed through the domain model, saved a thousand aggregates at a time), then measures:
  raw       reading every stored event of the notification log in batches of 500 (no decoding)
  catch-up  every read model following the log from position 0 into a fresh read store, exactly
            as the projections service does (one `ProjectionGroup`, `run_once` until caught up)
Prints events per second for each and the ratio catch-up/raw.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from uuid import UUID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workdir
from bench.replay import raw_read
from orchestrator import Client
from orchestrator.domain import Vault
from orchestrator.domain.values import Replication
from projections.base import ProjectionGroup
from projections.runner import build_projections
from projections.store import ReadStore
from tests.helpers import fabric_with


def write_history(client: Client, target: int) -> int:
    app = client._runtime.app
    ids = [client.create_vault(f"vault-{i:04d}", "japaneast", "rg") for i in range(1000)]
    round_ = 0
    vaults = [app.get(UUID(i), Vault) for i in ids]  # kept in memory: each save adds to their versions
    while (app.recorder.max_notification_id() or 0) < target:
        for _ in range(10):
            round_ += 1
            for vault in vaults:
                vault.change_replication(Replication.LOCAL if round_ % 2 else Replication.GEO)
        app.save(*vaults)
    return app.recorder.max_notification_id() or 0


def catch_up(client: Client, directory: Path, events: int) -> float:
    store = ReadStore.sqlite(directory / "fresh-readmodels.sqlite")
    projections = build_projections(client._runtime.app, store)
    group = ProjectionGroup(client._runtime.app, store, projections)
    started = time.perf_counter()
    while group.run_once():
        pass
    seconds = time.perf_counter() - started
    assert all(store.position(p.name) == events for p in projections)
    store.close()
    return events / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    workdir.add_options(parser)
    args = parser.parse_args()
    with workdir.work_dir("bench-catchup-", args) as work:
        with Client(
            data_dir=work / "data", fabric=fabric_with(work, healthy=1), principal="bench", start_services=False
        ) as client:
            started = time.perf_counter()
            events = write_history(client, args.events)
            written = time.perf_counter() - started
            count, seconds = raw_read(client)
            raw = count / seconds
            ours = catch_up(client, work, events)
        print(f"SQLite, {events:,} events (written in {written:.0f}s)")
        print(f"raw notification log read     {raw:12,.0f} events/s")
        print(f"projection catch-up           {ours:12,.0f} events/s")
        print(f"ratio catch-up/raw            {ours / raw:12.3f}")


if __name__ == "__main__":
    main()
