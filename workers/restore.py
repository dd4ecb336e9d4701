"""Rebuilding disks from a manifest, byte for byte, verifying every block as it is written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from workers.vaultstore import BLOCK_SIZE, DiskManifest, VaultStore


class RestoreVerificationError(Exception):
    pass


def verify_disk(path: Path, disk: DiskManifest) -> None:
    """Read the restored disk back and check every block against the manifest's hash."""
    if path.stat().st_size != disk.size:
        raise RestoreVerificationError(f"disk {disk.name}: size {path.stat().st_size} != {disk.size}")
    with path.open("rb", buffering=0) as f:
        for index, expected in enumerate(disk.blocks):
            data = f.read(BLOCK_SIZE)
            actual = None if data == bytes(len(data)) else hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise RestoreVerificationError(f"disk {disk.name}: block {index} does not match the manifest")


def restore_disk(store: VaultStore, disk: DiskManifest, target: Path) -> None:
    """Write the disk to `target` (via a temporary file, renamed when complete and verified)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".restoring-{target.name}")
    try:
        with tmp.open("wb") as f:
            f.truncate(disk.size)  # zero blocks stay holes: they read back as zeros
            for index, digest in enumerate(disk.blocks):
                if digest is None:
                    continue
                try:
                    data = store.get_block(digest)  # checks the hash against the manifest's
                except (OSError, ValueError) as exc:
                    raise RestoreVerificationError(f"disk {disk.name} block {index}: {exc}") from None
                f.seek(index * BLOCK_SIZE)
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if tmp.stat().st_size != disk.size:
            raise RestoreVerificationError(f"disk {disk.name}: size {tmp.stat().st_size} != {disk.size}")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
