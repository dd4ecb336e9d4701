"""Commands per second through the client on PostgreSQL against raw eventsourcing saves of
one-event aggregates on the same database, measured in the same run.

    python bench/commands.py [--commands 3000]

ours      `Client.set_replication` on 50 vaults in turn: a pydantic command, its handler loading the
          vault (from the process's aggregate cache, brought up to date by one read of any newer
          events, and copied for the command), checking the rule, and saving one event with the
          principal (plus the library's snapshot every 50 events of a vault, read back to be taken)
baseline  an eventsourcing `Application` saving new one-event aggregates (one insert each) through
          the same library, database and pool settings
Prints commands per second, saves per second and the ratio (median of rounds, and each round's).
Floor (issue 15): at least 0.6.
Uses the TEST_POSTGRES_* settings of the tests (a schema of its own, dropped after).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench import workdir
from orchestrator import Client
from tests.helpers import PG_DB, PG_HOST, PG_USER, drop_pg_schema, fabric_with, new_pg_schema


class Note(Aggregate):
    @event("Written")
    def __init__(self, text: str) -> None:
        self.text = text


class Raw(Application[object]):
    name = "raw"


def ours(client: Client, vaults: list[str], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        client.set_replication(vaults[i % len(vaults)], "local" if (i // len(vaults)) % 2 == 0 else "geo")
    return n / (time.perf_counter() - started)


def raw(app: Raw, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        app.save(Note(text=f"note {i}"))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    workdir.add_options(parser)
    args = parser.parse_args()
    with workdir.work_dir("bench-commands-", args) as work:
        measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> None:
    schema = new_pg_schema()
    pg = {
        "POSTGRES_DBNAME": PG_DB,
        "POSTGRES_HOST": PG_HOST,
        "POSTGRES_PORT": "5432",
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASSWORD": "",
        "POSTGRES_SCHEMA": schema,
    }
    try:
        with Client(
            data_dir=work / "data",
            fabric=fabric_with(work, healthy=1),
            event_store="postgres",
            postgres_host=PG_HOST,
            postgres_user=PG_USER,
            postgres_dbname=PG_DB,
            postgres_schema=schema,
            principal="bench",
            start_services=False,
        ) as client:
            vaults = [client.create_vault(f"vault-{i:02d}", "japaneast", "rg") for i in range(50)]
            env = {**client.settings.eventsourcing_env(), **pg, "PERSISTENCE_MODULE": "eventsourcing.postgres"}
            baseline_app = Raw(env=env)
            ours_rates, raw_rates = [], []
            for _ in range(args.rounds):
                raw_rates.append(raw(baseline_app, args.commands))
                ours_rates.append(ours(client, vaults, args.commands))
            baseline_app.close()
        ours_rate, raw_rate = statistics.median(ours_rates), statistics.median(raw_rates)
        ratios = [o / r for o, r in zip(ours_rates, raw_rates, strict=True)]
        print(f"PostgreSQL, {args.commands} per round, median of {args.rounds}")
        print(f"raw eventsourcing saves (one-event aggregates)  {raw_rate:10,.0f} /s")
        print(f"client commands (set_replication)                {ours_rate:10,.0f} /s")
        print(f"ratio commands/saves                             {ours_rate / raw_rate:10.3f}   (floor >= 0.6)")
        print("rounds' ratios                                   " + ", ".join(f"{r:.3f}" for r in ratios))
    finally:
        drop_pg_schema(schema)


if __name__ == "__main__":
    main()
