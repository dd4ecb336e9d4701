"""Writing files without following links and without replacing what exists.

Every file the product writes goes through here: created with O_CREAT|O_EXCL|O_NOFOLLOW (a planted
link or an existing file at the name is refused, never followed or overwritten), mode 0600, in
directories of mode 0700. Where a directory is not the product's own (a restore's target directory),
work happens relative to a descriptor of that directory, opened once and checked, so that a path
swapped for a link half-way cannot redirect a later write.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # the filesystem (or the quota) is full
KERNEL_DIRS = (Path("/proc"), Path("/sys"), Path("/dev"))  # the kernel's: never a product's data
TEMPORARY = ".tmp-"  # how the name of a file being written starts (until it is linked into place)


class UnsafePathError(OSError):
    """A path the product would write is a link, or not the kind of file it should be."""


def within(path: Path, directory: Path) -> bool:
    """Whether `path` is `directory` or under it (both as given: resolve links first)."""
    return path == directory or directory in path.parents


def is_full(exc: OSError) -> bool:
    return exc.errno in FULL


def check_component(name: str) -> str:
    """`name` must be one path component: not empty, not `.` or `..`, no `/` and no NUL."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePathError(errno.EINVAL, f"{name!r} is not a file name")
    return name


def make_dirs(path: Path, mode: int = DIR_MODE, *, link_ok: bool = False) -> Path:
    """`path` and its missing parents, the new ones with `mode`. The last component must end up a real
    directory (a link to one only with `link_ok`: a configured directory an operator linked elsewhere)."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for new in reversed(missing):
        with suppress(FileExistsError):  # made meanwhile by another process: checked below
            os.mkdir(new, mode)
    path = missing[0] if missing else path
    st = os.stat(path) if link_ok else os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(errno.ENOTDIR, f"{path} is not a directory", str(path))
    return path


def write_new(path: Path, data: bytes, *, durable: bool = True, mode: int = FILE_MODE) -> bool:
    """Write `data` at `path` unless something (a file, a link, dangling or not) is there: False then.
    Written to a temporary name first and linked into place, so a reader never sees half of it."""
    tmp = _temporary(path.parent, data, durable, mode)
    try:
        os.link(tmp, path, follow_symlinks=False)  # fails when the name exists, whatever it is
    except FileExistsError:
        return False
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
    if durable:
        fsync_dir(path.parent)
    return True


def write_replacing(path: Path, data: bytes) -> None:
    """Write `data` at `path` atomically, replacing the file there (a state file the product owns;
    a link at the name is replaced by the file, never followed)."""
    tmp = _temporary(path.parent, data, True, FILE_MODE)
    try:
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _temporary(directory: Path, data: bytes, durable: bool, mode: int) -> str:
    """A new file in `directory` holding `data` (mkstemp: O_EXCL|O_NOFOLLOW, mode 0600 unless told)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMPORARY)
    try:
        if mode != FILE_MODE:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def create(path: Path, mode: int = FILE_MODE) -> int:
    """A descriptor of a new file at `path` (refused with FileExistsError when the name exists, as a
    link too; never followed)."""
    return os.open(path, _NEW, mode)


def create_at(dir_fd: int, name: str, mode: int = FILE_MODE, *, readable: bool = False) -> int:
    """`create`, relative to an open directory (`readable`: opened for reading back too)."""
    flags = (_NEW & ~os.O_WRONLY) | os.O_RDWR if readable else _NEW
    return os.open(check_component(name), flags, mode, dir_fd=dir_fd)


def open_lock(path: Path) -> int:
    """A lock file's descriptor (created 0600 if missing; a link at the name is refused)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)


@contextmanager
def directory(path: Path) -> Iterator[int]:
    """A descriptor of the directory at `path` (its last component must not be a link)."""
    fd = os.open(path, _DIR)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def subdirectory(dir_fd: int, name: str) -> Iterator[int]:
    fd = os.open(check_component(name), _DIR, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def real_path_of(fd: int) -> Path:
    """Where an open descriptor really is (what it was opened as, resolved by the kernel)."""
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, _DIR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lexists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(check_component(name), dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def tighten(path: Path, mode: int) -> None:
    """Give an existing file or directory of the product `mode` (an older version made it wider);
    a link at `path` is left alone (opened without following it, so never its target)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return
        raise
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
