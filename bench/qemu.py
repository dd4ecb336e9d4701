"""A running QEMU VM's incremental backup after 1% of its disk changed: ours (the QEMU fabric's
dirty bitmap: only the changed blocks read, over NBD) against `restic backup` of the same disk image,
whole process against whole process, in the same run.

    python bench/qemu.py [--gib 4] [--reps 3] [--block-size 256K] [--dir DIR] [--keep]

Each repetition: a fresh qcow2 image (60% of its 4 MiB regions random, the rest zeros), a QEMU
process running it (paused, no guest: writes go through QEMU's block layer via the monitor's
qemu-io), fresh repositories; the initial backups (order rotated); the scattered 1% change (writes of
64 KiB of random data at random 4 KiB-aligned offsets, through QEMU, then flushed so restic sees them
in the image file); the incremental backups (order rotated). Ours is a `backupctl backup-now`
process on the embedded default; restic backs up the image file (encrypted, its default compression),
reading all of it as any file-level tool must. Bytes read: ours' `read_bytes` from its job's result,
restic's `total_bytes_processed`.

Prints each repetition, then medians and ranges: seconds, bytes read, and the ratio restic / ours
(>1: ours faster). Everything it made is removed at the end (`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file's own directory goes: as a script's, it would come first and its name, qemu, would hide
# the qemu.qmp library.
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

from bench import workdir
from bench.backup import Run, job_seconds, median_range, timed
from bench.processes import product_env, protect_in_new_vault
from orchestrator.fabric.qemu import answers
from orchestrator.fabric.qmp import Monitor

MIB = 1024 * 1024
REGION = 4 * MIB
WRITE, ALIGN = 64 * 1024, 4096
VM = "bench-qvm"


def make_image(base: Path, gib: float, seed: int) -> Path:
    size = int(gib * 1024) * MIB
    raw, image = base / "disk.raw", base / "disk.qcow2"
    rng = random.Random(seed)
    with raw.open("wb") as f:
        for _ in range(size // REGION):
            f.write(rng.randbytes(REGION) if rng.random() < 0.6 else bytes(REGION))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(image)], check=True)
    raw.unlink()
    return image


class Vm:
    def __init__(self, image: Path) -> None:
        self.sockets = Path(tempfile.mkdtemp(prefix="bqvm-"))
        self.qmp = self.sockets / "vm.qmp"
        self.proc = subprocess.Popen(
            [
                *("qemu-system-x86_64", "-S", "-nodefaults", "-display", "none", "-machine", "accel=tcg", "-m", "64"),
                *("-qmp", f"unix:{self.qmp},server=on,wait=off"),
                *("-drive", f"file={image},format=qcow2,if=none,id=os0"),
                *("-device", "virtio-blk-pci,drive=os0,share-rw=on"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not answers(self.qmp):
            if self.proc.poll() is not None:
                raise SystemExit("QEMU did not start")
            time.sleep(0.02)

    def hmp(self, line: str) -> None:
        with Monitor(self.qmp) as qmp:
            out = qmp.execute("human-monitor-command", {"command-line": line})
        if "error" in str(out).lower():
            raise SystemExit(f"qemu-io: {out}")

    def change(self, size: int, scratch: Path, seed: int) -> int:
        """Scattered random writes over 1% of the disk; the bytes written."""
        rng = random.Random(seed)
        count = max(1, size // 100 // WRITE)
        source = scratch / "write.bin"
        for _ in range(count):
            source.write_bytes(rng.randbytes(WRITE))
            offset = rng.randrange(0, (size - WRITE) // ALIGN) * ALIGN
            self.hmp(f'qemu-io os0 "write -s {source} {offset} {WRITE}"')
        self.hmp('qemu-io os0 "flush"')  # into the image file, for restic
        source.unlink()
        return count * WRITE

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.sockets, ignore_errors=True)


class Ours:
    name = "ours"

    def __init__(self, base: Path, qmp: Path, block_size: str) -> None:
        inventory = base / "fabric" / "inventory.json"
        inventory.parent.mkdir()
        os_spec = {"type": "linux", "version": "Debian 12"}
        entry = {"name": VM, "qmp": str(qmp), "resource_group": "rg", "region": "japaneast", "os": os_spec}
        subscription = {"name": "default", "fabric": "qemu", "qemu_vms": [entry]}
        inventory.write_text(json.dumps({"subscriptions": [subscription]}))
        self.env = product_env(base / "ours", inventory)
        if block_size:
            self.env["BACKUP_BLOCK_SIZE"] = block_size
        self.backupctl = str(Path(sys.executable).with_name("backupctl"))
        protect_in_new_vault(self.backupctl, self.env, VM)

    def backup(self) -> tuple[Run, int]:
        run, out = timed([self.backupctl, "backup-now", VM, "--vault", "bench", "--json"], self.env)
        job = json.loads(out)
        job = job[0] if isinstance(job, list) else job
        if job["status"] not in ("completed", "completed_with_warnings"):
            raise SystemExit(f"ours: backup {job['status']}: {job.get('error_message')}")
        run.job = job_seconds(job)
        return run, int(job["result"]["read_bytes"])


class Restic:
    name = "restic"

    def __init__(self, base: Path, image: Path) -> None:
        self.image = image
        self.env = {
            **os.environ,
            "RESTIC_PASSWORD": "bench",
            "RESTIC_REPOSITORY": str(base / "restic"),
            "RESTIC_CACHE_DIR": str(base / "restic-cache"),
        }
        subprocess.run(["restic", "init", "--quiet"], env=self.env, check=True, capture_output=True)

    def backup(self) -> tuple[Run, int]:
        run, out = timed(["restic", "backup", "--json", str(self.image)], self.env)
        summary = next(json.loads(line) for line in reversed(out.splitlines()) if '"summary"' in line)
        return run, int(summary["total_bytes_processed"])


def repetition(
    base: Path, gib: float, index: int, block_size: str, results: dict[tuple[str, str], list[tuple[Run, int]]]
) -> None:
    image = make_image(base, gib, seed=index)
    vm = Vm(image)
    try:
        tools: list[Ours | Restic] = [Ours(base, vm.qmp, block_size), Restic(base, image)]
        order = tools if index % 2 == 0 else tools[::-1]
        for tool in order:
            results[(tool.name, "initial")].append(tool.backup())
        written = vm.change(int(gib * 1024) * MIB, base, seed=100 + index)
        for tool in order[::-1]:
            results[(tool.name, "incremental")].append(tool.backup())
        line = [f"rep {index + 1}: changed {written / MIB:.1f} MiB"]
        for (name, step), runs in results.items():
            run, read = runs[-1]
            line.append(f"{name} {step} {run.seconds:.2f} s, read {read / MIB:.1f} MiB")
        print("; ".join(line), flush=True)
    finally:
        vm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--block-size", default="", help="ours' BACKUP_BLOCK_SIZE (default: the product's)")
    parser.add_argument("--reps", type=int, default=3)
    workdir.add_options(parser)
    options = parser.parse_args()
    for tool in ("restic", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install restic qemu-system-x86 qemu-utils)")
    results: dict[tuple[str, str], list[tuple[Run, int]]] = {
        (tool, step): [] for step in ("initial", "incremental") for tool in ("ours", "restic")
    }
    with workdir.work_dir("bench-qemu-", options) as base:
        for index in range(options.reps):
            rep = base / f"rep{index}"
            rep.mkdir()
            repetition(rep, options.gib, index, options.block_size, results)
            shutil.rmtree(rep, ignore_errors=True)
    blocks = options.block_size or "the default block size"
    print(f"\n{options.gib:g} GiB qcow2 disk of a running QEMU VM, ours at {blocks}, {options.reps} repetitions:")
    for step in ("initial", "incremental"):
        ours, restic = results[("ours", step)], results[("restic", step)]
        ratios = [r.seconds / o.seconds for (o, _), (r, _) in zip(ours, restic, strict=True)]
        print(
            f"{step}: ours {median_range([o.seconds for o, _ in ours])} s"
            f" (its job {median_range([o.job for o, _ in ours])} s),"
            f" read {statistics.median(b for _, b in ours) / MIB:.1f} MiB;"
            f" restic {median_range([r.seconds for r, _ in restic])} s,"
            f" read {statistics.median(b for _, b in restic) / MIB:.1f} MiB;"
            f" restic / ours {median_range(ratios)}"
        )


if __name__ == "__main__":
    main()
