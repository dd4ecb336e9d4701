"""The vault store: backup data as content-addressed blocks plus one manifest per recovery point.

Disks are cut into blocks (of BACKUP_BLOCK_SIZE, recorded per disk in the manifest); a block is
stored once under its name, a keyed hash of its content, compressed and sealed under the vault's
data key (workers/vaultcrypto.py); zero blocks are not stored at all. A recovery point's manifest,
sealed too, lists each disk's blocks and is written last (complete, synced, then linked into
place), so a recovery point is either wholly there or not at all.

Every file is written through `orchestrator.safefs` (0600, in 0700 directories, never through a link,
never over an existing file). A block is written whole under a temporary name and linked into place:
of two backups storing the same new block at once exactly one link succeeds, and only that backup
counts the block as stored by it. The vault's usage record (workers/vaultusage.py) changes with every
link and removal, under its own lock.

Concurrency with the collector, on any host: a backup holds a lease on the vault's block ledger
until its manifest is committed (`lease`, a `workers.collection.BackupLease`), and counts on no
block a marked collection may sweep without rescuing it first (workers/collection.py). A backup that fails leaves
the blocks it stored to the next collection (its retry reuses them).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from orchestrator import safefs
from orchestrator.config import DIRECTORY_BLOCK_SIZE, S3Location
from orchestrator.errors import OrchestratorError
from workers import vaultcheck, vaultusage
from workers.manifests import DiskManifest, Manifest, digest_named
from workers.objects import LocalObjects, Objects, S3Objects, Writeback
from workers.objects import sync_filesystem as _syncfs
from workers.vaultcrypto import Block, VaultCipher, VaultKeys

if TYPE_CHECKING:
    from workers.collection import BackupLease

BLOCK_SIZE = DIRECTORY_BLOCK_SIZE  # what disks are cut into unless BACKUP_BLOCK_SIZE says otherwise
TEMPORARY = safefs.TEMPORARY  # a file being written (a block, a manifest): never counted, removed by collection
log = logging.getLogger(__name__)


FLUSH_EVERY = 256 * 1024 * 1024


class VaultStore:
    """A vault's store on `objects` (default: the directory `root` itself, which then also holds the
    usage record). With objects elsewhere (S3) nothing is kept in `root` (its name is the vault's
    id), and usage is measured (`usage_report`)."""

    def __init__(self, root: Path, kek: bytes, objects: Objects | None = None) -> None:
        self.root = root
        self.objects: Objects = objects or LocalObjects(root)
        self.keys = VaultKeys(self.objects, kek, root.name)  # the vault's data key, under `kek`
        self.local = isinstance(self.objects, LocalObjects)
        self.blocks = root / "blocks"
        self.manifests = root / "manifests"
        # Blocks written back while a backup goes on (every FLUSH_EVERY bytes stored); the sync before
        # the manifest then has little left to do, and an error a writeback met fails the commit.
        self._writeback = Writeback(lambda: _syncfs(self.blocks), FLUSH_EVERY)
        # The directory store's maker of its directories (0700, made once): only a directory store has any.
        self._here = self.objects if isinstance(self.objects, LocalObjects) else LocalObjects(root)
        self.lease: BackupLease | None = None  # the running backup's, while it holds it

    def block_path(self, digest: str) -> Path:
        return self.blocks / digest[:2] / digest

    def has_block(self, digest: str) -> bool:
        return self.objects.exists(_block_name(digest))

    def block_name(self, data: Block) -> str:
        """The name a block with this content has in this vault (a keyed hash: workers/vaultcrypto.py)."""
        return self._cipher().name(data)

    def put_block(self, digest: str, data: Block) -> int:
        """Store a block (`digest`: its `block_name`), compressed and sealed, unless it is there
        already; the bytes this call stored (0: there already, or stored by another of those storing
        the same block at once). `VaultStoreFull` when there is no room. A block that a marked
        collection may sweep is rescued first (or, once its sweep has started, stored after the
        sweep's end)."""
        if self.lease is not None and not self.lease.counting_on([digest]):
            self.lease.after_sweep()
        if not self.local:
            if self.objects.exists(_block_name(digest)):
                return 0
            sealed = self._cipher().seal_block(digest, data)
            return len(sealed) if self.objects.create(_block_name(digest), sealed) else 0
        path = self.block_path(digest)
        if os.path.lexists(path):
            return 0
        sealed = self._cipher().seal_block(digest, data)
        try:
            placed = self._place(path, digest, sealed)
        except OSError as exc:
            raise self._full(exc, f"block {digest}") from None
        if not placed:
            return 0
        self._writeback.wrote(len(sealed))
        return len(sealed)

    def _place(self, path: Path, digest: str, data: bytes) -> bool:
        """Write the block whole under a temporary name (made durable with the manifest, by one
        syncfs), then link it into place and count it, under the usage record's lock."""
        with self._here.staged(path, data) as staged, self._usage() as usage:
            if os.path.lexists(path):
                return False
            usage.begin(len(data), digest)
            try:
                os.link(staged, path, follow_symlinks=False)
            except FileExistsError:  # linked by a writer that does not take the lock (an older version)
                return False
            finally:
                usage.settle()
            return True

    def get_block(self, digest: str) -> bytes:
        """The block's content, authenticated and checked against its name (`ObjectMissing` when it
        is not there, ValueError when it is not the block of that name, unchanged)."""
        sealed = self.objects.read(_block_name(digest))
        return self._cipher(reading=_block_name(digest)).open_block(digest, sealed)

    def _cipher(self, reading: str = "") -> VaultCipher:
        """The vault's cipher; made with its data key on the first write. Reading `reading` from a
        vault without a data key: ValueError (the object was not written by this store)."""
        cipher = self.keys.cipher(create=not reading)
        if cipher is None:
            raise ValueError(f"{reading} is not sealed under this vault's data key (the vault has none)")
        return cipher

    def manifest_path(self, recovery_point_id: str) -> Path:
        return self.manifests / f"{recovery_point_id}.json"

    def commit_manifest(self, manifest: Manifest) -> tuple[Manifest, str]:
        """Make every block durable, then write the manifest last and atomically, unless one is there
        already: two deliveries of one backup (a retry, and a work horse RQ gave up on that still runs)
        must not replace each other's manifest once it may be recorded. Returns the manifest in place
        and the SHA-256 of its stored (sealed) bytes. `VaultStoreFull` when there is no room."""
        data = self._cipher().seal_manifest(manifest.recovery_point_id, manifest.model_dump_json().encode())
        if not self.local:
            placed = self.objects.create(_manifest_name(manifest.recovery_point_id), data)
            return self._committed(manifest, data, placed)
        self._writeback.wait()  # a writeback under way ends first; the error one met fails the commit
        if self.blocks.exists():
            _syncfs(self.blocks)
        path = self.manifest_path(manifest.recovery_point_id)
        try:
            self._directory(self.manifests)
            placed = safefs.write_new(path, data)
        except OSError as exc:
            raise self._full(exc, f"the manifest of recovery point {manifest.recovery_point_id}") from None
        return self._committed(manifest, data, placed)

    def counting_on(self, digests: list[str]) -> bool:
        """Whether the running backup may count on these stored blocks (rescued now if a marked
        collection may sweep them); False once that collection's sweep has started."""
        return self.lease is None or self.lease.counting_on(digests)

    def _committed(self, manifest: Manifest, data: bytes, placed: bool) -> tuple[Manifest, str]:
        if placed:
            return manifest, hashlib.sha256(data).hexdigest()
        return self.read_manifest(manifest.recovery_point_id), self.manifest_digest(manifest.recovery_point_id)

    def has_manifest(self, recovery_point_id: str) -> bool:
        return self.objects.exists(_manifest_name(recovery_point_id))

    def manifest_digest(self, recovery_point_id: str) -> str:
        return hashlib.sha256(self.objects.read(_manifest_name(recovery_point_id))).hexdigest()

    def read_manifest(self, recovery_point_id: str, expected_digest: str | None = None) -> Manifest:
        sealed = self.objects.read(_manifest_name(recovery_point_id))
        if expected_digest and hashlib.sha256(sealed).hexdigest() != expected_digest:
            raise ValueError(f"manifest of {recovery_point_id} does not match its recorded digest")
        return Manifest.model_validate_json(self._open_manifest(recovery_point_id, sealed))

    def _open_manifest(self, recovery_point_id: str, sealed: bytes) -> bytes:
        cipher = self._cipher(reading=_manifest_name(recovery_point_id))
        return cipher.open_manifest(recovery_point_id, sealed)

    def manifest_ids(self) -> list[str]:
        names = (name.removeprefix("manifests/") for name in self.objects.sizes("manifests"))
        return sorted(name.removesuffix(".json") for name in names if name.endswith(".json") and "/" not in name)

    def read_manifest_bytes(self, recovery_point_id: str) -> bytes:
        """The manifest's JSON, opened (ValueError when it does not authenticate)."""
        return self._open_manifest(recovery_point_id, self.objects.read(_manifest_name(recovery_point_id)))

    def recovery_point_ids(self) -> list[UUID]:
        """The recovery points whose manifests are here (every manifest named by one)."""
        return [UUID(name) for name in self.manifest_ids() if _is_uuid(name)]

    def job_of(self, recovery_point_id: str) -> UUID | None:
        """The backup job a manifest says it is from; None when it cannot be read or says nothing."""
        try:
            return UUID(self.read_manifest(recovery_point_id).job_id)
        except (OSError, ValueError, LookupError):  # pydantic's ValidationError is a ValueError
            return None

    def delete_manifest(self, recovery_point_id: str) -> bool:
        return self.objects.delete(_manifest_name(recovery_point_id)) > 0

    def remove_block(self, digest: str) -> int:
        """Remove a block and uncount it; the bytes it held. Only by collection's sweep."""
        if not self.local:
            return self.objects.delete(_block_name(digest))
        path = self.block_path(digest)
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            return 0
        with self._usage() as usage:
            usage.begin(-size, digest)
            try:
                path.unlink()
            finally:
                usage.settle()
        return size

    def remeasure(self) -> None:
        """Set the usage record to the block files' measured size (under its lock, which every link
        and removal takes)."""
        if not self.local:
            return  # measured at every report
        with self._usage() as usage:
            usage.measured(self.stored_bytes())

    def stored_bytes(self) -> int:
        """The block files' sizes, measured (temporary files are not blocks)."""
        return sum(self.block_files().values())

    def usage_report(self) -> dict[str, Any] | None:
        """The usage record as job results carry it: vault id, sequence, bytes of block files (None
        when it cannot be read or made: the next report will say). On object storage, measured: the
        sequence is when the listing began, so a later report never says less than it saw."""
        if not self.local:
            began = time.time_ns()
            try:
                return {"vault_id": self.root.name, "sequence": began, "bytes": self.stored_bytes()}
            except OrchestratorError:
                log.exception("the usage of %s could not be measured", self.objects.where)
                return None
        try:
            with self._usage() as usage:
                return {"vault_id": self.root.name, "sequence": usage.sequence, "bytes": usage.bytes}
        except OSError:
            log.exception("the usage record of %s could not be read", self.root)
            return None

    def block_files(self) -> dict[str, int]:
        """Every block file's size, by digest."""
        found: dict[str, int] = {}
        for name, size in self.objects.sizes("blocks").items():
            parts = name.split("/")
            if len(parts) == 3 and digest_named(parts[2]):
                found[parts[2]] = size
        return found

    def temporary_files(self) -> dict[Path, int]:
        """Every temporary file's size, by path: blocks and manifests being written, or left by a
        writer that was killed. Object storage has none (a PUT is whole or nothing)."""
        found: dict[Path, int] = {}
        if not self.local:
            return found
        for directory in [*_subdirectories(self.blocks), self.manifests]:
            for entry in _entries(directory):
                if entry.name.startswith(TEMPORARY):
                    found[Path(entry.path)] = entry.stat(follow_symlinks=False).st_size
        return found

    @contextmanager
    def _usage(self) -> Iterator[vaultusage.UsageRecord]:
        self._directory(self.root)
        with vaultusage.locked(self.root / "usage", self.has_block, self.stored_bytes) as usage:
            yield usage

    def _directory(self, path: Path) -> Path:
        return self._here.directory(path)

    def _full(self, exc: OSError, what: str) -> Exception:
        """A full vault store (or quota) as the coded error a job fails with at once; anything else as is."""
        if not safefs.is_full(exc):
            return exc
        return OrchestratorError(
            "VaultStoreFull",
            (
                f"the vault store is full ({os.strerror(exc.errno or 0)}) writing {what} under {self.root}: "
                "free space on BACKUP_VAULT_STORE (or raise its quota), then back up again; the job is not retried, "
                "since a retry cannot succeed until then"
            ),
        )

    def check(self) -> dict[str, Any]:
        """The store's integrity report (workers/vaultcheck.py). Changes nothing."""
        return vaultcheck.check(self)


def open_vault_store(root: Path, s3: S3Location | None, vault_id: UUID, kek: bytes) -> VaultStore:
    """The vault's store: the directory `root/<vault id>`, or its objects on S3, its data key opened
    with `kek` now (`VaultKeyWrong` before anything is read or written, when it does not open)."""
    store = VaultStore(root / str(vault_id), kek, None if s3 is None else S3Objects.at(s3, str(vault_id)))
    store.keys.cipher(create=False)
    return store


def _block_name(digest: str) -> str:
    return f"blocks/{digest[:2]}/{digest}"


def _manifest_name(recovery_point_id: str) -> str:
    return f"manifests/{recovery_point_id}.json"


def _subdirectories(path: Path) -> list[Path]:
    return [Path(e.path) for e in _entries(path) if e.is_dir(follow_symlinks=False)]


def _entries(path: Path) -> list[os.DirEntry[str]]:
    with suppress(FileNotFoundError), os.scandir(path) as entries:
        return list(entries)
    return []


def _is_uuid(name: str) -> bool:
    try:
        return str(UUID(name)) == name
    except ValueError:
        return False


__all__ = [
    "BLOCK_SIZE",
    "DiskManifest",
    "Manifest",
    "VaultStore",
]  # the manifests' format lives in workers/manifests.py
