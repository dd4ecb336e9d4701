"""Backup and restore, whole process against whole process: `backupctl` against restic and borg on
the same data, in the same run, with the machine's limits measured beside them.

    python bench/backup.py [--gib 1.5] [--reps 3] [--block-sizes 256K,1M,4M] [--peers restic,borg]
                           [--s3] [--dir DIR] [--keep]

The anchor data set: two disk images (1.5 GiB in all), 60% of their 4 MiB regions random, the rest
written zeros (not sparse). Each repetition, in a fresh repository per tool and with the tools'
order rotated: the initial backup; then the scattered 1% change (245 writes of 64 KiB of random
data at random 4 KiB-aligned offsets over both images) and a backup of it; then a restore of the
latest backup into an empty directory, checked byte for byte afterwards (untimed). Every tool
encrypts: ours (zstd + AES-256-GCM, keyed block names), restic (AES-256 + Poly1305, its default
compression), borg (`repokey`: AES-CTR + HMAC-SHA256, lz4). restic and borg do not make their
restored files durable; their row counts the `sync` after them ("+sync"), ours is durable when
its job completes.

Each of ours is a `backupctl backup-now` / `backupctl restore --disks-to` process on the embedded
default, one per block size given (BACKUP_BLOCK_SIZE), each with its own data dir. `--s3` runs ours
and restic with their repositories on one SeaweedFS S3 server instead (borg has no S3 backend).

The machine's limits, measured each repetition: reading the images from the page cache, SHA-256 of
their non-zero bytes on every core, and durable writes (write + fsync) of the non-zero bytes; a
job's limit is the slowest of those it has to do (a backup reads and hashes everything and writes
what it stores; a restore hashes and writes the non-zero bytes).

Prints per repetition and then the median and range over repetitions: seconds, peak RSS, stored
growth, ratio peer/ours (>1: ours faster) and ours/limit. Everything it made is removed at the end
(`--keep` keeps it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workdir
from bench.processes import product_env, protect_in_new_vault

MIB = 1024 * 1024
REGION = 4 * MIB
DISKS = 2
WRITES, WRITE_SIZE, ALIGN = 245, 64 * 1024, 4096
VM = "bench-vm"


@dataclass
class Run:
    seconds: float
    peak: int  # bytes, the process's peak RSS
    sync: float = 0.0  # seconds of the `sync` after a restore that is not durable by itself
    job: float = 0.0  # ours: the job's own seconds (started to ended), the rest being the process's


@dataclass
class Row:
    tool: str
    step: str  # initial, change, restore
    runs: list[Run] = field(default_factory=list)
    growth: list[int] = field(default_factory=list)  # bytes the repository grew by (backups)


def timed(command: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[Run, str]:
    """As `process`, with the peak RSS of exactly that process (wait4 on it)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{' '.join(command[:3])} failed: {err.read().decode()[-2000:]}")
        return Run(seconds, usage.ru_maxrss * 1024), out.read().decode()


def synced() -> float:
    start = time.perf_counter()
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


# -- the data set ------------------------------------------------------------------------------


def generate(directory: Path, total: int, seed: int = 7) -> tuple[list[Path], int]:
    """The images and how many of their bytes are not zero."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    per_disk = total // DISKS // REGION * REGION
    zeros, nonzero, paths = bytes(REGION), 0, []
    for index in range(DISKS):
        path = directory / f"disk{index}.img"
        with path.open("wb") as f:
            for _ in range(per_disk // REGION):
                if rng.random() < 0.6:
                    f.write(rng.randbytes(REGION))
                    nonzero += REGION
                else:
                    f.write(zeros)  # written, not a hole: every tool reads it
        paths.append(path)
    return paths, nonzero


def scatter(paths: list[Path], seed: int = 8) -> None:
    """245 writes of 64 KiB of random data at random 4 KiB-aligned offsets over every image."""
    rng = random.Random(seed)
    files = [p.open("r+b") for p in paths]
    try:
        for _ in range(WRITES):
            index = rng.randrange(len(files))
            size = paths[index].stat().st_size
            files[index].seek(rng.randrange(0, size - WRITE_SIZE, ALIGN))
            files[index].write(rng.randbytes(WRITE_SIZE))
    finally:
        for f in files:
            f.close()


def same_content(restored: Path, sources: list[Path]) -> None:
    for source in sources:
        found = list(restored.rglob(source.name))
        if len(found) != 1:
            raise SystemExit(f"restore into {restored}: {source.name} found {len(found)} times")
        with source.open("rb") as a, found[0].open("rb") as b:
            while x := a.read(REGION):
                if x != b.read(len(x)):
                    raise SystemExit(f"{found[0]} differs from {source}")
            if b.read(1):
                raise SystemExit(f"{found[0]} is longer than {source}")


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# -- the machine's limits ----------------------------------------------------------------------


@dataclass
class Limits:
    read: float  # seconds to read the images from the page cache
    hash: float  # seconds of SHA-256 over their non-zero bytes on every core
    write_rate: float  # bytes per second written durably

    def backup(self, written: int) -> float:
        return max(self.read, self.hash, written / self.write_rate)

    def restore(self, written: int) -> float:
        return max(self.hash, written / self.write_rate)


def measure_limits(paths: list[Path], nonzero: int, scratch: Path) -> Limits:
    for p in paths:  # warm: the tools read them from the page cache too
        with p.open("rb") as f:
            while f.read(REGION):
                pass
    start = time.perf_counter()
    for p in paths:
        with p.open("rb", buffering=0) as f:
            buffer = bytearray(REGION)
            while f.readinto(buffer):
                pass
    read = time.perf_counter() - start

    cores = os.cpu_count() or 1
    block = os.urandom(REGION)

    def hashing(count: int) -> None:
        for _ in range(count):
            hashlib.sha256(block).digest()

    share = nonzero // REGION // cores
    threads = [threading.Thread(target=hashing, args=(share,)) for _ in range(cores)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    hashed = time.perf_counter() - start

    target = scratch / "durable-write"
    start = time.perf_counter()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(nonzero // REGION):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    wrote = time.perf_counter() - start
    target.unlink()
    return Limits(read, hashed, nonzero / wrote)


# -- the tools ---------------------------------------------------------------------------------


class Tool:
    name: str

    def prepare(self, base: Path) -> None:
        """A fresh, empty repository in `base`."""
        raise NotImplementedError

    def backup(self, images: Path) -> Run:
        raise NotImplementedError

    def restore(self, target: Path) -> Run:
        raise NotImplementedError

    def stored(self) -> int:
        raise NotImplementedError


class Ours(Tool):
    def __init__(self, block_size: int, inventory: Path, s3: dict[str, str] | None) -> None:
        self.block_size, self.inventory, self.s3 = block_size, inventory, s3
        self.name = f"ours {size_label(block_size)}"
        self.backupctl = str(Path(sys.executable).with_name("backupctl"))

    def prepare(self, base: Path) -> None:
        self.data = base / f"ours-{self.block_size}"
        self.env = product_env(self.data, self.inventory)
        self.env["BACKUP_BLOCK_SIZE"] = str(self.block_size)
        self.env["BACKUP_FABRIC_IMAGE_ROOTS"] = str(self.inventory.parent)
        if self.s3 is not None:
            self.bucket = f"ours-{self.block_size}-{os.urandom(3).hex()}"
            self.env.update(s3_settings(self.s3, self.bucket))
            make_s3_bucket(self.s3, self.bucket)
        self.restores = 0
        protect_in_new_vault(self.backupctl, self.env, VM)

    def backup(self, images: Path) -> Run:
        run, out = timed([self.backupctl, "backup-now", VM, "--vault", "bench", "--json"], self.env)
        job = json.loads(out)
        job = job[0] if isinstance(job, list) else job
        if job["status"] != "completed":
            raise SystemExit(f"ours: backup {job['status']}: {job.get('error_message')}")
        self.point = job["result"]["recovery_point_id"]
        run.job = job_seconds(job)
        return run

    def restore(self, target: Path) -> Run:
        self.restores += 1
        run, out = timed(
            [
                *(self.backupctl, "restore", self.point, "--target", f"restored{self.restores}"),
                *("--disks-to", str(target), "--json"),
            ],
            self.env,
        )
        job = json.loads(out)
        job = job[0] if isinstance(job, list) else job
        if job["status"] != "completed":
            raise SystemExit(f"ours: restore {job['status']}: {job.get('error_message')}")
        run.job = job_seconds(job)
        return run

    def stored(self) -> int:
        if self.s3 is not None:
            return s3_bytes(self.s3, self.bucket)
        return tree_bytes(self.data / "vaultstore")


class Restic(Tool):
    name = "restic"

    def __init__(self, s3: dict[str, str] | None) -> None:
        self.s3 = s3

    def prepare(self, base: Path) -> None:
        self.repo = base / "restic"
        self.env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(base / "restic-cache")}
        if self.s3 is not None:
            self.bucket = f"restic-{os.urandom(3).hex()}"
            make_s3_bucket(self.s3, self.bucket)
            self.env.update(
                RESTIC_REPOSITORY=f"s3:{self.s3['endpoint']}/{self.bucket}",
                AWS_ACCESS_KEY_ID=self.s3["access_key"],
                AWS_SECRET_ACCESS_KEY=self.s3["secret_key"],
            )
        else:
            self.env["RESTIC_REPOSITORY"] = str(self.repo)
        subprocess.run(["restic", "init", "--quiet"], env=self.env, check=True, capture_output=True)

    def backup(self, images: Path) -> Run:
        return timed(["restic", "backup", "--quiet", str(images)], self.env)[0]

    def restore(self, target: Path) -> Run:
        run = timed(["restic", "restore", "latest", "--target", str(target), "--quiet"], self.env)[0]
        run.sync = synced()
        return run

    def stored(self) -> int:
        return s3_bytes(self.s3, self.bucket) if self.s3 is not None else tree_bytes(self.repo)


class Borg(Tool):
    name = "borg"

    def prepare(self, base: Path) -> None:
        self.repo = base / "borg"
        self.env = {
            **os.environ,
            "BORG_REPO": str(self.repo),
            "BORG_PASSPHRASE": "bench",
            "BORG_BASE_DIR": str(base / "borg-home"),
        }
        self.archives = 0
        subprocess.run(["borg", "init", "--encryption=repokey"], env=self.env, check=True, capture_output=True)

    def backup(self, images: Path) -> Run:
        self.archives += 1
        return timed(["borg", "create", "--compression", "lz4", f"::a{self.archives}", str(images)], self.env)[0]

    def restore(self, target: Path) -> Run:
        target.mkdir(parents=True, exist_ok=True)
        run = timed(["borg", "extract", f"::a{self.archives}"], self.env, cwd=target)[0]
        run.sync = synced()
        return run

    def stored(self) -> int:
        return tree_bytes(self.repo)


# -- S3 ----------------------------------------------------------------------------------------


def s3_settings(s3: dict[str, str], bucket: str) -> dict[str, str]:
    return {
        "BACKUP_S3_BUCKET": bucket,
        "BACKUP_S3_ENDPOINT": s3["endpoint"],
        "BACKUP_S3_ACCESS_KEY": s3["access_key"],
        "BACKUP_S3_SECRET_KEY": s3["secret_key"],
        "BACKUP_S3_REGION": "us-east-1",
    }


def make_s3_bucket(s3: dict[str, str], bucket: str) -> None:
    from tests.seaweed import S3Server, make_bucket

    make_bucket(S3Server(s3["endpoint"], s3["access_key"], s3["secret_key"], s3["filer"]), bucket)


def s3_bytes(s3: dict[str, str], bucket: str) -> int:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=s3["endpoint"],
        access_key_id=s3["access_key"],
        secret_access_key=s3["secret_key"],
        region="us-east-1",
        client_options={"allow_http": True},
    )
    return sum(meta["size"] for batch in obstore.list(store) for meta in batch)


# -- the run -----------------------------------------------------------------------------------


def job_seconds(job: dict[str, str]) -> float:
    started, ended = (datetime.fromisoformat(job[k].replace("Z", "+00:00")) for k in ("started_at", "ended_at"))
    return (ended - started).total_seconds()


def size_label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = {"K": 1024, "M": MIB}.get(text[-1:], 1)
    return int(text.rstrip("KM")) * unit


def rotated(items: list[Tool], by: int) -> Iterator[Tool]:
    for i in range(len(items)):
        yield items[(i + by) % len(items)]


def repetition(
    number: int, tools: list[Tool], base: Path, total: int, rows: dict[tuple[str, str], Row], limits: list[Limits]
) -> int:
    """One repetition; the number of non-zero bytes of the data set."""
    rep = base / f"rep{number}"
    rep.mkdir()
    images = base / "fabric" / "images"  # where the inventory says the VM's disks are
    paths, nonzero = generate(images, total)
    os.sync()  # no tool pays for writing back the generated data
    limits.append(measure_limits(paths, nonzero, rep))
    print(f"repetition {number}: limits {limits[-1]}")
    for tool in tools:
        tool.prepare(rep)

    def step(name: str, action: Callable[[Tool], Run], growth: bool = False) -> None:
        for tool in rotated(tools, number):
            before = tool.stored() if growth else 0
            run = action(tool)
            row = rows.setdefault((tool.name, name), Row(tool.name, name))
            row.runs.append(run)
            if growth:
                row.growth.append(tool.stored() - before)
            print(f"  {name:<8} {tool.name:<12} {run.seconds:7.2f} s (+sync {run.sync:.2f}, job {run.job:.2f})")

    step("initial", lambda t: t.backup(images), growth=True)
    scatter(paths)
    os.sync()
    step("change", lambda t: t.backup(images), growth=True)

    def restore(tool: Tool) -> Run:
        target = rep / f"restore-{tool.name.replace(' ', '-')}"
        run = tool.restore(target)
        same_content(target, paths)
        shutil.rmtree(target)
        return run

    step("restore", restore)
    shutil.rmtree(rep)
    return nonzero


def median_range(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def report(rows: dict[tuple[str, str], Row], tools: list[Tool], limits: list[Limits], nonzero: int) -> None:
    ours = [t.name for t in tools if isinstance(t, Ours)]
    peers = [t.name for t in tools if not isinstance(t, Ours)]
    print("\nmedian (range) over repetitions; ratio = peer seconds / ours (restores: peer + its sync)")
    for name in ("initial", "change", "restore"):
        print(f"\n{name}:")
        print(f"  {'tool':<12} {'seconds':>22} {'job s':>20} {'peak MiB':>14} {'growth MiB':>20}", end="")
        print("".join(f" {'vs ' + p:>22}" for p in peers), f"{'ours/limit':>22}")
        for tool in ours + peers:
            row = rows[(tool, name)]
            seconds = [r.seconds + r.sync for r in row.runs]
            jobs = median_range([r.job for r in row.runs]) if tool in ours else "-"
            print(
                f"  {tool:<12} {median_range(seconds):>22} {jobs:>20} "
                f"{median_range([r.peak / MIB for r in row.runs], '{:.0f}'):>14}",
                end="",
            )
            print(f" {median_range([g / MIB for g in row.growth], '{:.0f}'):>20}", end="")
            if tool in ours:
                for peer in peers:
                    theirs = [r.seconds + r.sync for r in rows[(peer, name)].runs]
                    print(f" {median_range([t / s for t, s in zip(theirs, seconds, strict=True)]):>22}", end="")
                if name == "restore":
                    bound = [lim.restore(nonzero) for lim in limits]
                else:
                    bound = [lim.backup(g) for lim, g in zip(limits, row.growth, strict=True)]
                print(f" {median_range([s / b for s, b in zip(seconds, bound, strict=True)]):>22}")
            else:
                print()
    print(
        "\nlimits: read "
        + median_range([lim.read for lim in limits])
        + " s, SHA-256 on every core "
        + median_range([lim.hash for lim in limits])
        + " s, durable write "
        + median_range([lim.write_rate / MIB for lim in limits], "{:.0f}")
        + " MiB/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--block-sizes",
        default="256K",
        help="ours' BACKUP_BLOCK_SIZE values, comma-separated (give 1M with --s3: the S3 default)",
    )
    parser.add_argument("--peers", default="restic,borg")
    parser.add_argument("--s3", action="store_true", help="repositories on a SeaweedFS S3 server (ours and restic)")
    workdir.add_options(parser)
    options = parser.parse_args()
    total = int(options.gib * 1024 * MIB)
    with workdir.work_dir("backup-bench-", options) as base, ExitStack() as stack:
        s3 = None
        if options.s3:
            from tests.seaweed import seaweedfs

            server = stack.enter_context(seaweedfs(base))
            s3 = {"endpoint": server.endpoint, "access_key": server.access_key, "secret_key": server.secret_key}
            s3["filer"] = server.filer
        inventory = write_inventory(base, total)
        tools: list[Tool] = [Ours(parse_size(s), inventory, s3) for s in options.block_sizes.split(",")]
        for peer in filter(None, options.peers.split(",")):
            if shutil.which(peer) is None:
                raise SystemExit(
                    f"{peer} is not installed (Debian: apt-get install {peer}backup)".replace("resticbackup", "restic")
                )
            if peer == "borg" and s3 is not None:
                print("borg has no S3 backend: left out with --s3")
                continue
            tools.append(Restic(s3) if peer == "restic" else Borg())
        rows: dict[tuple[str, str], Row] = {}
        limits: list[Limits] = []
        nonzero = 0
        for number in range(options.reps):
            nonzero = repetition(number, tools, base, total, rows, limits)
        print(
            f"\ndata set: {DISKS} images, {total / MIB:.0f} MiB, {nonzero / MIB:.0f} MiB not zero; "
            f"{os.cpu_count()} cores"
        )
        report(rows, tools, limits, nonzero)


def write_inventory(base: Path, total: int) -> Path:
    """The fabric inventory naming the images (made anew by each repetition)."""
    import yaml

    from orchestrator.fabric.sample import vm_entry

    vm = vm_entry(VM, "japaneast")
    vm["disks"] = [
        {
            "name": f"disk{i}",
            "image": str(base / "fabric" / "images" / f"disk{i}.img"),
            "role": "os" if i == 0 else "data",
            "size_gb": 64,
        }
        for i in range(DISKS)
    ]
    path = base / "fabric" / "inventory.yaml"  # its directory is the deployment's: restores go elsewhere
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"subscriptions": [{"name": "default", "vms": [vm]}]}))
    return path


if __name__ == "__main__":
    main()
