"""Reading a VM's captured disks into the vault store: blocks of BACKUP_BLOCK_SIZE, hashed, zero
blocks skipped, new blocks stored once. Progress is reported in bytes through a callback.

Reading, naming, sealing and storing run on a thread pool, a run of consecutive blocks per task
(reads, HMAC, zstd, AES-GCM and file writes release the GIL); each thread reads into a buffer of
its own. Blocks are not fsynced one by one: the caller syncs the store's filesystem once, before it
commits the manifest.

What is read of a disk, given the disks of the VM's previous recovery point:
- a disk whose fingerprint is that recorded in the previous manifest (the local fabric's image
  files: size, inode and modification time, as restic does for files) is not read at all;
- a disk whose fabric tracks changed blocks (the QEMU fabric's dirty bitmaps) has only the blocks its
  changed ranges touch read; the others are the previous manifest's;
- any other disk is read whole.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from orchestrator.fabric import CapturedDisk
from workers.vaultcrypto import Block
from workers.vaultstore import BLOCK_SIZE, DiskManifest, VaultStore

Progress = Callable[[int, int], None]
RUN = 4 * 1024 * 1024  # bytes of blocks a pool thread reads, hashes and stores as one task
LOCAL_THREADS, S3_THREADS = 2, 8  # the pool's threads for a directory store and for an S3 store


@dataclass
class TransferStats:
    logical_bytes: int = 0  # the disks' sizes
    stored_bytes: int = 0  # bytes this backup added to the vault store
    new_blocks: int = 0
    reused_blocks: int = 0
    zero_blocks: int = 0
    unchanged_disks: int = 0
    read_bytes: int = 0  # bytes read from the disks
    tracking: dict[str, str] = field(default_factory=dict)  # per disk: how it was read, in words


def transfer_disks(
    store: VaultStore,
    disks: list[CapturedDisk],
    progress: Progress | None = None,
    threads: int | None = None,
    previous: dict[str, DiskManifest] | None = None,
    block_size: int = BLOCK_SIZE,
) -> tuple[list[DiskManifest], TransferStats]:
    """Copy the disks' blocks the store does not have yet, cut into `block_size` blocks; returns
    their manifests. `previous`: the disks of the VM's last recovery point, by name (an unchanged
    disk keeps the block size it was read with; a tracked disk is read incrementally only when its
    previous manifest has this size and block size)."""
    stats = TransferStats()
    total = sum(d.size for d in disks)
    done = 0
    manifests = []
    # A directory store's work is the CPU's (two threads keep two cores busy); an S3 store's waits
    # on the network, so more of its PUTs are kept in flight.
    threads = threads or (LOCAL_THREADS if store.local else S3_THREADS)
    with ThreadPoolExecutor(threads) as pool:
        for disk in disks:
            before = (previous or {}).get(disk.name)
            unchanged = before is not None and disk.fingerprint and before.fingerprint == disk.fingerprint
            if unchanged and before is not None and _kept(store, before):
                manifest = before
                stats.unchanged_disks += 1
                stats.reused_blocks += sum(1 for b in before.blocks if b)
                stats.tracking[disk.name] = "unchanged since the previous point"
            elif (
                before is not None
                and disk.changed is not None
                and _incremental(before, disk, block_size)
                and _kept(store, before)
            ):
                touched = _touched(disk.changed, block_size, len(before.blocks))
                manifest = _read_disk(store, disk, pool, threads, stats, block_size, touched, before.blocks)
                stats.reused_blocks += sum(1 for i, b in enumerate(before.blocks) if b and i not in touched)
                stats.tracking[disk.name] = disk.tracking
            else:
                manifest = _read_disk(store, disk, pool, threads, stats, block_size)
                stats.tracking[disk.name] = _full_read_reason(disk, before, block_size)
            manifests.append(manifest)
            stats.logical_bytes += manifest.size
            done += manifest.size
            if progress:
                progress(done, total)
    return manifests, stats


def _kept(store: VaultStore, before: DiskManifest) -> bool:
    """Whether the previous manifest's blocks are all still stored, now counted on by this backup
    (rescued first, then looked for: a sweep under way cannot take one between the two)."""
    return store.counting_on([b for b in before.blocks if b]) and all(map(store.has_block, filter(None, before.blocks)))


def _incremental(before: DiskManifest, disk: CapturedDisk, block_size: int) -> bool:
    return before.size == disk.size and before.block_size == block_size


def _full_read_reason(disk: CapturedDisk, before: DiskManifest | None, block_size: int) -> str:
    if disk.changed is None:
        return disk.tracking or "read whole"
    if before is None:
        return "read whole: the previous point has no such disk"
    if before.size != disk.size:
        return f"read whole: the disk's size changed ({before.size} -> {disk.size} bytes)"
    if before.block_size != block_size:
        return f"read whole: the block size changed ({before.block_size} -> {block_size} bytes)"
    return "read whole: blocks of the previous point are no longer stored"


def _touched(changed: list[tuple[int, int]], block_size: int, count: int) -> set[int]:
    """The indexes of the blocks the changed byte ranges touch."""
    touched: set[int] = set()
    for offset, length in changed:
        if length > 0:
            touched.update(range(offset // block_size, min(count, -(-(offset + length) // block_size))))
    return touched


def _runs(indexes: Iterator[int] | range, per_run: int) -> Iterator[tuple[int, int]]:
    """Consecutive indexes grouped into (first, count) runs of at most `per_run`."""
    first, count = -1, 0
    for index in indexes:
        if count and index == first + count and count < per_run:
            count += 1
            continue
        if count:
            yield first, count
        first, count = index, 1
    if count:
        yield first, count


def _read_disk(
    store: VaultStore,
    disk: CapturedDisk,
    pool: ThreadPoolExecutor,
    threads: int,
    stats: TransferStats,
    block_size: int,
    only: set[int] | None = None,
    template: list[str | None] | None = None,
) -> DiskManifest:
    """The pool's threads read, hash and store runs of blocks (about RUN bytes each, at most 2 runs
    per thread in flight); this thread takes their results in block order. `only`: the blocks to
    read, the others taken from `template` (the previous manifest's); None: every block."""
    per_run = max(1, RUN // block_size)
    zeros = bytes(block_size)
    local = threading.local()  # each pool thread's buffer, reused for every block it reads
    count = -(-disk.size // block_size)
    blocks: list[str | None] = list(template) if template is not None else []
    size = disk.size if template is not None else 0
    inflight: deque[tuple[int, Future[list[tuple[str | None, int, int]]]]] = deque()
    short = False  # a whole read's run ended before its last block: the disk ended there

    def take() -> None:
        nonlocal size, short
        first, future = inflight.popleft()
        outcomes = future.result()
        for offset, (digest, stored, length) in enumerate(outcomes):
            stats.read_bytes += length
            if template is not None:
                blocks[first + offset] = _count(digest, stored, stats)
            elif not short:
                blocks.append(_count(digest, stored, stats))
                size += length
        if template is None:
            short = short or len(outcomes) < per_run or (bool(outcomes) and outcomes[-1][2] < block_size)

    indexes = sorted(only) if only is not None else range(count)
    for first, run in _runs(iter(indexes), per_run):
        inflight.append((first, pool.submit(_store_run, store, disk, first, run, block_size, zeros, local)))
        if len(inflight) >= threads * 2:
            take()
    while inflight:
        take()
    return DiskManifest(name=disk.name, size=size, blocks=blocks, fingerprint=disk.fingerprint, block_size=block_size)


def _store_run(
    store: VaultStore,
    disk: CapturedDisk,
    first: int,
    count: int,
    block_size: int,
    zeros: bytes,
    local: threading.local,
) -> list[tuple[str | None, int, int]]:
    """Blocks `first` to `first + count` (fewer at the end of the disk) read into this thread's
    buffer (a new allocation per block costs more in page faults than the read itself): each
    one's digest, the bytes storing it added and its length."""
    buffer = getattr(local, "buffer", None)
    if buffer is None:
        buffer = local.buffer = bytearray(block_size)
    view = memoryview(buffer)
    outcomes = []
    for index in range(first, first + count):
        length = disk.reader.read_into(view, index * block_size)
        if not length:
            break
        block = view[:length] if length < block_size else buffer
        outcomes.append((*_store(store, block, zeros), length))
        if length < block_size:
            break
    return outcomes


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
