"""The object store port: where a vault store keeps its objects (blocks, manifests), by name.

Two implementations: `LocalObjects`, a directory (the embedded default), and `S3Objects`,
S3-compatible object storage through obstore (chosen over boto3 by `bench/objects.py`: faster at 8
requests in flight, both ways). Names are relative paths of `/`-separated parts, each of letters,
digits, `.`, `_` and `-`, never `.` or `..` (`check_name`).

What every implementation promises:
- `create(name, data)` writes the whole object only if no object has that name, atomically: of two
  callers creating one name at once exactly one gets True; a reader never sees part of an object.
- `read`, `exists`, `delete` (the bytes it freed, 0 when there was none) and `sizes` (every object
  under a prefix, by name).
- `durable()` returns once every object created through this store object is on stable storage
  (a directory: one syncfs; S3: a PUT that succeeded is durable already).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from orchestrator import safefs
from orchestrator.config import S3Location
from orchestrator.errors import OrchestratorError

_NAME = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def sync_filesystem(path: Path) -> None:
    """Flush the filesystem holding `path` (every file written there so far) to stable storage;
    the OSError syncfs reports (a write-back error: the data may not be on disk). Where there is
    no syncfs, sync(2), which reports nothing."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC is None:
            os.sync()
        elif _LIBC.syncfs(fd) != 0:
            code = ctypes.get_errno()
            if code != errno.ENOSYS:
                raise OSError(code, f"syncfs: {os.strerror(code)}", str(path))
            os.sync()
    finally:
        os.close(fd)


class Writeback:
    """Written data sent to stable storage while more is written: every `every` bytes reported by
    `wrote` (from any thread), `flush` (an fsync, a syncfs) runs on a thread of its own, one at a
    time, so the disk writes overlap the work and the sync that ends it has little left. `wait` waits
    for the flush under way and raises the first error a flush met: the kernel reports a write-back
    error once, to the descriptor that asked, so the final sync would not see it again."""

    def __init__(self, flush: Callable[[], None], every: int) -> None:
        self.flush = flush
        self.every = every
        self.pending = 0
        self.lock = threading.Lock()
        self.flusher: threading.Thread | None = None
        self.error: OSError | None = None

    def wrote(self, size: int) -> None:
        with self.lock:
            self.pending += size
            if self.pending < self.every or (self.flusher is not None and self.flusher.is_alive()):
                return
            self.pending = 0
            self.flusher = threading.Thread(target=self._run, name="writeback", daemon=True)
            self.flusher.start()

    def wait(self) -> None:
        if self.flusher is not None:
            self.flusher.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self.flush()
        except OSError as exc:
            self.error = self.error or exc


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


class ObjectMissing(FileNotFoundError):
    """No object of that name: a FileNotFoundError, as a missing file of a directory store always was,
    so every caller that handles a missing block or manifest handles it on either store."""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or any(part in (".", "..") for part in name.split("/")):
        raise ValueError(f"{name!r} is not an object name")
    return name


class Objects(Protocol):
    where: str  # for messages: a directory, or s3://bucket/prefix

    def create(self, name: str, data: bytes) -> bool: ...
    def read(self, name: str) -> bytes: ...
    def exists(self, name: str) -> bool: ...
    def delete(self, name: str) -> int: ...
    def sizes(self, prefix: str) -> dict[str, int]: ...
    def durable(self) -> None: ...


class LocalObjects:
    """Objects as files under `root` (0600, in 0700 directories, written through `orchestrator.safefs`:
    never through a link, never over an existing file). An object is written whole under a temporary
    name and linked into place, so of two creators exactly one link succeeds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)
        self._made: set[Path] = set()

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def create(self, name: str, data: bytes) -> bool:
        path = self.path(name)
        if os.path.lexists(path):
            return False
        with self.staged(path, data) as staged:
            try:
                os.link(staged, path, follow_symlinks=False)
            except FileExistsError:
                return False
            return True

    @contextmanager
    def staged(self, path: Path, data: bytes) -> Iterator[Path]:
        """`data` written whole under a temporary name beside `path`, to be linked into place; the
        temporary name is removed on the way out."""
        staged = self.directory(path.parent) / f"{safefs.TEMPORARY}{path.name[:16]}-{secrets.token_hex(8)}"
        fd = safefs.create(staged)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield staged
        finally:
            staged.unlink(missing_ok=True)

    def read(self, name: str) -> bytes:
        try:
            fd = os.open(self.path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectMissing(name) from None
        with open(fd, "rb", buffering=0) as f:  # unbuffered: one read of the size fstat says
            return f.readall()

    def exists(self, name: str) -> bool:
        return os.path.lexists(self.path(name))

    def delete(self, name: str) -> int:
        path = self.path(name)
        try:
            size = os.lstat(path).st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object (file, not a temporary one) under the directory `prefix`, by name."""
        found: dict[str, int] = {}
        todo = [self.path(prefix.rstrip("/"))] if prefix else [self.root]
        while todo:
            directory = todo.pop()
            with suppress(FileNotFoundError), os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(Path(entry.path))
                    elif not entry.name.startswith(safefs.TEMPORARY):
                        found[Path(entry.path).relative_to(self.root).as_posix()] = entry.stat(
                            follow_symlinks=False
                        ).st_size
        return found

    def durable(self) -> None:
        if self.root.exists():
            sync_filesystem(self.root)

    def directory(self, path: Path) -> Path:
        """`path` made (0700, as its missing parents) or tightened to 0700 once per store object."""
        if path not in self._made:
            safefs.make_dirs(path)
            safefs.tighten(path, safefs.DIR_MODE)
            self._made.add(path)
        return path


class S3Objects:
    """Objects in an S3 bucket under `prefix/`. `create` is a conditional PUT (`If-None-Match: *`),
    which the store refuses when the name is taken: atomic across every host."""

    def __init__(self, store: Any, bucket: str, prefix: str) -> None:
        self._store = store
        self.prefix = prefix.strip("/")
        self.where = f"s3://{bucket}/{self.prefix}"

    @classmethod
    def at(cls, location: S3Location, vault_id: str) -> S3Objects:
        """A vault's objects: under `<prefix>/<vault id>/` of the settings' bucket."""
        return cls.connect(
            endpoint=location.endpoint,
            bucket=location.bucket,
            prefix="/".join(filter(None, [location.prefix, vault_id])),
            access_key=location.access_key,
            secret_key=location.secret_key,
            region=location.region,
        )

    @classmethod
    def connect(
        cls, *, endpoint: str, bucket: str, prefix: str, access_key: str, secret_key: str, region: str
    ) -> S3Objects:
        from obstore.store import S3Store

        store = S3Store(
            bucket,
            endpoint=endpoint or None,
            access_key_id=access_key or None,
            secret_access_key=secret_key or None,
            region=region,
            client_options={"allow_http": endpoint.startswith("http://")},
        )
        return cls(store, bucket, prefix)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{check_name(name)}" if self.prefix else check_name(name)

    def create(self, name: str, data: bytes) -> bool:
        import obstore
        from obstore.exceptions import AlreadyExistsError

        key = self._key(name)
        try:
            obstore.put(self._store, key, data, mode="create")
        except AlreadyExistsError:
            return False
        except Exception as exc:  # obstore's errors for a store that does not answer, refuses, ...
            raise _unavailable(self.where, "write", name, exc) from None
        return True

    def read(self, name: str) -> bytes:
        import obstore

        key = self._key(name)
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except FileNotFoundError:
            raise ObjectMissing(name) from None
        except Exception as exc:
            raise _unavailable(self.where, "read", name, exc) from None

    def exists(self, name: str) -> bool:
        return self._size(name) is not None

    def _size(self, name: str) -> int | None:
        import obstore

        key = self._key(name)
        try:
            return int(obstore.head(self._store, key)["size"])
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _unavailable(self.where, "look up", name, exc) from None

    def delete(self, name: str) -> int:
        import obstore

        size = self._size(name)
        if size is None:
            return 0
        try:
            obstore.delete(self._store, self._key(name))  # checked by _size already
        except FileNotFoundError:
            return 0
        except Exception as exc:
            raise _unavailable(self.where, "delete", name, exc) from None
        return size

    def sizes(self, prefix: str) -> dict[str, int]:
        import obstore

        base = f"{self.prefix}/" if self.prefix else ""
        found: dict[str, int] = {}
        where = self._key(prefix.rstrip("/")) if prefix else self.prefix
        try:
            for batch in obstore.list(self._store, prefix=where or None):
                for meta in batch:
                    found[meta["path"][len(base) :]] = int(meta["size"])
        except Exception as exc:
            raise _unavailable(self.where, "list", prefix or "/", exc) from None
        return found

    def durable(self) -> None:
        return None  # a PUT that succeeded is stored durably: nothing is held back to flush


def _unavailable(where: str, doing: str, name: str, exc: Exception) -> OrchestratorError:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return OrchestratorError(
        "VaultStoreUnavailable",
        f"the vault store {where} could not {doing} {name}: {first}; check BACKUP_S3_ENDPOINT, the bucket and "
        "the credentials, then run the job again",
    )
