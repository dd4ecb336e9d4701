"""The vault store: backup data as content-addressed blocks plus one manifest per recovery point.

Disks are cut into 4 MiB blocks; a block is stored once under its SHA-256 (zero blocks are not
stored at all). A recovery point's manifest lists each disk's blocks and is written last, with a
write-fsync-rename, so a recovery point is either wholly there or not at all.

Concurrency with the collector: a backup holds a shared lock on the vault's `gc.lock` for its whole
run and the collector an exclusive one, so the collector never removes a block that a running
backup has written or is counting on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.domain.values import EncryptionKeys

BLOCK_SIZE = 4 * 1024 * 1024
ZERO_BLOCK = bytes(BLOCK_SIZE)


class DiskManifest(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    size: int
    blocks: list[str | None]  # None: a zero block, not stored
    fingerprint: str = ""  # size, device, inode and mtime of the image read (see snapshot.py)

    @property
    def digest(self) -> str:
        """A digest of the disk's content, from its block hashes (zero blocks included)."""
        h = hashlib.sha256(str(self.size).encode())
        for block in self.blocks:
            h.update((block or "0").encode())
        return h.hexdigest()


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)
    recovery_point_id: str
    job_id: str
    vm_key: str
    vm_spec: dict[str, Any]  # the VM as it was, so a restore does not depend on the source VM
    taken_at: str
    consistency: str
    logical_bytes: int
    stored_bytes: int
    disks: list[DiskManifest]
    encryption: EncryptionKeys | None = None  # an encrypted VM's key names
    sealed_keys: str | None = None  # its BEK (and KEK), encrypted under BACKUP_KEY_PROTECTION_KEY (workers/keys.py)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding `path` (all blocks written so far) to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC is not None and _LIBC.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


FLUSH_EVERY = 256 * 1024 * 1024


class VaultStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blocks = root / "blocks"
        self.manifests = root / "manifests"
        self._unflushed = 0
        self._flushing = threading.Lock()

    def block_path(self, digest: str) -> Path:
        return self.blocks / digest[:2] / digest

    def has_block(self, digest: str) -> bool:
        return self.block_path(digest).exists()

    def put_block(self, digest: str, data: bytes) -> bool:
        """Store a block unless it is there already; True when this call stored it."""
        path = self.block_path(digest)
        if path.exists():
            return False
        _write_atomically(path, data, durable=False)  # made durable together by commit_manifest
        self._unflushed += len(data)
        if self._unflushed >= FLUSH_EVERY and self._flushing.acquire(blocking=False):
            # Start writing back what is there so far, while hashing goes on; the sync before the
            # manifest then has little left to do.
            self._unflushed = 0
            threading.Thread(target=self._flush_in_background, daemon=True).start()
        return True

    def _flush_in_background(self) -> None:
        try:
            _syncfs(self.blocks)
        finally:
            self._flushing.release()

    def get_block(self, digest: str) -> bytes:
        data = self.block_path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"block {digest} is corrupt")
        return data

    def manifest_path(self, recovery_point_id: str) -> Path:
        return self.manifests / f"{recovery_point_id}.json"

    def commit_manifest(self, manifest: Manifest) -> tuple[Manifest, str]:
        """Make every block durable, then write the manifest last and atomically, unless one is there
        already: two deliveries of one backup (a retry, and a work horse RQ gave up on that still runs)
        must not replace each other's manifest once it may be recorded. Returns the manifest in place
        and its SHA-256."""
        if self.blocks.exists():
            _syncfs(self.blocks)
        path = self.manifest_path(manifest.recovery_point_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = manifest.model_dump_json().encode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)  # fails if a manifest is there: the first one stays
            placed = True
        except FileExistsError:
            placed = False
        finally:
            Path(tmp).unlink(missing_ok=True)
        _fsync_dir(path.parent)
        if placed:
            return manifest, hashlib.sha256(data).hexdigest()
        return self.read_manifest(manifest.recovery_point_id), self.manifest_digest(manifest.recovery_point_id)

    def manifest_digest(self, recovery_point_id: str) -> str:
        return hashlib.sha256(self.manifest_path(recovery_point_id).read_bytes()).hexdigest()

    def read_manifest(self, recovery_point_id: str, expected_digest: str | None = None) -> Manifest:
        data = self.manifest_path(recovery_point_id).read_bytes()
        if expected_digest and hashlib.sha256(data).hexdigest() != expected_digest:
            raise ValueError(f"manifest of {recovery_point_id} does not match its recorded digest")
        return Manifest.model_validate_json(data)

    def manifest_ids(self) -> list[str]:
        return [p.stem for p in self.manifests.glob("*.json")] if self.manifests.exists() else []

    def delete_manifest(self, recovery_point_id: str) -> bool:
        path = self.manifest_path(recovery_point_id)
        if not path.exists():
            return False
        path.unlink()
        return True

    @contextmanager
    def backup_lease(self) -> Iterator[None]:
        with self._lock(fcntl.LOCK_SH):
            yield

    def collect_garbage(self) -> dict[str, Any]:
        """Remove blocks no manifest references. Skipped (not waited for) while backups run."""
        try:
            with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB):
                live: set[str] = set()
                for rp_id in self.manifest_ids():
                    for disk in self.read_manifest(rp_id).disks:
                        live.update(b for b in disk.blocks if b)
                removed = freed = 0
                for path in self.blocks.glob("*/*") if self.blocks.exists() else []:
                    if path.name.startswith(".tmp-") or path.name not in live:
                        freed += path.stat().st_size
                        path.unlink()
                        removed += 1
                return {"blocks_removed": removed, "bytes_freed": freed, "skipped": False}
        except BlockingIOError:
            return {"blocks_removed": 0, "bytes_freed": 0, "skipped": True}

    def stored_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.blocks.glob("*/*")) if self.blocks.exists() else 0

    @contextmanager
    def _lock(self, mode: int) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "gc.lock").open("a") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def check(self) -> dict[str, Any]:
        """Every manifest's blocks exist and hash right; orphans are reported."""
        missing, corrupt, live = [], [], set()
        for rp_id in self.manifest_ids():
            for disk in self.read_manifest(rp_id).disks:
                for digest in filter(None, disk.blocks):
                    live.add(digest)
                    if not self.has_block(digest):
                        missing.append({"recovery_point": rp_id, "block": digest})
                    else:
                        try:
                            self.get_block(digest)
                        except ValueError:
                            corrupt.append({"recovery_point": rp_id, "block": digest})
        orphans = [p.name for p in self.blocks.glob("*/*") if p.name not in live] if self.blocks.exists() else []
        return {"missing": missing, "corrupt": corrupt, "orphans": orphans,
                "clean": not missing and not corrupt}

