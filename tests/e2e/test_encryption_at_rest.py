"""Compression and encryption at rest (workers/vaultcrypto.py): what the vault store holds gives away
no plaintext and no key, blocks are named by a keyed hash, a wrong or missing key is a coded
refusal that writes nothing, and rotating the key-encryption key rewrites no block."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import stat
from pathlib import Path
from uuid import UUID

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from typer.testing import CliRunner

from orchestrator import Client
from orchestrator.config import load_settings
from orchestrator.entry.cli.main import app
from orchestrator.errors import OrchestratorError
from tests.e2e.test_vault_store_findings import inventory, protected
from workers.vaultcrypto import key_id, unwrap, vault_kek
from workers.vaultstore import BLOCK_SIZE

MIB = 1024 * 1024


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _disk(seed: int) -> bytes:
    """12 MiB: random 4 MiB blocks, a compressible one (text repeated) and zeros."""
    rng = random.Random(seed)
    text = b"".join(f"line {i}: the quick brown fox\n".encode() for i in range(200_000))[: 4 * MIB]
    return rng.randbytes(4 * MIB) + text + bytes(2 * MIB) + rng.randbytes(2 * MIB)


def _nonzero_blocks(disk: bytes) -> set[bytes]:
    """The disk's distinct blocks that are not all zeros: what its vault store holds one each of."""
    blocks = (disk[o : o + BLOCK_SIZE] for o in range(0, len(disk), BLOCK_SIZE))
    return {b for b in blocks if b.strip(b"\0")}


def _stored(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _derived(data_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"backup-orchestrator " + purpose).derive(
        data_key
    )


def test_the_vault_store_holds_no_window_of_the_disks_plaintext_and_no_key(tmp_path: Path) -> None:
    disk = _disk(1)
    with Client(data_dir=tmp_path / "data", fabric=inventory(tmp_path, ("vm01", [disk]))) as client:
        vault = protected(client, ["vm01"])
        job = client.wait(client.backup_now(vault, "vm01"))
        assert job.status == "completed", job.error_message
        root = client.settings.vault_store_path / vault
        kek = vault_kek(client.settings)
        [rp] = client.recovery_points(vault, "vm01")
        restored = client.wait(
            client.restore(rp.recovery_point_id, "vm01", mode="disks", target_dir=str(tmp_path / "out"))
        )
        assert restored.status == "completed", restored.error_message
        assert (tmp_path / "out" / "vm01" / "vm01-os.img").read_bytes() == disk
    everything = b"".join(_stored(root).values())
    assert len(everything) < len(disk.rstrip(b"\0")) - 3 * MIB  # the text block compressed
    # No 4 MiB window of the disk's plaintext (nor any sampled 64-byte piece of its data).
    for offset in range(0, len(disk) - BLOCK_SIZE + 1, MIB):
        window = disk[offset : offset + BLOCK_SIZE]
        assert window not in everything, offset
    rng = random.Random(2)
    for offset in (rng.randrange(0, 6 * MIB) for _ in range(200)):
        assert disk[offset : offset + 64] not in everything
    assert b"vm01" not in everything and b"quick brown fox" not in everything  # manifests sealed too
    # No key: the key-encryption key, the vault's data key and the keys derived from it, in any spelling.
    [wrapping] = (root / "keys").iterdir()
    data_key = unwrap(kek, vault, wrapping.read_bytes())
    for key in (kek, data_key, _derived(data_key, b"block names"), _derived(data_key, b"sealing")):
        for spelling in (key, key.hex().encode(), base64.b64encode(key)):
            assert spelling not in everything
    # Blocks are named by a keyed hash: no name is the SHA-256 of a block of the disk.
    names = {p.name for p in (root / "blocks").rglob("*") if p.is_file()}
    plain = {hashlib.sha256(disk[o : o + BLOCK_SIZE]).hexdigest() for o in range(0, len(disk), BLOCK_SIZE)}
    assert len(names) == len(_nonzero_blocks(disk)) and not names & plain
    key_file = tmp_path / "data" / "vault.key"  # the embedded mode's key, outside the vault store
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and base64.b64decode(key_file.read_bytes()) == kek


def test_two_vaults_holding_the_same_data_name_and_seal_it_differently(tmp_path: Path) -> None:
    disk = _disk(3)
    fabric = inventory(tmp_path, ("vm01", [disk]), ("vm02", [disk]))
    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        first = protected(client, ["vm01"])
        second = client.create_vault("vault-west", "japaneast", "rg")
        client.wait(client.discover(second))
        client.wait_all(client.register(second, ["vm02"]))
        client.wait_all(client.protect(second, ["vm02"]))
        for vault, vm in ((first, "vm01"), (second, "vm02")):
            assert client.wait(client.backup_now(vault, vm)).status == "completed"
        root = client.settings.vault_store_path
    names = [{p.name for p in (root / v / "blocks").rglob("*") if p.is_file()} for v in (first, second)]
    assert len(names[0]) == len(names[1]) == len(_nonzero_blocks(disk)) and not names[0] & names[1]


def test_a_wrong_key_is_a_coded_refusal_that_reads_and_writes_nothing(tmp_path: Path) -> None:
    disk = _disk(4)
    fabric = inventory(tmp_path, ("vm01", [disk]))
    right, wrong = _key(), _key()
    with Client(data_dir=tmp_path / "data", fabric=fabric, vault_key=right) as client:
        vault = protected(client, ["vm01"])
        assert client.wait(client.backup_now(vault, "vm01")).status == "completed"
        [rp] = client.recovery_points(vault, "vm01")
        root = client.settings.vault_store_path / vault
    before = _stored(root)
    with Client(data_dir=tmp_path / "data", fabric=fabric, vault_key=wrong) as client:
        backup = client.wait(client.backup_now(vault, "vm01"))
        assert (backup.status, backup.error_code) == ("failed", "VaultKeyWrong"), backup.error_message
        assert key_id(base64.b64decode(wrong)) in backup.error_message and "nothing was read" in backup.error_message
        restore = client.wait(
            client.restore(rp.recovery_point_id, "vm01", mode="disks", target_dir=str(tmp_path / "out"))
        )
        assert (restore.status, restore.error_code) == ("failed", "VaultKeyWrong")
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
        verify = client.wait(client.verify(vault))
        assert (verify.status, verify.error_code) == ("failed", "VaultKeyWrong")
        with pytest.raises(OrchestratorError) as refused:
            client.check_vault(vault)
        assert refused.value.code == "VaultKeyWrong"
        assert client.recovery_points(vault, "vm01") == [rp]
    assert _stored(root) == before  # nothing read into anything, nothing written


def test_without_the_vault_key_a_distributed_worker_refuses_to_start(tmp_path: Path) -> None:
    from orchestrator.runtime.bootstrap import worker_context

    settings = load_settings(
        {}, data_dir=tmp_path / "data", event_store="postgres", redis_url="redis://127.0.0.1:6379/15"
    )
    with pytest.raises(OrchestratorError) as refused:
        worker_context(settings)  # before it opens the event store
    assert refused.value.code == "VaultKeyMissing" and refused.value.field == "BACKUP_VAULT_KEY"
    assert not (tmp_path / "data" / "vault.key").exists()


def test_rotating_the_key_rewraps_the_data_keys_and_rewrites_no_block(tmp_path: Path) -> None:
    disk = _disk(5)
    fabric = inventory(tmp_path, ("vm01", [disk]))
    old, new = _key(), _key()
    with Client(data_dir=tmp_path / "data", fabric=fabric, vault_key=old) as client:
        vault = protected(client, ["vm01"])
        assert client.wait(client.backup_now(vault, "vm01")).status == "completed"
        [rp] = client.recovery_points(vault, "vm01")
        root = client.settings.vault_store_path / vault
    blocks = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (root / "blocks").rglob("*") if p.is_file()}
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_VAULT_KEY": new,
        "BACKUP_VAULT_KEY_PREVIOUS": old,
    }
    rewrapped = CliRunner().invoke(app, ["key", "rewrap", "--json"], env=env)
    assert rewrapped.exit_code == 0, rewrapped.output
    assert '"rewrapped"' in rewrapped.stdout and vault in rewrapped.stdout
    again = CliRunner().invoke(app, ["key", "rewrap", "--json"], env=env)
    assert again.exit_code == 0 and '"unchanged"' in again.stdout  # a second run finds it done
    assert [p.name for p in (root / "keys").iterdir()] == [f"{key_id(base64.b64decode(new))}.json"]
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in blocks} == blocks  # no block rewritten
    with Client(data_dir=tmp_path / "data", fabric=fabric, vault_key=new) as client:
        job = client.wait(client.restore(rp.recovery_point_id, "vm01", mode="disks", target_dir=str(tmp_path / "out")))
        assert job.status == "completed", job.error_message
        assert (tmp_path / "out" / "vm01" / "vm01-os.img").read_bytes() == disk
        assert client.check_vault(vault)["clean"]
    with Client(data_dir=tmp_path / "data", fabric=fabric, vault_key=old) as client:
        with pytest.raises(OrchestratorError) as refused:
            client.check_vault(vault)
        assert refused.value.code == "VaultKeyWrong"
    missing = CliRunner().invoke(app, ["key", "rewrap"], env={**env, "BACKUP_VAULT_KEY_PREVIOUS": ""})
    assert missing.exit_code != 0 and "VaultKeyMissing" in missing.output


def test_a_block_swapped_for_another_of_the_vault_is_never_restored(tmp_path: Path) -> None:
    disk = _disk(6)
    with Client(data_dir=tmp_path / "data", fabric=inventory(tmp_path, ("vm01", [disk]))) as client:
        vault = protected(client, ["vm01"])
        assert client.wait(client.backup_now(vault, "vm01")).status == "completed"
        [rp] = client.recovery_points(vault, "vm01")
        store = client._runtime.worker_context().vault_store(UUID(vault))
        first, second = sorted(store.block_files())[:2]
        a, b = store.block_path(first), store.block_path(second)
        sealed_a, sealed_b = a.read_bytes(), b.read_bytes()
        a.chmod(0o600)
        a.unlink()
        a.write_bytes(sealed_b)  # a whole, authentic block of the vault, under another name
        job = client.wait(client.restore(rp.recovery_point_id, "vm01", mode="disks", target_dir=str(tmp_path / "out")))
        assert (job.status, job.error_code) == ("failed", "RestoreVerificationFailed")
        assert first[:16] in job.error_message and not (tmp_path / "out" / "vm01").exists()
        verify = client.wait(client.verify(vault))
        assert verify.result["failed"] == 1 and any(first in w["message"] for w in verify.warnings)
        assert sealed_a != sealed_b
