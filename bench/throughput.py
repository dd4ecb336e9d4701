"""End-to-end backups per second against no-op RQ jobs per second, with the same two `rq worker`
processes, measured in the same run.

    python bench/throughput.py [--backups 100]

Starts the distributed deployment as processes (PostgreSQL in a schema of its own, Redis database
13, `backupctl serve dispatcher` and `projections`, two `rq worker` processes with the
PreloadedWorker class), protects `--backups` VMs with 1 MiB disks, then measures:
  baseline  as many no-op RQ jobs (`os.getpid`) enqueued at once on the same queue, until all finished
            (a fraction of a second: measured `--noop-rounds` times, the median counts)
  ours      as many `backup_now` commands at once, until every backup job completed (the command,
            the dispatcher, the worker's prechecks, snapshot, manifest and report, the projections)
Prints jobs per second for each and the ratio. Target: at least 0.25.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

import redis
from rq import Queue

from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment, flush
from tests.helpers import REDIS_URL, drop_pg_schema, new_pg_schema
from workers.queues import JOBS


def noop_rate(n: int) -> float:
    queue = Queue(JOBS, connection=redis.Redis.from_url(REDIS_URL))
    finished = queue.finished_job_registry
    before = finished.count
    started = time.perf_counter()
    for _ in range(n):
        queue.enqueue("os.getpid", result_ttl=600)
    while finished.count - before < n:
        time.sleep(0.01)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backups", type=int, default=100)
    parser.add_argument("--noop-rounds", type=int, default=5, help="no-op rounds; the median counts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    vms = [f"vm{i:03d}" for i in range(args.backups)]
    inventory = write_fabric(work / "fabric", {"default": [vm_entry(vm, "japaneast") for vm in vms]}, disk_mib=1)
    schema = new_pg_schema()
    flush(REDIS_URL)
    deployment = Deployment(work, inventory, schema, REDIS_URL)
    try:
        deployment.start_all(workers=2)
        with deployment.client() as client:
            vault = client.create_vault("bench", "japaneast", "rg")
            client.wait(client.discover(vault), timeout=60)
            client.wait_all(client.register(vault, vms), timeout=600)
            client.wait_all(client.protect(vault, vms), timeout=600)
            rounds = [noop_rate(args.backups) for _ in range(args.noop_rounds)]
            baseline = statistics.median(rounds)
            started = time.perf_counter()
            jobs = client.wait_all([client.backup_now(vault, vm) for vm in vms], timeout=600)
            ours = args.backups / (time.perf_counter() - started)
            assert {j.status for j in jobs} == {"completed"}, {j.error_code for j in jobs}
        print(f"two rq worker processes, {args.backups} jobs each way, {os.cpu_count()} CPUs")
        print(f"no-op RQ jobs            {baseline:8.1f} /s   (median of {' '.join(f'{r:.0f}' for r in rounds)})")
        print(f"end-to-end backups       {ours:8.1f} /s")
        print(f"ratio backups/no-op      {ours / baseline:8.3f}   (target >= 0.25)")
    finally:
        deployment.stop_all()
        flush(REDIS_URL)
        drop_pg_schema(schema)


if __name__ == "__main__":
    main()
