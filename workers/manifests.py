"""Recovery point manifests: their format, and reading all of a vault's at once for collection and
checks, where one bad manifest is a named finding instead of a crash.

A manifest that is JSON but not a valid manifest still tells which blocks it may need: every block
digest it mentions is kept. One that cannot be read or parsed at all could need any block, so while
it is there no block of the vault is collected (`References.unreadable`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.domain.values import EncryptionKeys
from workers.objects import ObjectMissing

_DIGEST = re.compile(r"[0-9a-f]{64}")


class DiskManifest(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    size: int
    blocks: list[str | None]  # None: a zero block, not stored
    fingerprint: str = ""  # size, device, inode and mtime of the image read (see snapshot.py)
    # What the disk was cut into (BACKUP_BLOCK_SIZE when it was read); block i is at i * block_size.
    # A manifest without one was written when every block was 4 MiB.
    block_size: int = Field(4 * 1024 * 1024, ge=4096, le=64 * 1024 * 1024)

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
    read_bytes: int = 0  # what the backup read of the disks (change tracking reads fewer than logical_bytes)
    tracking: dict[str, str] = {}  # per disk: how the backup read it (whole, incrementally since a point, ...)
    encryption: EncryptionKeys | None = None  # an encrypted VM's key names
    sealed_keys: str | None = None  # its BEK (and KEK), encrypted under BACKUP_KEY_PROTECTION_KEY (workers/keys.py)

    @property
    def block_digests(self) -> set[str]:
        return {b for disk in self.disks for b in disk.blocks if b}


def digest_named(name: str) -> bool:
    """Whether `name` is a block's name: a SHA-256 in lowercase hex."""
    return _DIGEST.fullmatch(name) is not None


@dataclass(frozen=True)
class BadManifest:
    file: str  # its path in the vault, e.g. manifests/<id>.json
    problem: str
    digests: frozenset[str] | None  # the block digests it mentions; None when it cannot be read at all

    def describe(self) -> str:
        return f"manifest {self.file} {self.problem}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "problem": self.problem,
            "blocks_kept": "all (collection held back)" if self.digests is None else len(self.digests),
        }


@dataclass
class References:
    """The vault's manifests as they are now: the good ones by recovery point id, the bad ones, and
    every block any of them references or mentions."""

    manifests: dict[str, Manifest] = field(default_factory=dict)
    bad: list[BadManifest] = field(default_factory=list)
    live: set[str] = field(default_factory=set)

    @property
    def unreadable(self) -> list[BadManifest]:
        return [b for b in self.bad if b.digests is None]


def read_references(ids: list[str], read: Callable[[str], bytes]) -> References:
    """Every manifest of a vault store (`ids`: each `<id>` of `manifests/<id>.json`; `read`: a
    manifest's bytes by id, never through a link)."""
    found = References()
    for manifest_id in sorted(ids):
        outcome = read_one(manifest_id, read)
        if outcome is None:
            continue
        if isinstance(outcome, Manifest):
            found.manifests[manifest_id] = outcome
            found.live |= outcome.block_digests
        else:
            found.bad.append(outcome)
            found.live |= outcome.digests or set()
    return found


def read_one(manifest_id: str, read: Callable[[str], bytes]) -> Manifest | BadManifest | None:
    name = f"manifests/{manifest_id}.json"
    try:
        data = read(manifest_id)
    except ObjectMissing:
        return None  # removed since it was listed: no manifest, no references
    except (OSError, ValueError) as exc:  # ValueError: a file whose name is no object name
        return BadManifest(name, f"cannot be read ({getattr(exc, 'strerror', None) or exc})", None)
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested beyond reason
        return BadManifest(name, f"is not JSON ({str(exc)[:200]})", None)
    try:
        return Manifest.model_validate(parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the document"
        digests = frozenset(_digests_in(parsed))
        return BadManifest(
            name,
            f"is not a valid manifest ({where}: {first['msg']}); the {len(digests)} block "
            "digest(s) it mentions are kept",
            digests,
        )


def _digests_in(value: Any) -> Iterator[str]:
    """Every string in a JSON document that is a block digest (keys included), without recursion."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if digest_named(item):
                yield item
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
