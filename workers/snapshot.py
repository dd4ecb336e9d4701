"""Reading a VM's disks into the vault store: 4 MiB blocks, hashed, zero blocks skipped, new blocks
stored once. Progress is reported in bytes through a callback."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from workers.vaultstore import BLOCK_SIZE, ZERO_BLOCK, DiskManifest, VaultStore

Progress = Callable[[int, int], None]


@dataclass
class DiskSource:
    name: str
    path: Path


@dataclass
class TransferStats:
    logical_bytes: int = 0  # the disks' sizes
    stored_bytes: int = 0  # bytes this backup added to the vault store
    new_blocks: int = 0
    reused_blocks: int = 0
    zero_blocks: int = 0


def _digest(block: bytes) -> str | None:
    if block == (ZERO_BLOCK if len(block) == BLOCK_SIZE else bytes(len(block))):
        return None
    return hashlib.sha256(block).hexdigest()


def transfer_disks(
    store: VaultStore, disks: list[DiskSource], progress: Progress | None = None, threads: int = 2
) -> tuple[list[DiskManifest], TransferStats]:
    """Copy the disks' blocks the store does not have yet; returns their manifests."""
    stats = TransferStats()
    total = sum(d.path.stat().st_size for d in disks)
    done = 0
    manifests = []
    with ThreadPoolExecutor(threads) as pool:
        for disk in disks:
            size = disk.path.stat().st_size
            blocks: list[str | None] = []
            with disk.path.open("rb", buffering=0) as f:
                while True:
                    chunk = [f.read(BLOCK_SIZE) for _ in range(threads * 4)]
                    chunk = [c for c in chunk if c]
                    if not chunk:
                        break
                    # hashlib releases the GIL on large buffers: hash blocks in parallel.
                    for data, digest in zip(chunk, pool.map(_digest, chunk)):
                        blocks.append(digest)
                        _store(store, digest, data, stats)
                    done += sum(len(c) for c in chunk)
                    if progress:
                        progress(done, total)
            stats.logical_bytes += size
            manifests.append(DiskManifest(name=disk.name, size=size, blocks=blocks))
    return manifests, stats


def _store(store: VaultStore, digest: str | None, data: bytes, stats: TransferStats) -> None:
    if digest is None:
        stats.zero_blocks += 1
    elif store.put_block(digest, data):
        stats.new_blocks += 1
        stats.stored_bytes += len(data)
    else:
        stats.reused_blocks += 1
