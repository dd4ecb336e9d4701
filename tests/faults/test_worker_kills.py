"""200 backups of small VMs while a random rq worker (and the job it runs) is SIGKILLed every few
seconds: every job ends completed or failed with a reason within the lease, no recovery point twice,
and the vault store checks clean."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment
from tests.helpers import topics

pytestmark = [pytest.mark.integration, pytest.mark.faults]
BACKUPS = 200
VAULTS = 10
WORKERS = 3
KILL_EVERY = 3.0  # seconds
KILLING_FOR = 21.0  # seconds of kills, then the run finishes undisturbed
LEASE = 150.0  # seconds: a dead worker's job is retried or failed within this (README, "A job whose worker dies")


def test_two_hundred_backups_while_workers_are_killed(
    bulk: Path, deployment: Deployment, vault_store: dict[str, str]
) -> None:
    vms = [f"vm{i:03d}" for i in range(BACKUPS)]
    # Ten subscriptions of twenty VMs, a vault each, as a platform team would split them (it also keeps
    # each vault's recorded inventory small: see the issue note on bulk operations).
    subscription = {vm: f"sub{i % VAULTS}" for i, vm in enumerate(vms)}
    inventory = write_fabric(
        bulk / "many",
        {f"sub{v}": [vm_entry(vm, "japaneast") for vm in vms if subscription[vm] == f"sub{v}"] for v in range(VAULTS)},
        disk_mib=1,
    )
    deployment.env.update(BACKUP_FABRIC=str(inventory), BACKUP_VAULT_STORE=str(bulk / "vaultstore"), **vault_store)
    deployment.start_all(workers=WORKERS)
    rng = random.Random(6)
    with deployment.client() as client:
        vaults = [client.create_vault(f"vault-{v}", "japaneast", "rg", subscription=f"sub{v}") for v in range(VAULTS)]
        owner = {vm: vaults[int(subscription[vm][3:])] for vm in vms}
        client.wait_all([client.discover(v) for v in vaults], timeout=60)
        phase = time.monotonic()
        client.wait_all(
            [j for v in vaults for j in client.register(v, [vm for vm in vms if owner[vm] == v])], timeout=300
        )
        protections = client.wait_all(
            [j for v in vaults for j in client.protect(v, [vm for vm in vms if owner[vm] == v])], timeout=300
        )
        assert Counter(j.status for j in protections) == {"completed": BACKUPS}, deployment.logs()
        print(f"registered and protected in {time.monotonic() - phase:.0f}s")
        job_ids = [client.backup_now(owner[vm], vm) for vm in vms]
        started = time.monotonic()
        kills, generation = 0, WORKERS
        while time.monotonic() - started < KILLING_FOR:
            time.sleep(KILL_EVERY)
            victim = rng.choice(sorted(n for n in deployment.procs if n.startswith("worker")))
            deployment.kill(victim)
            deployment.start(f"worker{generation}")
            kills, generation = kills + 1, generation + 1
        jobs = client.wait_all(job_ids, timeout=LEASE + 60)
        ended_within = time.monotonic() - started - KILLING_FOR

        assert kills >= KILLING_FOR // KILL_EVERY - 1
        assert ended_within < LEASE, f"the last job ended {ended_within:.0f}s after the kills stopped"
        outcomes = Counter(j.status for j in jobs)
        assert set(outcomes) <= {"completed", "failed"}, outcomes
        assert all(j.error_code and j.error_message for j in jobs if j.status == "failed")
        assert outcomes["completed"] >= BACKUPS * 0.9, (outcomes, Counter(j.error_code for j in jobs))
        points = [p for v in vaults for p in client.recovery_points(v)]
        assert len(points) == outcomes["completed"]
        assert len({p.job_id for p in points}) == len(points)  # one point per job, never two
        assert topics(client)["backup.recovery_point.created"] == len(points)
        for vault in vaults:
            report = client.check_vault(vault)
            assert report["clean"], report
