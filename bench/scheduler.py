"""One scheduler tick over 100,000 protected items, against reading the same item rows raw, in the
same run.

    python bench/scheduler.py [--items 100000] [--store sqlite|postgres]

Fills the items and policies read models with `--items` actively protected VMs under 20 policies
(daily and weekly, several time zones), all backed up at their latest slot, then times
`Scheduler.tick` at a moment when none is due (the steady state: the whole cost is finding that
out) and, as the baseline, a bare `SELECT` of the same rows. Target: the tick under one second.
PostgreSQL uses the TEST_POSTGRES_* settings of the tests (a schema of its own, dropped after).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workdir
from orchestrator.clock import ManualClock
from orchestrator.dispatch.scheduler import Scheduler
from orchestrator.domain.schedule import Schedule, slots_between
from projections.base import ts
from projections.runner import ensure_schemas
from projections.store import ReadStore

ZONES = ["UTC", "Asia/Tokyo", "Europe/Berlin", "America/New_York"]


def fill(store: ReadStore, items: int, now: datetime) -> None:
    policies = []
    for i in range(20):
        weekly = i % 2 == 1
        schedule = {
            "frequency": "weekly" if weekly else "daily",
            "times": [f"{i % 24:02d}:30"],
            "weekdays": ["sunday", "wednesday"] if weekly else [],
        }
        zone = ZONES[i % len(ZONES)]
        latest = slots_between(Schedule.model_validate(schedule), ZoneInfo(zone), now - timedelta(days=8), now)[-1]
        policies.append((str(uuid.uuid4()), json.dumps(schedule), zone, ts(latest)))
    with store.transaction() as tx:
        for policy_id, schedule, zone, _ in policies:
            tx.execute(
                f"INSERT INTO {store.t('policies')} (policy_id, vault_id, name, schedule, retention, timezone, "
                "updated_at) VALUES (?, 'v', ?, ?, '{}', ?, ?)",
                (policy_id, f"p-{policy_id[:8]}", schedule, zone, ts(now)),
            )
        for n in range(items):
            policy_id, _, _, latest = policies[n % len(policies)]
            tx.execute(
                f"INSERT INTO {store.t('items')} (item_id, vm_key, vault_id, vault_name, vm_name, region, "
                "deployment_model, status, last_job_id, policy_id, last_slot, updated_at) "
                "VALUES (?, ?, 'v', 'vault', ?, 'japaneast', 'resource_manager', 'protected', 'j', ?, ?, ?)",
                (str(uuid.uuid4()), f"default/rg/vm{n}", f"vm{n}", policy_id, latest, ts(now)),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=5)
    workdir.add_options(parser)
    args = parser.parse_args()
    with workdir.work_dir("bench-scheduler-", args) as work:
        measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    schema = ""
    if args.store == "postgres":
        from tests.helpers import PG_DB, PG_HOST, PG_USER, new_pg_schema

        schema = new_pg_schema()
        store = ReadStore.postgres(host=PG_HOST, port=5432, dbname=PG_DB, user=PG_USER, password="", schema=schema)
    else:
        store = ReadStore.sqlite(work / "readmodels.sqlite")
    try:
        ensure_schemas(store)
        fill(store, args.items, now)
        scheduler = Scheduler(app=None, store=store, clock=ManualClock(now), retention_hour=25)  # type: ignore[arg-type]
        ticks, raws = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            rows = store.fetch(f"SELECT item_id, vm_name, last_slot, policy_id FROM {store.t('items')}")
            raws.append(time.perf_counter() - started)
            started = time.perf_counter()
            created = scheduler.tick(now)
            ticks.append(time.perf_counter() - started)
            assert created == [] and len(rows) == args.items
        tick, raw = statistics.median(ticks), statistics.median(raws)
        print(f"store {args.store}, {args.items} protected items, 20 policies, median of {args.rounds}")
        print(f"raw SELECT of the item rows   {raw * 1000:8.0f} ms")
        print(f"scheduler tick (none due)     {tick * 1000:8.0f} ms   (target < 1000 ms)")
        print(f"ratio tick/raw                {tick / raw:8.2f}")
    finally:
        store.close()
        if schema:
            from tests.helpers import drop_pg_schema

            drop_pg_schema(schema)


if __name__ == "__main__":
    main()
