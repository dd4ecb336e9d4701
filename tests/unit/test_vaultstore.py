from __future__ import annotations

import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.collecting import Playing, playing
from workers.vaultstore import BLOCK_SIZE, DiskManifest, Manifest, VaultStore

KEK = bytes(range(32))  # a test's key-encryption key


def _manifest(taken_at: str, block: str) -> Manifest:
    return Manifest(
        recovery_point_id="rp1",
        job_id="job1",
        vm_key="s/rg/vm",
        vm_spec={},
        taken_at=taken_at,
        consistency="crash",
        logical_bytes=BLOCK_SIZE,
        stored_bytes=BLOCK_SIZE,
        disks=[DiskManifest(name="os", size=BLOCK_SIZE, blocks=[block])],
    )


def test_the_first_manifest_committed_stays_and_a_second_writer_gets_it(tmp_path: Path) -> None:
    store = VaultStore(tmp_path, KEK)
    first, digest = store.commit_manifest(_manifest("2026-11-22T00:00:00+00:00", "a" * 64))
    second, again = store.commit_manifest(_manifest("2026-11-22T00:05:00+00:00", "b" * 64))  # a late duplicate
    assert second == first and again == digest
    assert store.read_manifest("rp1", digest).taken_at == "2026-11-22T00:00:00+00:00"
    assert [p.name for p in (tmp_path / "manifests").iterdir()] == ["rp1.json"]  # no temporary file left


def test_a_block_is_stored_once_and_a_corrupt_one_is_reported(tmp_path: Path) -> None:
    store = VaultStore(tmp_path, KEK)
    data = os.urandom(BLOCK_SIZE)
    digest = store.block_name(data)
    assert store.put_block(digest, data) > 0 and store.put_block(digest, data) == 0
    store.commit_manifest(_manifest("2026-11-22T00:00:00+00:00", digest))
    assert store.check()["clean"]
    store.block_path(digest).write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # always a different first byte
    report = store.check()
    assert not report["clean"] and report["corrupt"] == [{"recovery_point": "rp1", "block": digest}]


def _block(store: VaultStore, fill: int, size: int = 64 * 1024) -> tuple[str, bytes]:
    data = bytes([fill]) * size
    return store.block_name(data), data


def _plant(store: VaultStore, name: str, data: bytes) -> None:
    """A manifest file as a writer with the vault's key made it (sealed), holding `data`."""
    store.manifests.mkdir(parents=True, exist_ok=True)
    cipher = store.keys.cipher(create=True)
    assert cipher is not None
    (store.manifests / name).write_bytes(cipher.seal_manifest(name.removesuffix(".json"), data))


def test_finding_15_a_bad_manifest_is_a_named_finding_in_the_check(tmp_path: Path) -> None:
    store = VaultStore(tmp_path, KEK)
    kept, data = _block(store, 1)
    store.put_block(kept, data)
    _plant(store, "not-json.json", b"\x00\xffnot json")
    _plant(store, "not-a-manifest.json", json.dumps({"disks": [{"blocks": [kept]}]}).encode())
    report = store.check()  # no traceback
    assert not report["clean"]
    found = {bad["file"]: bad["problem"] for bad in report["bad_manifests"]}
    assert set(found) == {"manifests/not-json.json", "manifests/not-a-manifest.json"}
    assert "is not JSON" in found["manifests/not-json.json"]
    assert (
        "is not a valid manifest" in found["manifests/not-a-manifest.json"]
        and "1 block" in found["manifests/not-a-manifest.json"]
    )
    assert report["orphans"] == []  # the block the invalid manifest mentions is not an orphan


def test_finding_15_collection_keeps_every_block_an_invalid_manifest_mentions(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        _keeps_every_block_an_invalid_manifest_mentions(vault)


def _keeps_every_block_an_invalid_manifest_mentions(vault: Playing) -> None:
    store = vault.store
    (listed, a), (mentioned, b), (orphan, c) = _block(store, 1), _block(store, 2), _block(store, 3)
    stored = {digest: store.put_block(digest, data) for digest, data in ((listed, a), (mentioned, b), (orphan, c))}
    good = _manifest("2026-11-22T00:00:00+00:00", listed).model_copy(update={"recovery_point_id": "rp1"})
    store.commit_manifest(good)
    _plant(store, "rp2.json", json.dumps({"recovery_point_id": "rp2", "disks": [{"blocks": [mentioned]}]}).encode())
    result = vault.collect()
    assert (result["skipped"], result["blocks_removed"], result["bytes_freed"]) == (False, 1, stored[orphan])
    assert store.has_block(listed) and store.has_block(mentioned) and not store.has_block(orphan)


def test_finding_15_an_unreadable_manifest_holds_collection_back_with_the_reason(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        store = vault.store
        orphan, data = _block(store, 3)
        store.put_block(orphan, data)
        _plant(store, "rp9.json", b'{"recovery_point_id": "rp9", "disks": [')  # cut short
        result = vault.collect()
        assert result["skipped"] is True and result["blocks_removed"] == 0
        assert "manifests/rp9.json" in result["reason"] and "is not JSON" in result["reason"]
        assert store.has_block(orphan) and vault.ledger()["collection"] is None  # nothing was marked


def test_finding_18_of_writers_storing_one_new_block_at_once_exactly_one_counts_it(tmp_path: Path) -> None:
    store = VaultStore(tmp_path, KEK)
    start = threading.Barrier(8)

    def put(digest: str, data: bytes) -> int:
        mine = VaultStore(tmp_path, KEK)  # each backup has its own
        start.wait()
        return mine.put_block(digest, data)

    stored = 0
    for _ in range(4):  # four new blocks, each stored by eight writers at once
        data = os.urandom(BLOCK_SIZE)
        digest = store.block_name(data)
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(put, [digest] * 8, [data] * 8))
        assert len([n for n in outcomes if n > 0]) == 1
        stored += sum(outcomes)
    assert store.stored_bytes() == stored == store.usage_report()["bytes"]


def test_finding_18_collection_reports_temporary_files_apart_from_the_bytes_it_freed(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        store = vault.store
        orphan, data = _block(store, 3)
        size = store.put_block(orphan, data)
        leftover = store.block_path(orphan).parent / ".tmp-left-by-a-killed-writer"
        leftover.write_bytes(b"x" * 1000)
        assert store.stored_bytes() == size  # a temporary file is not a block
        result = vault.collect()
        assert (result["blocks_removed"], result["bytes_freed"]) == (1, size)
        assert (result["temporary_files_removed"], result["temporary_bytes_removed"]) == (1, 1000)
        assert not leftover.exists() and store.stored_bytes() == 0 == store.usage_report()["bytes"]


def test_finding_18_a_change_to_the_usage_record_a_killed_process_left_is_settled_by_the_next(tmp_path: Path) -> None:
    from workers import vaultusage

    store = VaultStore(tmp_path, KEK)
    first, a = _block(store, 1)
    size = store.put_block(first, a)
    before = store.usage_report()
    second, b = _block(store, 2, 1000)
    path = store.block_path(second)
    path.parent.mkdir(parents=True, exist_ok=True)
    with vaultusage.locked(tmp_path / "usage", store.has_block, store.stored_bytes) as usage:
        usage.begin(len(b), second)
        path.write_bytes(b)  # linked, and then the process is killed before it settles
    after = store.usage_report()
    assert after["bytes"] == size + len(b) == store.stored_bytes()
    assert after["sequence"] > before["sequence"]


def test_finding_9_vault_store_every_directory_is_0700_and_every_file_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with playing(tmp_path) as vault:
            store = vault.store
            digest, data = _block(store, 1)
            orphan, more = _block(store, 2)
            with vault.lease():  # a backup running at the mark: the candidates stay listed
                store.put_block(digest, data)
                store.put_block(orphan, more)
                store.commit_manifest(_manifest("2026-11-22T00:00:00+00:00", digest))
                assert vault.collect()["skipped"] is True
                made = [tmp_path / "vaults", *(tmp_path / "vaults").rglob("*")]
            assert vault.collect()["blocks_removed"] == 1
    finally:
        os.umask(old)
    assert {p.name for p in made} >= {
        "vaults",
        store.root.name,
        "blocks",
        digest[:2],
        digest,
        "manifests",
        "rp1.json",
        "collections",
        "usage",
    }
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.lstat().st_mode) for p in made if p.exists()}
    assert modes == {name: 0o700 if (tmp_path / name).is_dir() else 0o600 for name in modes}


def test_a_write_back_error_met_in_the_background_fails_the_manifest_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """syncfs reports a write-back error once, to the descriptor it was called on: the error a
    background flush met is kept, and the commit refuses to write a manifest over blocks that may
    not be on disk (the next syncfs, on a new descriptor, would say nothing)."""
    import errno

    from workers import vaultstore

    calls: list[Path] = []

    def failing_once(path: Path) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.EIO, "syncfs: Input/output error", str(path))

    monkeypatch.setattr(vaultstore, "_syncfs", failing_once)
    monkeypatch.setattr(vaultstore, "FLUSH_EVERY", 1)  # every stored block starts a background flush
    store = VaultStore(tmp_path, KEK)
    digest, data = _block(store, 7)
    assert store.put_block(digest, data) > 0
    with pytest.raises(OSError) as caught:
        store.commit_manifest(_manifest("2026-11-22T00:00:00+00:00", digest))
    assert caught.value.errno == errno.EIO and calls
    assert store.manifest_ids() == []  # no manifest over blocks that may be lost


def test_a_syncfs_error_is_raised_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import errno

    from workers import objects

    class Failing:
        def syncfs(self, fd: int) -> int:
            ctypes.set_errno(errno.EIO)
            return -1

    monkeypatch.setattr(objects, "_LIBC", Failing())
    with pytest.raises(OSError) as caught:
        objects.sync_filesystem(tmp_path)
    assert caught.value.errno == errno.EIO
