"""Replay rate (every read model rebuilt from the history into a fresh store) against the raw rate of
reading the same notification log, measured in the same run.

    python bench/replay.py [--events 20000] [--store sqlite|postgres] [--dir /tmp/bench-replay]

Builds a history of at least `--events` events through the client (a vault with protected VMs and
backups, then vault and policy edits), then measures:
  raw     reading every stored event of the notification log in batches (no decoding)
  replay  `Client.audit_replay()`: decoding each event and applying it to every projection, but
          for the events a later one overwrites (`Projection.overwrites`), which it skips
  every   the same rebuild applying every event (no skipping), for comparison
Prints events per second for each, the share of events skipped and the ratio replay/raw. Target: at
least 0.5. The history is mostly edits of the same 50 vaults and policies, so most of its events are
overwritten within a section: `every` is the rate on a history where none is.
PostgreSQL uses the TEST_POSTGRES_* settings of the tests (a schema of its own, dropped after).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workdir
from orchestrator import Client
from orchestrator.audit import replay
from projections.follower import BATCH
from projections.runner import PROJECTIONS
from tests.helpers import fabric_with


def build_history(client: Client, target: int) -> int:
    main = client.create_vault("vault-main", "japaneast", "rg")
    client.wait(client.discover(main))
    vms = [f"vm{i:02d}" for i in range(1, 11)]
    client.wait_all(client.register(main, vms))
    client.wait_all(client.protect(main, vms))
    client.wait_all([client.backup_now(main, vm) for vm in vms])
    spare = [client.create_vault(f"vault-{i:02d}", "japaneast", "rg") for i in range(50)]
    edits = 0
    while (client._runtime.app.recorder.max_notification_id() or 0) < target:
        vault = spare[edits % len(spare)]
        if edits % 2:
            client.set_replication(vault, "local" if edits % 4 == 1 else "geo")
        else:
            client.update_policy(
                vault, "DefaultPolicy", {"frequency": "daily", "times": ["01:00"]}, {"daily": {"days": 7 + edits % 50}}
            )
        edits += 1
    return client._runtime.app.recorder.max_notification_id() or 0


def raw_read(client: Client) -> tuple[int, float]:
    recorder = client._runtime.app.recorder
    started, count, start = time.perf_counter(), 0, 1
    while True:
        batch = recorder.select_notifications(start=start, limit=BATCH)
        if not batch:
            break
        count += len(batch)
        start = batch[-1].id + 1
    return count, time.perf_counter() - started


def rebuild_every_event(client: Client) -> float:
    """Events per second of the replay's rebuild with no event skipped."""
    app = client._runtime.app
    scratch = replay.ScratchStore()
    try:
        started = time.perf_counter()
        count = replay.rebuild(app, scratch.store, compact=False)
        return count / (time.perf_counter() - started)
    finally:
        scratch.close()


def skipped_share(client: Client) -> float:
    """The share of the history's events that the replay skips as overwritten."""
    app = client._runtime.app
    head = app.recorder.max_notification_id() or 0
    scratch = replay.ScratchStore()
    try:
        projections = [cls(app, scratch.store) for cls in PROJECTIONS]
        rebuilding = replay.Rebuild(projections, [head] * len(projections), None)
        skipped = sum(len(rebuilding.superseded(section)) for section in replay.sections(app, head))
    finally:
        scratch.close()
    return skipped / head if head else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    workdir.add_options(parser)
    parser.add_argument("--rounds", type=int, default=3, help="measure each this many times; the median counts")
    args = parser.parse_args()
    with workdir.work_dir("bench-replay-", args) as work:
        measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> None:
    settings: dict[str, object] = {
        "data_dir": work / "data",
        "fabric": fabric_with(work, healthy=10),
        "principal": "bench",
        "scheduler_interval": 3600,
    }
    schema = ""
    if args.store == "postgres":
        from tests.helpers import PG_DB, PG_HOST, PG_USER, new_pg_schema

        schema = new_pg_schema()
        settings.update(
            event_store="postgres",
            postgres_host=PG_HOST,
            postgres_user=PG_USER,
            postgres_dbname=PG_DB,
            postgres_schema=schema,
        )
    try:
        with Client(**settings) as client:  # type: ignore[arg-type]
            events = build_history(client, args.events)
            client._runtime.close_workers()
            raw, replayed, every = [], [], []
            for _ in range(args.rounds):
                count, seconds = raw_read(client)
                raw.append(count / seconds)
                report = client.audit_replay()
                assert report.equal, report.differences[:3]
                replayed.append(report.events_per_second)
                every.append(rebuild_every_event(client))
            skipped = skipped_share(client)
        raw_rate, replay_rate, every_rate = (statistics.median(r) for r in (raw, replayed, every))
        print(f"store {args.store}, {events} events, {os.cpu_count()} CPUs, median of {args.rounds}")
        for number, (r, p, e) in enumerate(zip(raw, replayed, every, strict=True), 1):
            print(f"  round {number}: raw {r:10,.0f}  replay {p:10,.0f}  every {e:10,.0f}  ratio {p / r:.3f}")
        print(f"raw notification log read  {raw_rate:12,.0f} events/s")
        print(
            f"replay (all read models)   {replay_rate:12,.0f} events/s   ({skipped:.0%} of events overwritten, skipped)"
        )
        print(f"every event applied        {every_rate:12,.0f} events/s   ratio every/raw {every_rate / raw_rate:.3f}")
        print(f"ratio replay/raw           {replay_rate / raw_rate:12.3f}   (target >= 0.5)")
    finally:
        if schema:
            from tests.helpers import drop_pg_schema

            drop_pg_schema(schema)


if __name__ == "__main__":
    uuid.uuid4()
    main()
