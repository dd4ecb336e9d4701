"""A process killed mid-flow loses nothing: the next one finishes every job, once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from orchestrator import Client
from tests.helpers import topics

SUBMITTER = """
import json, sys, time
from orchestrator import Client
client = Client(data_dir=sys.argv[1], fabric=sys.argv[2], reconcile_interval=0.5)
vault = client.create_vault("vault-east", "japaneast", "rg")
client.wait(client.discover(vault))
jobs = client.register(vault, [f"vm{i:02d}" for i in range(1, 21)])
print(json.dumps(jobs), flush=True)
time.sleep(60)
"""


def test_an_embedded_process_killed_mid_flow_loses_no_job(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBMITTER, str(data), str(fabric)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.stdout is not None
    job_ids = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)  # mid-flow: some jobs queued in the in-process queue, now gone
    proc.wait()

    with Client(data_dir=data, fabric=fabric, reconcile_interval=0.2) as client:
        jobs = client.wait_all(job_ids, timeout=120)
        assert {j.status for j in jobs} == {"completed"}
        events = topics(client)
        assert events["backup.job.completed"] == 21  # discovery + 20, each exactly once
        assert events["backup.vm.registered"] == 20
        assert sorted(i.vm_name for i in client.protected_items(jobs[0].vault_id)) == [
            f"vm{i:02d}" for i in range(1, 21)
        ]


def test_a_second_process_on_the_same_data_dir_is_refused(tmp_path: Path, fabric: Path) -> None:
    with Client(data_dir=tmp_path / "data", fabric=fabric):
        code = subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "from orchestrator import Client, OrchestratorError\n"
                    "try:\n Client(data_dir=__import__('sys').argv[1])\nexcept OrchestratorError as e:\n print(e.code)"
                ),
                str(tmp_path / "data"),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        ).stdout.strip()
    assert code == "DataDirInUse"


def test_concurrent_registrations_of_one_vm_make_one_job(client: Client, discovered_vault: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator import OrchestratorError

    def attempt(_: int) -> str:
        try:
            client.register(discovered_vault, ["vm01"])
            return "accepted"
        except OrchestratorError as exc:
            return exc.code

    with ThreadPoolExecutor(8) as pool:
        outcomes = Counter(pool.map(attempt, range(8)))
    assert outcomes["accepted"] == 1
    assert outcomes["VmAlreadyRegistered"] == 7
    assert topics(client)["backup.job.created"] == 2  # the discovery and one registration
