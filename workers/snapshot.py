"""Reading a VM's disks into the vault store: blocks of BACKUP_BLOCK_SIZE, hashed, zero blocks
skipped, new blocks stored once. Progress is reported in bytes through a callback.

Reading, naming, sealing and storing run on a thread pool, a run of consecutive blocks per task
(preadv, HMAC, zstd, AES-GCM and file writes release the GIL); each thread reads into a buffer of
its own. Blocks are not fsynced one by one: the caller syncs the store's filesystem once, before it
commits the manifest.

A disk whose size, inode and modification time are those recorded in the VM's previous manifest
has not changed since (the local fabric's changed-block tracking, as restic does for files): its
block list is reused without reading it.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from workers.vaultcrypto import Block
from workers.vaultstore import BLOCK_SIZE, DiskManifest, VaultStore

Progress = Callable[[int, int], None]
RUN = 4 * 1024 * 1024  # bytes of blocks a pool thread reads, hashes and stores as one task
LOCAL_THREADS, S3_THREADS = 2, 8  # the pool's threads for a directory store and for an S3 store


@dataclass
class DiskSource:
    """A disk to read: its name and its image, already opened (and checked as opened) by the fabric."""

    name: str
    image: BinaryIO


@dataclass
class TransferStats:
    logical_bytes: int = 0  # the disks' sizes
    stored_bytes: int = 0  # bytes this backup added to the vault store
    new_blocks: int = 0
    reused_blocks: int = 0
    zero_blocks: int = 0
    unchanged_disks: int = 0


def fingerprint(image: BinaryIO) -> str:
    """What says an image file has not changed; "" for a block device, whose times say nothing of its
    content (it is always read)."""
    st = os.fstat(image.fileno())
    if stat.S_ISBLK(st.st_mode):
        return ""
    return f"{st.st_size}:{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}"


def size_of(image: BinaryIO) -> int:
    size = image.seek(0, os.SEEK_END)
    image.seek(0)
    return size


def transfer_disks(
    store: VaultStore,
    disks: list[DiskSource],
    progress: Progress | None = None,
    threads: int | None = None,
    previous: dict[str, DiskManifest] | None = None,
    block_size: int = BLOCK_SIZE,
) -> tuple[list[DiskManifest], TransferStats]:
    """Copy the disks' blocks the store does not have yet, cut into `block_size` blocks; returns
    their manifests. `previous`: the disks of the VM's last recovery point, by name, for the
    unchanged-disk check (an unchanged disk keeps the block size it was read with)."""
    stats = TransferStats()
    total = sum(size_of(d.image) for d in disks)
    done = 0
    manifests = []
    # A directory store's work is the CPU's (two threads keep two cores busy); an S3 store's waits
    # on the network, so more of its PUTs are kept in flight.
    threads = threads or (LOCAL_THREADS if store.local else S3_THREADS)
    with ThreadPoolExecutor(threads) as pool:
        for disk in disks:
            mark = fingerprint(disk.image)
            before = (previous or {}).get(disk.name)
            if (
                before is not None
                and mark
                and before.fingerprint == mark
                # Rescued first, then looked for: a sweep under way cannot take one between the two.
                and store.counting_on([b for b in before.blocks if b])
                and all(map(store.has_block, filter(None, before.blocks)))
            ):
                manifest = before
                stats.unchanged_disks += 1
                stats.reused_blocks += sum(1 for b in before.blocks if b)
            else:
                manifest = _read_disk(store, disk, mark, pool, threads, stats, block_size)
            manifests.append(manifest)
            stats.logical_bytes += manifest.size
            done += manifest.size
            if progress:
                progress(done, total)
    return manifests, stats


def _read_disk(
    store: VaultStore,
    disk: DiskSource,
    mark: str,
    pool: ThreadPoolExecutor,
    threads: int,
    stats: TransferStats,
    block_size: int,
) -> DiskManifest:
    """The pool's threads read, hash and store runs of blocks (about RUN bytes each, at most 2 runs
    per thread in flight); this thread takes their results in block order."""
    fd = disk.image.fileno()
    size = size_of(disk.image)
    per_run = max(1, RUN // block_size)
    zeros = bytes(block_size)
    local = threading.local()  # each pool thread's buffer, reused for every block it reads
    blocks: list[str | None] = []
    read = 0
    inflight: deque[Future[list[tuple[str | None, int, int]]]] = deque()
    short = False  # a run ended before its last block: the disk ended there (later runs find nothing)

    def take() -> None:
        nonlocal read, short
        outcomes = inflight.popleft().result()
        if short:
            return
        for digest, stored, length in outcomes:
            blocks.append(_count(digest, stored, stats))
            read += length
        short = len(outcomes) < per_run or (bool(outcomes) and outcomes[-1][2] < block_size)

    for first in range(0, -(-size // block_size), per_run):
        inflight.append(pool.submit(_store_run, store, fd, first, per_run, block_size, zeros, local))
        if len(inflight) >= threads * 2:
            take()
    while inflight:
        take()
    return DiskManifest(name=disk.name, size=read, blocks=blocks, fingerprint=mark, block_size=block_size)


def _store_run(
    store: VaultStore, fd: int, first: int, count: int, block_size: int, zeros: bytes, local: threading.local
) -> list[tuple[str | None, int, int]]:
    """Blocks `first` to `first + count` (fewer at the end of the disk) read into this thread's
    buffer (a new allocation per block costs more in page faults than the read itself): each
    one's digest, the bytes storing it added and its length."""
    buffer = getattr(local, "buffer", None)
    if buffer is None:
        buffer = local.buffer = bytearray(block_size)
    outcomes = []
    for index in range(first, first + count):
        length = _read_into(fd, buffer, index * block_size)
        if not length:
            break
        block = memoryview(buffer)[:length] if length < block_size else buffer
        outcomes.append((*_store(store, block, zeros), length))
        if length < block_size:
            break
    return outcomes


def _read_into(fd: int, buffer: bytearray, offset: int) -> int:
    """Fill `buffer` from the image open at `fd`, from `offset` (a short read goes on); how much
    was read (0 at the end)."""
    view, got = memoryview(buffer), 0
    while got < len(buffer) and (n := os.preadv(fd, [view[got:]], offset + got)):
        got += n
    return got


def _count(digest: str | None, stored: int, stats: TransferStats) -> str | None:
    if digest is None:
        stats.zero_blocks += 1
    elif stored:
        stats.new_blocks += 1
        stats.stored_bytes += stored
    else:
        stats.reused_blocks += 1
    return digest


def _store(store: VaultStore, block: Block, zeros: bytes) -> tuple[str | None, int]:
    """The block's digest (None for zeros) and how many bytes storing it added."""
    if block == (zeros if len(block) == len(zeros) else bytes(len(block))):
        return None, 0
    digest = store.block_name(block)
    return digest, store.put_block(digest, block)
