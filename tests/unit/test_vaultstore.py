from __future__ import annotations

import hashlib
import os
from pathlib import Path

from workers.vaultstore import BLOCK_SIZE, DiskManifest, Manifest, VaultStore


def _manifest(taken_at: str, block: str) -> Manifest:
    return Manifest(recovery_point_id="rp1", job_id="job1", vm_key="s/rg/vm", vm_spec={}, taken_at=taken_at,
                    consistency="crash", logical_bytes=BLOCK_SIZE, stored_bytes=BLOCK_SIZE,
                    disks=[DiskManifest(name="os", size=BLOCK_SIZE, blocks=[block])])


def test_the_first_manifest_committed_stays_and_a_second_writer_gets_it(tmp_path: Path) -> None:
    store = VaultStore(tmp_path)
    first, digest = store.commit_manifest(_manifest("2026-11-22T00:00:00+00:00", "a" * 64))
    second, again = store.commit_manifest(_manifest("2026-11-22T00:05:00+00:00", "b" * 64))  # a late duplicate
    assert second == first and again == digest
    assert store.read_manifest("rp1", digest).taken_at == "2026-11-22T00:00:00+00:00"
    assert [p.name for p in (tmp_path / "manifests").iterdir()] == ["rp1.json"]  # no temporary file left


def test_a_block_is_stored_once_and_a_corrupt_one_is_reported(tmp_path: Path) -> None:
    store = VaultStore(tmp_path)
    data = os.urandom(BLOCK_SIZE)
    digest = hashlib.sha256(data).hexdigest()
    assert store.put_block(digest, data) is True and store.put_block(digest, data) is False
    store.commit_manifest(_manifest("2026-11-22T00:00:00+00:00", digest))
    assert store.check()["clean"]
    store.block_path(digest).write_bytes(b"x" + data[1:])
    report = store.check()
    assert not report["clean"] and report["corrupt"] == [{"recovery_point": "rp1", "block": digest}]
