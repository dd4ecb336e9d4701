"""Backup throughput and peak memory against `restic backup` of the same files, in the same run.

    python bench/backup.py [--gib 1.5] [--dir /tmp/bench]

Generates a disk set (4 MiB regions, 60% random, the rest zeros), then measures the initial backup
and the backup after 1% of the data changed, for this orchestrator (the full client path: a
backup-now job on the embedded deployment) and for restic (Debian's package; the bench says when it
is missing). Prints MB/s for each, the ratio ours/restic, and each one's peak RSS. Target: at least
3x restic's throughput on both runs, with lower peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

MIB = 1024 * 1024
REGION = 4 * MIB
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workdir

DISKS = 3

OURS = """
import json, resource, sys, time
from pathlib import Path
from orchestrator import Client
data, inventory = Path(sys.argv[1]), Path(sys.argv[2])
with Client(data_dir=data, fabric=inventory, principal="bench") as client:
    vaults = client.vaults()
    if vaults:
        vault = vaults[0].vault_id
    else:
        vault = client.create_vault("bench", "japaneast", "rg")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["bench-vm"]))
        client.wait_all(client.protect(vault, ["bench-vm"]))
    start = time.perf_counter()
    job = client.wait(client.backup_now(vault, "bench-vm"), timeout=3600)
    seconds = time.perf_counter() - start
    assert job.status == "completed", job.error_message
print(json.dumps({"seconds": seconds, "stored": job.result["stored_bytes"], "logical": job.result["logical_bytes"]}))
"""


def generate(directory: Path, total: int, seed: int = 7) -> list[Path]:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    per_disk = total // DISKS // REGION * REGION
    paths = []
    for index in range(DISKS):
        path = directory / f"disk{index}.img"
        with path.open("wb") as f:
            f.truncate(per_disk)
            for offset in range(0, per_disk, REGION):
                if rng.random() < 0.6:
                    f.seek(offset)
                    f.write(rng.randbytes(REGION))
        paths.append(path)
    return paths


def change_one_percent(paths: list[Path], seed: int = 8) -> int:
    rng = random.Random(seed)
    total = sum(p.stat().st_size for p in paths)
    regions = max(1, total // 100 // REGION)
    with paths[0].open("r+b") as f:
        for offset in rng.sample(range(0, paths[0].stat().st_size, REGION), regions):
            f.seek(offset)
            f.write(rng.randbytes(REGION))
    return regions * REGION


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes, and stdout of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args[0]} failed: {err[-2000:]}")
    return seconds, usage.ru_maxrss * 1024, out


def write_inventory(directory: Path, disks: list[Path]) -> Path:
    import yaml

    from orchestrator.fabric.sample import vm_entry

    vm = vm_entry("bench-vm", "japaneast")
    vm["disks"] = [
        {"name": p.stem, "image": str(p), "role": "os" if i == 0 else "data", "size_gb": 64}
        for i, p in enumerate(disks)
    ]
    path = directory / "inventory.yaml"
    path.write_text(yaml.safe_dump({"subscriptions": [{"name": "default", "vms": [vm]}]}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.5)
    workdir.add_options(parser)
    options = parser.parse_args()
    with workdir.work_dir("backup-bench-", options) as base:
        measure(options, base)


def measure(options: argparse.Namespace, base: Path) -> None:
    """Both tools on one data set in `base`, initial and after a 1% change."""
    sys.path.insert(0, str(ROOT))
    disks = generate(base / "disks", int(options.gib * 1024 * MIB))
    os.sync()  # neither tool should pay for writing back the generated data
    total = sum(p.stat().st_size for p in disks)
    inventory = write_inventory(base, disks)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(base / "restic")}
    restic = shutil.which("restic")
    if restic:
        subprocess.run([restic, "init", "--quiet"], env=env, check=True, capture_output=True)
    else:
        print("restic is not installed (Debian: apt-get install restic): no baseline, ratios not computed")

    rows = []
    for label in ("initial", "after 1% change"):
        if label != "initial":
            changed = change_one_percent(disks)
            os.sync()
            print(f"changed {changed / MIB:.0f} MiB of {total / MIB:.0f} MiB")
        _, ours_rss, out = timed([sys.executable, "-c", OURS, str(base / "data"), str(inventory)], env)
        ours = json.loads(out.strip().splitlines()[-1])
        row = {
            "run": label,
            "ours_mb_s": total / ours["seconds"] / 1e6,
            "ours_stored_mib": ours["stored"] / MIB,
            "ours_peak_mib": ours_rss / MIB,
        }
        if restic:
            seconds, rss, _ = timed([restic, "backup", "--quiet", str(base / "disks")], env)
            row.update(restic_mb_s=total / seconds / 1e6, restic_peak_mib=rss / MIB)
            row["ratio"] = row["ours_mb_s"] / row["restic_mb_s"]
        rows.append(row)

    print(
        f"\ndisk set: {DISKS} files, {total / MIB:.0f} MiB, 60% random 4 MiB regions; machine: {os.cpu_count()} cores"
    )
    print(
        f"{'run':<17}{'ours MB/s':>11}{'restic MB/s':>13}{'ratio':>8}{'ours peak MiB':>15}{'restic peak MiB':>17}"
        f"{'ours stored MiB':>17}"
    )
    for row in rows:
        print(
            f"{row['run']:<17}{row['ours_mb_s']:>11.0f}{row.get('restic_mb_s', float('nan')):>13.0f}"
            f"{row.get('ratio', float('nan')):>8.2f}{row['ours_peak_mib']:>15.0f}"
            f"{row.get('restic_peak_mib', float('nan')):>17.0f}{row['ours_stored_mib']:>17.0f}"
        )
    print(
        "target: ratio >= 3.0 on both runs, ours peak < restic peak "
        "(ours: wall time of the backup job through the client; restic: the whole `restic backup` process)"
    )


if __name__ == "__main__":
    main()
