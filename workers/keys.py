"""Key material kept with the recovery points of encrypted VMs.

A backup of an encrypted VM takes the VM's disk key (the BEK secret) and, when it has one, its key
encryption key (KEK) from the key vault, and keeps them inside the recovery point's manifest,
encrypted with AES-GCM under BACKUP_KEY_PROTECTION_KEY (the eventsourcing library's cipher). That
key comes from the settings only, never from the data dir or the vault store, so a copy of the
vault store alone reveals nothing. Key bytes never leave this module other than to the fabric.
"""

from __future__ import annotations

import base64
import json

from eventsourcing.cryptography import AESCipher
from eventsourcing.utils import Environment
from pydantic import SecretStr

from orchestrator.domain.values import EncryptionKeys
from orchestrator.errors import OrchestratorError

SETTING = "BACKUP_KEY_PROTECTION_KEY"


class KeyProtector:
    def __init__(self, key: SecretStr | None) -> None:
        self._cipher = AESCipher(Environment(env={AESCipher.CIPHER_KEY: key.get_secret_value()})) if key else None

    @property
    def configured(self) -> bool:
        return self._cipher is not None

    def seal(self, names: EncryptionKeys, material: dict[str, bytes]) -> str:
        """The material, encrypted, as text for the manifest."""
        plain = json.dumps(
            {"names": names.model_dump(), **{k: base64.b64encode(v).decode() for k, v in material.items()}}
        )
        return base64.b64encode(self._require().encrypt(plain.encode())).decode()

    def open(self, sealed: str) -> dict[str, bytes]:
        """`{"bek_secret": ..., "kek_key": ...}` back from `seal`'s text."""
        try:
            plain = self._require().decrypt(base64.b64decode(sealed))
        except ValueError:
            raise OrchestratorError(
                "KeyProtectionKeyWrong",
                (
                    f"the recovery point's keys do not open with this {SETTING}: it was backed up under "
                    "another key; set the key that was in use then"
                ),
            ) from None
        data = json.loads(plain)
        return {k: base64.b64decode(v) for k, v in data.items() if k != "names"}

    def _require(self) -> AESCipher:
        if self._cipher is None:
            raise OrchestratorError(
                "KeyProtectionNotConfigured",
                (
                    f"{SETTING} is not set: encrypted VMs' keys are kept encrypted under it. Make one with "
                    "`backupctl key generate` and keep it outside the data dir and the vault store"
                ),
                field=SETTING,
            )
        return self._cipher
