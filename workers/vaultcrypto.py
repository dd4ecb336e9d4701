"""Compression and encryption at rest for a vault's store.

Each vault has a data key of its own (32 random bytes), made with the vault's first write and kept
in the store only wrapped (AES-256-GCM) under the key-encryption key, BACKUP_VAULT_KEY, which is
never stored with the data: `keys/<key id>.json`, the key id derived from the key-encryption key
(so a wrong key is told from a missing wrapping without trying it on data). From the data key come,
by HKDF-SHA256, two keys:

- the naming key: a block is named by HMAC-SHA256(naming key, its plaintext), so someone holding
  only the store cannot confirm a guess of a block's content by hashing it (an unkeyed digest
  would let them);
- the sealing key: each block is compressed with zstd (kept as it is when that saves nothing) and
  encrypted with AES-256-GCM under a random 96-bit nonce, its name as associated data, so a block
  cannot be replaced by another of the same vault unnoticed; manifests the same, with their
  recovery point's id.

A block read back is authenticated, decompressed and its name checked against its plaintext: a
wrong key or a changed byte is an error, never data. Rotating the key-encryption key rewraps each
vault's data key (`keys/<new id>.json` written, then the old one removed); no block is rewritten.
Random nonces under one key stay safe for 2**32 messages: 16 PiB of 4 MiB blocks per vault.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from orchestrator import safefs
from orchestrator.errors import OrchestratorError
from workers.objects import ObjectMissing, Objects

if TYPE_CHECKING:
    from orchestrator.config import Settings

KEYS = "keys/"
Block = bytes | bytearray | memoryview  # a block's content, as read (a reused buffer) or stored
_BLOCK, _MANIFEST = b"B1", b"M1"  # the formats of a sealed block and a sealed manifest
_RAW, _ZSTD = 0, 1
_NONCE = 12
SEAL_OVERHEAD = 3 + _NONCE + 16  # a stored block's bytes beyond its (compressed) content: header, nonce, tag
_ZSTD_LEVEL = 1  # measured: level 1 already takes the zeros and repeats of disk data at GB/s


def key_id(kek: bytes) -> str:
    """The name of the data key's wrapping under `kek`: tells which key-encryption key it needs."""
    return hmac.new(kek, b"backup-orchestrator vault key id", hashlib.sha256).hexdigest()[:16]


class VaultCipher:
    """A vault's data key, opened with the key-encryption key: names, seals and opens its objects.
    Thread-safe (each thread keeps its own compressor)."""

    def __init__(self, data_key: bytes) -> None:
        self._naming = _derive(data_key, b"block names")
        self._sealing = AESGCM(_derive(data_key, b"sealing"))
        self._local = threading.local()

    def name(self, data: Block) -> str:
        return hmac.digest(self._naming, data, "sha256").hex()

    def seal_block(self, name: str, data: Block) -> bytes:
        packed = self._compressor().compress(data)
        kind = _ZSTD if len(packed) < len(data) else _RAW
        return self._seal(_BLOCK + bytes([kind]), b"block:" + name.encode(), packed if kind == _ZSTD else data)

    def open_block(self, name: str, sealed: bytes) -> bytes:
        """The block's plaintext; ValueError when it is not this vault's block `name` unchanged."""
        header, body = sealed[:3], sealed[3:]
        if header[:2] != _BLOCK or len(header) < 3 or header[2] not in (_RAW, _ZSTD):
            raise ValueError(f"block {name} is not a sealed block")
        data = self._open(body, b"block:" + name.encode(), sealed[:3], f"block {name}")
        if header[2] == _ZSTD:
            data = self._decompressor().decompress(data)
        if not hmac.compare_digest(self.name(data), name):
            raise ValueError(f"block {name} is corrupt (its content is not its name)")
        return data

    def seal_manifest(self, recovery_point_id: str, data: bytes) -> bytes:
        return self._seal(_MANIFEST, b"manifest:" + recovery_point_id.encode(), data)

    def open_manifest(self, recovery_point_id: str, sealed: bytes) -> bytes:
        if sealed[:2] != _MANIFEST:
            raise ValueError(f"the manifest of {recovery_point_id} is not a sealed manifest")
        return self._open(
            sealed[2:], b"manifest:" + recovery_point_id.encode(), _MANIFEST, f"the manifest of {recovery_point_id}"
        )

    def _seal(self, header: bytes, context: bytes, data: Block) -> bytes:
        nonce = os.urandom(_NONCE)
        return header + nonce + self._sealing.encrypt(nonce, data, header + context)

    def _open(self, body: bytes, context: bytes, header: bytes, what: str) -> bytes:
        try:
            return self._sealing.decrypt(body[:_NONCE], body[_NONCE:], header + context)
        except (InvalidTag, ValueError):
            raise ValueError(f"{what} is corrupt or not of this vault (it does not authenticate)") from None

    def _compressor(self) -> Any:
        if not hasattr(self._local, "compressor"):
            import zstandard

            self._local.compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
            self._local.decompressor = zstandard.ZstdDecompressor()
        return self._local.compressor

    def _decompressor(self) -> Any:
        self._compressor()
        return self._local.decompressor


def _derive(data_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"backup-orchestrator " + purpose).derive(
        data_key
    )


class VaultKeys:
    """The data key of the vault whose store is `objects`, under the key-encryption key `kek`."""

    def __init__(self, objects: Objects, kek: bytes, vault_id: str) -> None:
        self.objects, self.kek, self.vault_id = objects, kek, vault_id
        self._cipher: VaultCipher | None = None
        self._opening = threading.Lock()

    def cipher(self, create: bool) -> VaultCipher | None:
        """The vault's cipher; None when the vault has no data key yet and `create` is false (a
        store with nothing in it). `VaultKeyWrong` when its data key is wrapped by another key."""
        with self._opening:
            if self._cipher is None:
                data_key = self._read() if not create else self._read_or_make()
                if data_key is not None:
                    self._cipher = VaultCipher(data_key)
            return self._cipher

    def _read(self) -> bytes | None:
        name = f"{KEYS}{key_id(self.kek)}.json"
        try:
            return unwrap(self.kek, self.vault_id, self.objects.read(name))
        except ObjectMissing:
            pass
        listed = [n for n in self.objects.sizes("keys") if n.endswith(".json")]
        if name in listed:  # made by another writer's first write since the read above
            return unwrap(self.kek, self.vault_id, self.objects.read(name))
        others = [n for n in listed if n != name]
        if others:
            raise OrchestratorError(
                "VaultKeyWrong",
                f"the data key of vault {self.vault_id} in {self.objects.where} is wrapped by another key "
                f"({', '.join(sorted(others)[:3])}), not by BACKUP_VAULT_KEY (key id {key_id(self.kek)}): set the "
                "key the vault was written with (or, to change keys, both it as BACKUP_VAULT_KEY_PREVIOUS and the "
                "new one, and run `backupctl key rewrap`); nothing was read or written",
            )
        return None

    def _read_or_make(self) -> bytes:
        found = self._read()
        if found is not None:
            return found
        data_key = os.urandom(32)
        mine = f"{KEYS}{key_id(self.kek)}.json"
        if not self.objects.create(mine, wrap(self.kek, self.vault_id, data_key)):
            made = self._read()  # another writer's first write made it at the same time
            assert made is not None
            return made
        self.objects.durable()
        if [n for n in self.objects.sizes("keys") if n.endswith(".json") and n != mine]:
            # A writer under another key-encryption key made one at the same time: neither is used
            # (nothing is sealed under them yet); this one is refused with VaultKeyWrong.
            self.objects.delete(mine)
            self._read()
        return data_key

    def rewrap(self, new_kek: bytes) -> bool:
        """Wrap the data key under `new_kek` too, then remove the old wrapping; False when the vault
        has no data key (nothing written yet) or is wrapped under `new_kek` already."""
        if key_id(new_kek) == key_id(self.kek):
            return False
        try:
            data_key = unwrap(self.kek, self.vault_id, self.objects.read(f"{KEYS}{key_id(self.kek)}.json"))
        except ObjectMissing:
            if self.objects.exists(f"{KEYS}{key_id(new_kek)}.json"):
                return False  # rewrapped by an earlier run
            self._read()  # VaultKeyWrong when wrapped by a third key; None: nothing written yet
            return False
        self.objects.create(f"{KEYS}{key_id(new_kek)}.json", wrap(new_kek, self.vault_id, data_key))
        self.objects.durable()  # the new wrapping on disk before the old one goes
        if unwrap(new_kek, self.vault_id, self.objects.read(f"{KEYS}{key_id(new_kek)}.json")) != data_key:
            raise OrchestratorError(
                "VaultKeyWrong", f"vault {self.vault_id} holds another data key under the new key: nothing was changed"
            )
        self.objects.delete(f"{KEYS}{key_id(self.kek)}.json")
        return True


def wrap(kek: bytes, vault_id: str, data_key: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    wrapped = AESGCM(kek).encrypt(nonce, data_key, b"vault data key:" + vault_id.encode())
    document = {
        "format": 1,
        "vault_id": vault_id,
        "key_id": key_id(kek),
        "nonce": base64.b64encode(nonce).decode(),
        "wrapped": base64.b64encode(wrapped).decode(),
    }
    return json.dumps(document).encode()


def unwrap(kek: bytes, vault_id: str, document: bytes) -> bytes:
    try:
        parsed = json.loads(document)
        nonce, wrapped = base64.b64decode(parsed["nonce"]), base64.b64decode(parsed["wrapped"])
        return AESGCM(kek).decrypt(nonce, wrapped, b"vault data key:" + vault_id.encode())
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise OrchestratorError(
            "VaultKeyWrong",
            f"the data key of vault {vault_id} does not open with BACKUP_VAULT_KEY (key id {key_id(kek)}): its "
            "wrapping was changed or written under another key; nothing was read or written",
        ) from None


def vault_kek(settings: Settings) -> bytes:
    """The key-encryption key: BACKUP_VAULT_KEY; unset with the embedded queue (the workers are this
    process's threads), the one made in the data dir (`vault.key`, 0600, outside the vault store)
    the first time; unset with Redis, `VaultKeyMissing` (every worker, service and client of a
    distributed deployment must hold the same key)."""
    if settings.vault_key is not None:
        return base64.b64decode(settings.vault_key.get_secret_value())
    if settings.redis_url is not None:
        raise OrchestratorError(
            "VaultKeyMissing",
            "BACKUP_VAULT_KEY is not set: a distributed deployment needs the same key-encryption key in every "
            "worker, service and client (make one with `backupctl key generate`); it wraps each vault's data key",
            field="BACKUP_VAULT_KEY",
        )
    path = safefs.make_dirs(settings.data_dir, link_ok=True) / "vault.key"
    safefs.write_new(path, base64.b64encode(os.urandom(32)) + b"\n")  # False: made before (or meanwhile)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            kek = base64.b64decode(f.read().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise OrchestratorError(
            "VaultKeyMissing", f"{path} (the embedded mode's vault key) cannot be read: {exc}", field="BACKUP_VAULT_KEY"
        ) from None
    if len(kek) != 32:
        raise OrchestratorError("VaultKeyMissing", f"{path} does not hold a 32-byte key", field="BACKUP_VAULT_KEY")
    return kek


def previous_kek(settings: Settings) -> bytes:
    if settings.vault_key_previous is None:
        raise OrchestratorError(
            "VaultKeyMissing",
            "BACKUP_VAULT_KEY_PREVIOUS is not set: rewrapping needs the key the vaults were written with there, and "
            "the new one as BACKUP_VAULT_KEY",
            field="BACKUP_VAULT_KEY_PREVIOUS",
        )
    return base64.b64decode(settings.vault_key_previous.get_secret_value())
