"""End-to-end backups per second against no-op RQ jobs per second, on the same machine, measured in the
same run.

    python bench/throughput.py [--backups 100] [--rounds 3]

Starts the distributed deployment as processes (PostgreSQL in a schema of its own, Redis database
13 unless TEST_REDIS_URL says another, `backupctl serve dispatcher` and `projections`, two `rq
worker` processes with the ProcessWorker class: RQ SimpleWorkers that build their context once),
protects `--backups` x `--rounds` VMs with 1 MiB disks, then, in each round:
  baseline  once every follower has read the whole event log, `--backups` no-op RQ jobs
            (`os.getpid`) enqueued at once on a queue of their own, run by two plain `rq worker`
            processes (RQ's own forking Worker, JSON payloads: the orchestrator's workers run
            nothing but its tasks, so they refuse `os.getpid`), until all finished
  ours      then as many `backup_now` commands at once for VMs not backed up before, until every
            backup job completed (the command, the dispatcher, the worker's prechecks, snapshot,
            manifest and report, the projections)
Each round's ratio compares two measurements taken seconds apart (this machine's speed drifts by
10-20% from one minute to the next); the median round counts. Prints jobs per second for each and
the ratios. Floor: at least 0.2 (issue 15).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workdir

os.environ.setdefault("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from orchestrator import Client
from orchestrator.dispatch.dispatcher import Dispatcher
from orchestrator.fabric.sample import vm_entry, write_fabric
from projections.chain import ChainFollower
from projections.runner import NAMES as PROJECTION_NAMES
from tests.deployment import Deployment, flush
from tests.helpers import REDIS_URL, drop_pg_schema, new_pg_schema

NOOP_QUEUE = "bench-noop"


def start_noop_workers(deployment: Deployment, count: int = 2) -> list[subprocess.Popen[bytes]]:
    """Plain `rq worker` processes for the no-op jobs (idle, blocked in Redis, while backups run)."""
    rq = Path(sys.executable).parent / "rq"
    args = [
        str(rq),
        "worker",
        NOOP_QUEUE,
        "--url",
        REDIS_URL,
        "--serializer",
        "json",
        "--worker-class",
        "rq.worker.Worker",
        "--quiet",
    ]
    return [
        subprocess.Popen(args, env=deployment.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]


def noop_rate(n: int) -> float:
    queue = Queue(NOOP_QUEUE, connection=redis.Redis.from_url(REDIS_URL), serializer=JSONSerializer)
    finished = queue.finished_job_registry
    before = finished.count
    started = time.perf_counter()
    for _ in range(n):
        queue.enqueue("os.getpid", result_ttl=600)
    while finished.count - before < n:
        time.sleep(0.01)
    return n / (time.perf_counter() - started)


def settle(client: Client) -> None:
    """Until every follower (dispatcher, projections, the audit chain) has read the whole log: the
    previous round's tail must not run during the next no-op round."""
    head = client._runtime.app.recorder.max_notification_id() or 0
    client._runtime.store.wait([*PROJECTION_NAMES, Dispatcher.name, ChainFollower.name], head, 120)
    time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backups", type=int, default=100, help="jobs of each kind per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median ratio counts")
    workdir.add_options(parser)
    args = parser.parse_args()
    with workdir.work_dir("bench-throughput-", args) as work:
        measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> None:
    vms = [f"vm{i:04d}" for i in range(args.backups * args.rounds)]
    inventory = write_fabric(work / "fabric", {"default": [vm_entry(vm, "japaneast") for vm in vms]}, disk_mib=1)
    schema = new_pg_schema()
    flush(REDIS_URL)
    deployment = Deployment(work, inventory, schema, REDIS_URL)
    rounds: list[tuple[float, float]] = []
    noop_workers: list[subprocess.Popen[bytes]] = []
    try:
        deployment.start_all(workers=2)
        noop_workers = start_noop_workers(deployment)
        with deployment.client() as client:
            vault = client.create_vault("bench", "japaneast", "rg")
            client.wait(client.discover(vault), timeout=60)
            client.wait_all(client.register(vault, vms), timeout=1200)
            client.wait_all(client.protect(vault, vms), timeout=1200)
            for r in range(args.rounds):
                settle(client)
                baseline = noop_rate(args.backups)
                started = time.perf_counter()
                batch = vms[r * args.backups : (r + 1) * args.backups]
                jobs = client.wait_all([client.backup_now(vault, vm) for vm in batch], timeout=600)
                ours = args.backups / (time.perf_counter() - started)
                assert {j.status for j in jobs} == {"completed"}, {j.error_code for j in jobs}
                rounds.append((baseline, ours))
        print(f"two rq worker processes of each kind, {args.backups} jobs each way per round, {os.cpu_count()} CPUs")
        for i, (baseline, ours) in enumerate(rounds, 1):
            print(f"round {i}: no-op RQ jobs {baseline:6.1f} /s   backups {ours:5.1f} /s   ratio {ours / baseline:.3f}")
        ratio = statistics.median(ours / baseline for baseline, ours in rounds)
        print(f"no-op RQ jobs            {statistics.median(b for b, _ in rounds):8.1f} /s   (median)")
        print(f"end-to-end backups       {statistics.median(o for _, o in rounds):8.1f} /s   (median)")
        print(f"ratio backups/no-op      {ratio:8.3f}   (median of the rounds' ratios; floor >= 0.2)")
    finally:
        for worker in noop_workers:
            worker.kill()
            worker.wait()
        deployment.stop_all()
        flush(REDIS_URL)
        drop_pg_schema(schema)


if __name__ == "__main__":
    main()
