"""The audit log through the audit index against a scan of the whole history, whole process against
whole process, in the same run.

    python bench/history.py [--events 20000] [--rounds 5] [--dir /tmp/bench-history]

Builds a history of at least `--events` events (bench/replay.py's: a vault with protected VMs and
backups, then vault and policy edits), lets the audit index catch up, then times, for a narrow filter
(one VM's events) and a broad one (every job event):
  ours      `backupctl audit log --vm ... --jsonl FILE`: the index finds the entries, the event
            store gives them
  baseline  a process that opens the same data dir and writes the same JSON Lines from
            `orchestrator.audit.history.scan`, which reads and filters every stored event (what
            `history()` did before the index)
each as a new process, in alternating order, `--rounds` times, and prints each round, the median and
range of each, and the ratio baseline/ours (above 1: ours is faster). Both outputs are compared.
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
from bench.replay import build_history
from orchestrator import Client
from tests.helpers import fabric_with

SCAN = """
import sys
from pathlib import Path
from orchestrator import Client
from orchestrator.audit.history import scan
with Client(start_services=False) as client:
    filters = {sys.argv[2]: sys.argv[3]}
    with Path(sys.argv[1]).open("x") as out:
        for entry in scan(client._runtime.app, **filters):
            out.write(entry.model_dump_json() + "\\n")
"""
CASES = (("one VM", "vm_name", "vm03", "--vm"), ("every job event", "event_type", "job", "--type"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    workdir.add_options(parser)
    args = parser.parse_args()
    with workdir.work_dir("bench-history-", args) as work:
        measure(args, work)


def measure(args: argparse.Namespace, work: Path) -> None:
    fabric = fabric_with(work, healthy=10)
    with Client(data_dir=work / "data", fabric=fabric, principal="bench", scheduler_interval=3600) as client:
        events = build_history(client, args.events)
        head = client._runtime.app.recorder.max_notification_id() or 0
        assert client._runtime.store.wait(["audit_index"], head, 600), "the audit index did not catch up"
    env = product_env(work / "data", fabric)
    print(f"{events} events, {os.cpu_count()} CPUs, {args.rounds} rounds, order alternated")
    for label, field, value, option in CASES:
        ours, baseline = [], []
        for round_ in range(args.rounds):
            mine, theirs = work / f"ours-{field}-{round_}.jsonl", work / f"scan-{field}-{round_}.jsonl"
            runs = [
                (ours, [sys.executable, "-m", "orchestrator", "audit", "log", option, value, "--jsonl", str(mine)]),
                (baseline, [sys.executable, "-c", SCAN, str(theirs), field, value]),
            ]
            for times, command in runs if round_ % 2 == 0 else reversed(runs):
                times.append(timed(command, env))
            assert mine.read_text() == theirs.read_text(), f"{label}: the two outputs differ"
            entries = len(mine.read_text().splitlines())
            mine.unlink()
            theirs.unlink()
        ratio = statistics.median(baseline) / statistics.median(ours)
        print(f"{label} ({entries} entries):")
        for number, (o, b) in enumerate(zip(ours, baseline, strict=True), 1):
            print(f"  round {number}: ours {o:6.2f} s  baseline {b:6.2f} s  ratio {b / o:5.2f}")
        print(
            f"  ours     median {statistics.median(ours):6.2f} s  range {min(ours):.2f}-{max(ours):.2f}\n"
            f"  baseline median {statistics.median(baseline):6.2f} s  range {min(baseline):.2f}-{max(baseline):.2f}\n"
            f"  ratio baseline/ours {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
