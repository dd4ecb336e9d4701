"""Encryption at rest of the event store through the library's cipher (BACKUP_EVENT_CIPHER_KEY)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import Client
from orchestrator.errors import SettingsError
from orchestrator.write.application import SNAPSHOT_INTERVAL
from tests.helpers import fabric_with

KEY = "u3sQnUNl0e4Xp6yUVi7Jw2zB3H4C6cDq0P2M8eCzXlU="
OTHER = "q1vC8s8o7bd6sV8c3d4Ww1w5j1i2rW0Yy2Kx6Q9dLhA="


def test_events_are_encrypted_at_rest_and_read_back_with_the_key(tmp_path: Path) -> None:
    fabric = fabric_with(tmp_path, healthy=2)
    with Client(data_dir=tmp_path / "data", fabric=fabric, event_cipher_key=KEY, principal="alice") as client:
        vault = client.create_vault("vault-secret-name", "japaneast", "rg-hidden")
        client.wait(client.discover(vault))
        client.wait_all(client.register(vault, ["vm01"]))
        assert [v.name for v in client.vaults()] == ["vault-secret-name"]
        for i in range(SNAPSHOT_INTERVAL):  # a snapshot of the vault, which holds its name too
            client.set_replication(vault, "local" if i % 2 == 0 else "geo")
        assert client.audit_verify().snapshots == 1
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("events.sqlite*"))  # and its WAL
    assert b"backup.snapshot" in stored  # the snapshot row is there (topics are not encrypted)
    for plain in (b"vault-secret-name", b"rg-hidden", b"alice", b"vm01"):
        assert plain not in stored
    assert KEY.encode() not in b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    with Client(data_dir=tmp_path / "data", fabric=fabric, event_cipher_key=KEY) as again:
        assert [v.name for v in again.vaults()] == ["vault-secret-name"]


@pytest.mark.parametrize("key", [None, OTHER])
def test_a_missing_or_wrong_key_is_one_clear_error(tmp_path: Path, key: str | None) -> None:
    fabric = fabric_with(tmp_path, healthy=1)
    with Client(data_dir=tmp_path / "data", fabric=fabric, event_cipher_key=KEY) as client:
        client.create_vault("vault-a", "japaneast", "rg")
    with pytest.raises(SettingsError) as caught:
        Client(data_dir=tmp_path / "data", fabric=fabric, event_cipher_key=key)
    assert caught.value.code == "EventCipherMismatch" and caught.value.field == "BACKUP_EVENT_CIPHER_KEY"


def test_a_plain_store_refuses_a_key(tmp_path: Path) -> None:
    fabric = fabric_with(tmp_path, healthy=1)
    with Client(data_dir=tmp_path / "data", fabric=fabric) as client:
        client.create_vault("vault-a", "japaneast", "rg")
    with pytest.raises(SettingsError, match=r"EventCipher|read back"):
        Client(data_dir=tmp_path / "data", fabric=fabric, event_cipher_key=KEY)
