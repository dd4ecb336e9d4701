"""Restoring a recovery point: its disks rebuilt byte for byte from the vault store, every block
fetched, authenticated and checked against its name as it is read (IN_FLIGHT at once, each written
at its offset; zero blocks left as holes), into a folder of their own (`<target dir>/<target VM>/`,
or the fabric's folder of a new VM).

Everything a restore job writes is its own: it claims the folder (a claim file naming the job,
created O_EXCL) or refuses with `RestoreTargetExists` when the folder holds anything it did not
write; it writes each disk under a temporary name, relative to the folder's descriptor, without ever
following a link, and links the disk into place only once every block is verified (never replacing
a name that exists). A retry of the same job finds its claim and starts over; a failed restore
removes what it wrote (and the folder, when it made it); a corrupt block fails the job at once with
`RestoreVerificationFailed`, naming the disk, the offset and the block.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from uuid import UUID

from orchestrator import safefs, targets
from orchestrator.domain import Job, RecoveryPoint
from orchestrator.domain.names import VM
from orchestrator.domain.values import Finding
from orchestrator.errors import OrchestratorError
from orchestrator.fabric.inventory import FabricVm, VmSpec
from orchestrator.write import commands as c
from workers.context import WorkerContext
from workers.objects import Writeback
from workers.prechecks import evaluate
from workers.vaultstore import DiskManifest, Manifest, VaultStore

CLAIM = ".restore-claim"
IN_FLIGHT = 8  # blocks fetched, opened and written at once (each at most 4 MiB held)
WRITEBACK_EVERY = 128 * 1024 * 1024  # bytes written between two writebacks started (Writeback)
TEMPORARY = ".restoring-"


class RestoreVerificationError(OrchestratorError):
    """A block of the recovery point does not hash to what its manifest says."""

    def __init__(self, message: str) -> None:
        super().__init__("RestoreVerificationFailed", message)


def point_of(ctx: WorkerContext, job: Job) -> tuple[RecoveryPoint, VaultStore, Manifest]:
    """The job's recovery point, its vault store and its manifest (checked against its digest)."""
    rp = ctx.app.get(UUID(job.parameters["recovery_point_id"]), RecoveryPoint)
    store = ctx.vault_store(rp.vault_id)
    try:
        return rp, store, store.read_manifest(str(rp.id), rp.manifest_digest)
    except (OSError, ValueError) as exc:
        raise OrchestratorError("RecoveryPointDataMissing", f"recovery point {rp.id}: {exc}") from None


def run_restore(ctx: WorkerContext, job: Job) -> str:
    params = job.parameters
    rp, store, manifest = point_of(ctx, job)
    subscription = rp.vm_key.split("/", 1)[0]
    target = VM.check(params["target_vm_name"], "target_vm_name")  # the command checked it too: never a path
    mode, warnings = params["mode"], _restore_checks(ctx, job, rp, manifest, subscription)
    if mode == "vm" and warnings:
        mode = "disks"  # a VM that cannot be recreated as it was: its disks, and the reason why
    if params["mode"] == "disks":
        parent = targets.check_target_dir(params["target_dir"], list(ctx.own_dirs))
        folder = Folder(parent, target, job.id, ctx.own_dirs)
    else:
        own_folder = ctx.fabric.restored_disk_dir(subscription, target)
        folder = Folder(own_folder.parent, own_folder.name, job.id)
    existing = ctx.fabric.find_vm(subscription, target) if mode == "vm" else None
    if existing is not None and not folder.claimed():
        raise OrchestratorError(
            "RestoreTargetExists", (f"a VM named {target!r} exists; restore creates a new VM and never replaces one")
        )
    restored = folder.write(store, manifest.disks)
    if mode == "vm" and existing is None:
        spec = VmSpec.model_validate(
            {
                **manifest.vm_spec,
                "name": target,
                "extension": {"installed": False},
                "disks": [{**d, "image": str(restored[d["name"]])} for d in manifest.vm_spec["disks"]],
            }
        )
        try:
            made = ctx.fabric.create_vm(subscription, spec)
        except BaseException:
            folder.discard()  # the disks of a VM that could not be made
            raise
        restored = {disk.name: made.disk_path(disk) for disk in made.spec.disks}  # as the fabric keeps them
    ctx.report(
        c.CompleteJob(
            job_id=job.id,
            warnings=warnings,
            result={
                "mode": mode,
                "target": target if mode == "vm" else str(folder.path),
                "recovery_point_id": str(rp.id),
                "disks": {name: str(path) for name, path in restored.items()},
                "verified": True,
            },
        )
    )
    folder.release()
    return f"restored {len(restored)} disks"


def _restore_checks(
    ctx: WorkerContext, job: Job, rp: RecoveryPoint, manifest: Manifest, subscription: str
) -> list[Finding]:
    """The restore-stage prechecks, on the VM as it was when the point was taken (an encrypted VM's
    key vault as it is now): an error refuses the restore before anything is written."""
    from workers.work import passed

    vault = ctx.app.vault_created(rp.vault_id)
    source = FabricVm(subscription=subscription, spec=VmSpec.model_validate(manifest.vm_spec), base_dir=Path("."))
    results = evaluate(source, vault.kind, vault.region, "restore", ctx.fabric, recovery_point=str(rp.id))
    ctx.report(c.RecordChecks(job_id=job.id, stage="restore", results=results))
    return passed(results)


class Folder:
    """The folder a restore job writes its disks into, `parent/name`, and the job's claim on it.
    `own`: the deployment's own directories, which the folder (as opened) must not be in."""

    def __init__(self, parent: Path, name: str, job_id: UUID, own: tuple[Path, ...] = ()) -> None:
        self.parent = parent
        self.name = safefs.check_component(name)
        self.path = parent / name
        self.job_id = str(job_id)
        self.own = own

    def claimed(self) -> bool:
        """Whether this job's claim is on the folder (an earlier attempt of the same job made it)."""
        try:
            with safefs.directory(self.parent) as parent_fd, safefs.subdirectory(parent_fd, self.name) as fd:
                return self._claim_of(fd) is not None
        except OSError:
            return False

    def write(self, store: VaultStore, disks: list[DiskManifest]) -> dict[str, Path]:
        """Every disk, verified, as `<disk>.img` in the folder; on failure nothing of this job is left."""
        try:
            safefs.make_dirs(self.parent)
        except OSError as exc:
            raise _target_error(self.parent, exc) from None
        with self._opened() as (fd, created):
            try:
                for entry in os.listdir(fd):  # an earlier attempt's: start over
                    if entry != CLAIM:
                        os.unlink(entry, dir_fd=fd)
                restored = {}
                for disk in disks:
                    restored[disk.name] = self.path / _write_disk(store, disk, fd, self.job_id)
                return restored
            except BaseException as exc:
                self._remove_all(fd, created)
                if isinstance(exc, OSError):
                    raise _target_error(self.path, exc) from None
                raise

    def discard(self) -> None:
        """Remove everything the job wrote, its claim, and the folder if the job made it."""
        with self._opened() as (fd, made):
            self._remove_all(fd, made)

    def release(self) -> None:
        """The job is over: its claim goes (the folder and the disks stay)."""
        with (
            suppress(OSError),
            safefs.directory(self.parent) as parent_fd,
            safefs.subdirectory(parent_fd, self.name) as fd,
        ):
            if self._claim_of(fd) is not None:
                os.unlink(CLAIM, dir_fd=fd)

    @contextmanager
    def _opened(self) -> Iterator[tuple[int, bool]]:
        """The folder's descriptor, claimed for this job (made if missing), and whether the job made it."""
        try:
            with ExitStack() as stack:
                parent_fd = stack.enter_context(safefs.directory(self.parent))
                if self.own:  # what was opened, not what the path said a moment ago
                    targets.check_target_dir(str(safefs.real_path_of(parent_fd)), list(self.own))
                made = True
                try:
                    os.mkdir(self.name, safefs.DIR_MODE, dir_fd=parent_fd)
                except FileExistsError:
                    made = False
                try:
                    fd = stack.enter_context(safefs.subdirectory(parent_fd, self.name))
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a link or a file at the name
                        raise self._exists("is a link or a file") from None
                    raise
                yield fd, self._claim(fd, made)
        except OSError as exc:
            raise _target_error(self.path, exc) from None

    def _claim(self, fd: int, made: bool) -> bool:
        """Claim the folder for this job; whether the job made the folder (in this attempt or one
        before). A folder that holds anything else, or another job's claim, is refused."""
        claim = self._claim_of(fd)
        if claim is not None:
            return bool(claim.get("made"))
        if any(entry for entry in os.listdir(fd)):
            raise self._exists(
                "exists and holds files" if not safefs.lexists_at(fd, CLAIM) else "is being written by another restore"
            )
        try:
            claim_fd = safefs.create_at(fd, CLAIM)
        except FileExistsError:
            raise self._exists("is being written by another restore") from None
        with os.fdopen(claim_fd, "wb") as f:
            f.write(json.dumps({"job_id": self.job_id, "made": made}).encode())
            f.flush()
            os.fsync(f.fileno())
        return made

    def _claim_of(self, fd: int) -> dict[str, object] | None:
        """The claim on the folder if it is this job's."""
        try:
            claim_fd = os.open(CLAIM, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError:
            return None
        with os.fdopen(claim_fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            try:
                claim = json.loads(f.read(4096))
            except ValueError:
                return None
        return claim if isinstance(claim, dict) and claim.get("job_id") == self.job_id else None

    def _remove_all(self, fd: int, made: bool) -> None:
        """What this job wrote into the folder, its claim, and the folder if the job made it."""
        for entry in os.listdir(fd):
            with suppress(OSError):
                os.unlink(entry, dir_fd=fd)
        if made:
            with suppress(OSError), safefs.directory(self.parent) as parent_fd:
                os.rmdir(self.name, dir_fd=parent_fd)

    def _exists(self, why: str) -> OrchestratorError:
        return OrchestratorError(
            "RestoreTargetExists",
            f"{self.path} {why}; a restore never writes into or over "
            "what exists: choose another target name or directory",
        )


def _write_disk(store: VaultStore, disk: DiskManifest, fd: int, job_id: str) -> str:
    """Rebuild one disk in the folder open at `fd` (a temporary name first, verified, then linked
    into place under its own name); returns that name."""
    final = safefs.check_component(f"{disk.name}.img")
    tmp = f"{TEMPORARY}{job_id[:8]}-{final}"
    out = safefs.create_at(fd, tmp, readable=True)
    try:
        os.ftruncate(out, disk.size)  # zero blocks stay holes: they read back as zeros
        _write_blocks(store, disk, out)
        os.fsync(out)
        if os.fstat(out).st_size != disk.size:
            raise RestoreVerificationError(f"disk {disk.name}: size {os.fstat(out).st_size} != {disk.size}")
    finally:
        os.close(out)
    try:
        os.link(tmp, final, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
    except FileExistsError:
        raise OrchestratorError(
            "RestoreTargetExists", f"disk {final} exists; restore never overwrites a disk"
        ) from None
    finally:
        os.unlink(tmp, dir_fd=fd)
    return final


def _write_blocks(store: VaultStore, disk: DiskManifest, out: int) -> None:
    """Every stored block of the disk fetched and opened (authenticated, decompressed, its name
    checked against its content) IN_FLIGHT at a time on as many threads, and written at its offset
    by this thread as each arrives (one writer: parallel writes to one file only queue on it).
    Bounded memory: at most IN_FLIGHT blocks held. The first failure stops the rest and is raised."""
    stored = [(index, digest) for index, digest in enumerate(disk.blocks) if digest is not None]

    def fetch(index: int, digest: str) -> tuple[int, bytes]:
        return index, _block(store, disk, index, digest)

    def write(fetched: Future[tuple[int, bytes]]) -> None:
        index, block = fetched.result()
        data, offset = memoryview(block), index * disk.block_size
        while data:  # a short write goes on: a full target then says so itself (ENOSPC)
            written = os.pwrite(out, data, offset)
            data, offset = data[written:], offset + written
            writeback.wrote(written)

    writeback = Writeback(lambda: os.fdatasync(out), WRITEBACK_EVERY)  # an error it met is raised below
    with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="restore") as pool:
        pending: set[Future[tuple[int, bytes]]] = set()
        try:
            for index, digest in stored:
                if len(pending) >= IN_FLIGHT:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        write(future)
                pending.add(pool.submit(fetch, index, digest))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    write(future)
        except BaseException:
            for future in pending:
                future.cancel()
            with suppress(OSError):
                writeback.wait()  # the descriptor stays open until the writeback under way is done
            raise
    writeback.wait()


def _block(store: VaultStore, disk: DiskManifest, index: int, digest: str) -> bytes:
    where = f"disk {disk.name} block {index} (offset {index * disk.block_size}, {digest[:16]}...)"
    try:
        return store.get_block(digest)  # checks the block's hash
    except FileNotFoundError:
        raise OrchestratorError("RecoveryPointDataMissing", f"{where} is missing from the vault store") from None
    except OSError as exc:  # the vault store's, not the target's: said as such
        raise OrchestratorError(
            "RecoveryPointDataMissing", f"{where} cannot be read from the vault store ({exc.strerror})"
        ) from None
    except ValueError:
        raise RestoreVerificationError(
            f"{where} does not match the manifest: the vault store's copy is corrupt"
        ) from None


def _target_error(path: Path, exc: OSError) -> OrchestratorError:
    if safefs.is_full(exc):
        return OrchestratorError(
            "RestoreTargetFull",
            f"{path}: the filesystem is full ({exc.strerror}); free space there or restore elsewhere",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OrchestratorError("TargetDirInvalid", f"{path} cannot be written ({exc.strerror})", field="target_dir")
    return OrchestratorError("RestoreFailed", f"{path}: {exc.strerror or exc}")
