"""What a worker would pay per job if it built its application for each job (as forked rq work horses
once did): a command run through a fresh application against the same command through one
long-lived application (as a worker keeps now: orchestrator/runtime/worker.py), PostgreSQL.

    python bench/coldstart.py [--jobs 100]

warm      one application: load a vault (cached, fast-forwarded), change its replication
cold      the same, through a new application per job, opened without table DDL, then closed
Prints the CPU time per job of this process and of the PostgreSQL server (its backends included,
read from /proc), and the cold/warm ratios. No target: it explains why workers keep one.
Uses the TEST_POSTGRES_* settings of the tests (a schema of its own, dropped after).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workdir
from orchestrator.config import load_settings
from orchestrator.domain import Vault
from orchestrator.domain.values import Replication
from orchestrator.runtime.bootstrap import build_app
from orchestrator.write import commands as c
from orchestrator.write.application import Orchestrator
from tests.helpers import PG_DB, PG_HOST, PG_USER, drop_pg_schema, new_pg_schema


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process, ended backends included (the postmaster's children)."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if "postgres" not in Path(f"/proc/{pid}/cmdline").read_text():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def per_job(
    jobs: int, app_for_job: Callable[[], Orchestrator], warm: Orchestrator, vault_id: UUID
) -> tuple[float, float]:
    server, own = postgres_cpu(), time.process_time()
    for i in range(jobs):
        app = app_for_job()
        app.get(vault_id, Vault)
        app.handle(
            c.SetReplication(vault_id=vault_id, replication=(Replication.LOCAL, Replication.GEO)[i % 2]), "bench"
        )
        if app is not warm:
            app.close()
    return (time.process_time() - own) / jobs * 1000, (postgres_cpu() - server) / jobs * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    workdir.add_options(parser)
    args = parser.parse_args()
    with workdir.work_dir("bench-coldstart-", args) as work:
        measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> None:
    schema = new_pg_schema()
    try:
        settings = load_settings(
            {},
            data_dir=work / "data",
            event_store="postgres",
            postgres_host=PG_HOST,
            postgres_user=PG_USER,
            postgres_dbname=PG_DB,
            postgres_schema=schema,
        )
        warm = build_app(settings)
        vault_id = warm.handle(c.CreateVault(name="vault-a", region="japaneast", resource_group="rg"), "bench")
        warm_own, warm_server = per_job(args.jobs, lambda: warm, warm, vault_id)
        cold_own, cold_server = per_job(args.jobs, lambda: build_app(settings, create_tables=False), warm, vault_id)
        warm.close()
    finally:
        drop_pg_schema(schema)
    print(f"PostgreSQL, {args.jobs} jobs each way, CPU ms per job")
    print(f"{'':28}{'this process':>14}{'PostgreSQL':>12}")
    print(f"{'warm (one application)':28}{warm_own:14.1f}{warm_server:12.1f}")
    print(f"{'cold (one per job, a horse)':28}{cold_own:14.1f}{cold_server:12.1f}")
    print(f"{'ratio cold/warm':28}{cold_own / warm_own:14.1f}{cold_server / max(warm_server, 0.01):12.1f}")


if __name__ == "__main__":
    main()
