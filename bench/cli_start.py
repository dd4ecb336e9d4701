"""The CLI's start-up: `backupctl --help` and a read command (`backupctl jobs --json`), whole
processes, against the interpreter's own start and against importing the client, in the same run.

    python bench/cli_start.py [--rounds 7]

Baselines, each a new process:
  python      `python -c pass`: the floor no command goes under
  client      `python -c "import orchestrator.entry.client"`: what every command paid before the CLI
              imported the client only when a command needs one
Ours: `backupctl --help`, and the read commands `jobs --json`, `jobs` (a table), `vault list --json`
and `dashboard` on a small embedded data set whose read models are current (so they read the read
store alone: orchestrator/entry/reader.py). Each is run `--rounds` times, in rotating order; prints
the median and range of each and the ratio of each baseline to ours.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workdir
from bench.processes import product_env, timed
from orchestrator import Client
from tests.helpers import fabric_with


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    workdir.add_options(parser)
    args = parser.parse_args()
    with workdir.work_dir("bench-cli-start-", args) as work:
        fabric = fabric_with(work, healthy=4)
        with Client(data_dir=work / "data", fabric=fabric, scheduler_interval=3600) as client:
            vault = client.create_vault("vault-east", "japaneast", "rg")
            client.wait(client.discover(vault))
            client.wait_all(client.register(vault, ["vm01", "vm02", "vm03", "vm04"]))
            client.vaults()  # the read models at the log's head: the read commands read them alone
        env = product_env(work / "data", fabric)
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "client": [sys.executable, "-c", "import orchestrator.entry.client"],
            "--help": [sys.executable, "-m", "orchestrator", "--help"],
            "jobs --json": [sys.executable, "-m", "orchestrator", "jobs", "--json"],
            "jobs": [sys.executable, "-m", "orchestrator", "jobs"],
            "vault list --json": [sys.executable, "-m", "orchestrator", "vault", "list", "--json"],
            "dashboard": [sys.executable, "-m", "orchestrator", "dashboard"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                times[name].append(timed(commands[name], env))
    print(f"{os.cpu_count()} CPUs, {args.rounds} rounds, order rotated")
    for name, measured in times.items():
        print(f"  {name:18} median {statistics.median(measured):5.2f} s  range {min(measured):.2f}-{max(measured):.2f}")
    client_import, floor = statistics.median(times["client"]), statistics.median(times["python"])
    for ours in names[2:]:
        mine = statistics.median(times[ours])
        print(f"  ratio client-import/{ours}: {client_import / mine:.2f}   (python alone: {floor:.2f} s)")


if __name__ == "__main__":
    main()
