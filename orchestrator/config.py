"""Settings: the only module that reads the environment. Every variable starts with BACKUP_."""

from __future__ import annotations

import base64
import binascii
import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from orchestrator.domain.names import Principal
from orchestrator.errors import SettingsError

APP_NAME = "Orchestrator"  # the event store's application: the library names its tables and reads its settings by it


@dataclass(frozen=True)
class S3Location:
    """Where the vault stores are on object storage (the BACKUP_S3_* settings): each vault's objects
    under `<prefix>/<vault id>/` of the bucket (workers/objects.py)."""

    bucket: str
    prefix: str = ""
    endpoint: str = ""
    region: str = "us-east-1"
    access_key: str = ""
    secret_key: str = field(default="", repr=False)


PREFIX = "BACKUP_"
# BACKUP_BLOCK_SIZE unset: 256 KiB on a directory vault store, 1 MiB on S3 (measured: bench/README.md).
DIRECTORY_BLOCK_SIZE = 256 * 1024
S3_BLOCK_SIZE = 1024 * 1024
SECRET_SETTINGS = frozenset(
    {"key_protection_key", "event_cipher_key", "token", "audit_key", "s3_secret_key", "vault_key", "vault_key_previous"}
)  # never echoed


class Settings(BaseSettings):
    """What each setting means is in the README's settings table (a test keeps the two in step).

    Build it with `load_settings`: the class itself takes keyword arguments only, so that settings
    read from a given mapping (a test's, another process's) never mix with this process's variables.
    """

    # Defaults are not validated (the OS user as principal is checked only when it is used as one).
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid", validate_default=False)

    data_dir: Path = Path(".backup-orchestrator")
    event_store: Literal["sqlite", "postgres"] = "sqlite"
    postgres_host: str = "127.0.0.1"
    postgres_port: int = Field(5432, ge=1, le=65535)
    postgres_dbname: str = "backup"
    postgres_user: str = "postgres"
    postgres_password: str = ""
    postgres_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    redis_url: str | None = None
    fabric: Path | None = None
    vault_store: Path | None = None
    # The vault store on S3-compatible object storage (workers/objects.py) when a bucket is named:
    # each vault's objects under <prefix>/<vault id>/ in it. Empty endpoint: AWS's for the region.
    s3_bucket: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_prefix: str = Field("", pattern=r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$")
    s3_endpoint: str = Field("", pattern=r"^(https?://[^\s/]+)?$")
    s3_region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    s3_access_key: str = ""
    s3_secret_key: SecretStr | None = None
    # Where the local fabric's disk images may be (os.pathsep-separated absolute directories); empty:
    # the inventory file's directory. The fabric's own state directory (restored VMs) is always one.
    fabric_image_roots: str = ""
    # The QEMU fabric (orchestrator/fabric/qemu.py): the format a VM restored from a QEMU VM's point
    # gets its disks in, and whether the restore starts it.
    qemu_restore_format: Literal["qcow2", "raw"] = "qcow2"
    qemu_start_restored: bool = False
    # qemu-guest-agent: how long it has to answer, the oldest version trusted to freeze, and how long
    # a guest may stay frozen around a capture's instant at most (orchestrator/fabric/agent.py).
    qemu_agent_timeout: float = Field(5.0, gt=0, le=120)
    qemu_agent_min_version: str = Field("2.5", pattern=r"^\d+(\.\d+){0,3}$")
    qemu_freeze_timeout: float = Field(10.0, gt=0, le=600)
    workers: int = Field(2, ge=1, le=32)
    principal: Principal = Field(default_factory=getpass.getuser)
    poll_interval: float = Field(0.1, gt=0, le=10)
    reconcile_interval: float = Field(5.0, gt=0, le=300)
    scheduler_interval: float = Field(30.0, gt=0, le=3600)
    verify_interval_days: int = Field(0, ge=0, le=365)  # a scheduled verify per vault every N days; 0: none
    job_timeout: int = Field(600, ge=10, le=86400)
    collection_wait: float = Field(60.0, ge=0, le=3600)  # seconds collection waits for backups running at its mark
    # The size backups cut disks into (workers/snapshot.py), recorded in each manifest: a power of two,
    # 64 KiB to 4 MiB; unset, `backup_block_size` says (chosen by measurement: bench/README.md).
    block_size: int | None = Field(None, ge=64 * 1024, le=4 * 1024 * 1024)
    aggregate_cache_size: int = Field(10000, ge=0, le=10_000_000)
    key_protection_key: SecretStr | None = None
    event_cipher_key: SecretStr | None = None
    # The key-encryption key of the vault stores' data keys (workers/vaultcrypto.py); unset in the
    # embedded mode: one made in the data dir. The previous one, while `backupctl key rewrap` runs.
    vault_key: SecretStr | None = None
    vault_key_previous: SecretStr | None = None
    # The API service: a client given `url` talks to it (orchestrator/entry/api), with `token`.
    url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    token: SecretStr | None = None
    tls_ca_file: Path | None = None  # the CA bundle a client checks the service's certificate with
    tls_cert_file: Path | None = None  # the service's certificate (PEM), to serve HTTPS
    tls_key_file: Path | None = None  # its private key (PEM)
    # The audit trail's anchor outside the database: every event sealed with the key, signed heads of
    # the hash chain appended to the witness directory (projections/witness.py).
    audit_key: SecretStr | None = None
    audit_witness: Path | None = None

    @field_validator("key_protection_key", "event_cipher_key", "audit_key", "vault_key", "vault_key_previous")
    @classmethod
    def _aes_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        try:
            size = len(base64.b64decode(value.get_secret_value(), validate=True))
        except binascii.Error:
            raise ValueError("must be base64 (make one with `backupctl key generate`)") from None
        if size not in (16, 24, 32):
            raise ValueError(f"must decode to 16, 24 or 32 bytes, not {size}")
        return value

    @field_validator("block_size", mode="before")
    @classmethod
    def _block_size_set(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and value & (value - 1):
            raise ValueError("must be a power of two (65536, 131072, ... 4194304)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if info.data.get("event_store", "sqlite") == "sqlite":
            raise ValueError(
                "needs BACKUP_EVENT_STORE=postgres: an SQLite event store belongs to the one "
                "process that holds its data dir (the embedded mode, with its own queue)"
            )
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir(cls, value: object) -> object:
        text = str(value) if isinstance(value, (str, os.PathLike)) else None
        if text is not None and not text.strip():
            raise ValueError("must name a directory (empty would be the current directory)")
        if text is not None and "\0" in text:
            raise ValueError("must not hold a NUL character")
        if text is not None and os.path.lexists(text) and not os.path.isdir(text):
            raise ValueError("exists and is not a directory")
        return value

    @field_validator("s3_bucket", mode="before")
    @classmethod
    def _bucket_set(cls, value: object) -> object:
        return None if value == "" else value  # empty: the vault store is a directory

    @field_validator("audit_witness", mode="before")
    @classmethod
    def _witness_set(cls, value: object) -> object:
        return None if value == "" else value  # empty: off (compose passes an unset variable so)

    @field_validator("audit_witness")
    @classmethod
    def _witness(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        if info.data.get("audit_key") is None:
            raise ValueError("needs BACKUP_AUDIT_KEY: the witness's heads are signed with it")
        if not value.is_absolute() or "\0" in str(value):
            raise ValueError("must be an absolute directory")
        witness = Path(os.path.realpath(value))
        for name in ("data_dir", "vault_store"):
            held = info.data.get(name)
            if held is not None and witness.is_relative_to(os.path.realpath(held)):
                raise ValueError(f"must be outside BACKUP_{name.upper()}: whoever can write the data must not reach it")
        return value

    @field_validator("fabric_image_roots")
    @classmethod
    def _roots(cls, value: str) -> str:
        for root in filter(None, value.split(os.pathsep)):
            if not os.path.isabs(root) or "\0" in root:
                raise ValueError(f"{root!r} is not an absolute directory")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # load_settings reads the variables, through VariablesSource

    def image_roots_for(self) -> tuple[Path, ...]:
        """The directories the local fabric's disk images may be under (BACKUP_FABRIC_IMAGE_ROOTS, else
        the inventory's directory)."""
        roots = [Path(root) for root in self.fabric_image_roots.split(os.pathsep) if root]
        return tuple(roots) or (self.fabric_path.parent,)

    @property
    def embedded_queue(self) -> bool:
        return self.redis_url is None

    @property
    def fabric_path(self) -> Path:
        """The inventory file: BACKUP_FABRIC, else the one `backupctl fabric init` writes."""
        return self.fabric or self.data_dir / "fabric" / "inventory.yaml"

    @property
    def backup_block_size(self) -> int:
        """What backups cut disks into: BACKUP_BLOCK_SIZE, else the measured default of the store."""
        if self.block_size is not None:
            return self.block_size
        return S3_BLOCK_SIZE if self.s3_bucket is not None else DIRECTORY_BLOCK_SIZE

    @property
    def vault_store_path(self) -> Path:
        """Backup data: BACKUP_VAULT_STORE (shared storage when distributed), else the data dir."""
        return self.vault_store or self.data_dir / "vaultstore"

    @property
    def s3_location(self) -> S3Location | None:
        """The vault stores' object storage, when BACKUP_S3_BUCKET names a bucket."""
        if self.s3_bucket is None:
            return None
        return S3Location(
            bucket=self.s3_bucket,
            prefix=self.s3_prefix,
            endpoint=self.s3_endpoint,
            region=self.s3_region,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key.get_secret_value() if self.s3_secret_key else "",
        )

    def eventsourcing_env(self) -> dict[str, str]:
        """The event store's settings in the eventsourcing library's terms."""
        cipher = (
            {}
            if self.event_cipher_key is None
            else {
                "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
                "CIPHER_KEY": self.event_cipher_key.get_secret_value(),
            }
        )
        # Each process keeps up to this many aggregates and reads only their newer events from
        # the store (the library's fast-forwarding cache); 0 turns the cache off.
        cache = {"AGGREGATE_CACHE_MAXSIZE": str(self.aggregate_cache_size)} if self.aggregate_cache_size else {}
        # Read by Orchestrator.construct_mapper: every event sealed with it. Always given (empty: none),
        # so that a variable of that name in the environment, which the library also reads, is not.
        cipher = {**cipher, "AUDIT_KEY": self.audit_key.get_secret_value() if self.audit_key else ""}
        if self.event_store == "sqlite":
            return {
                **cache,
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.data_dir / "events.sqlite"),
                "SQLITE_LOCK_TIMEOUT": "30",
                **cipher,
            }
        return {
            **cipher,
            **cache,
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.postgres_dbname,
            "POSTGRES_HOST": self.postgres_host,
            "POSTGRES_PORT": str(self.postgres_port),
            "POSTGRES_USER": self.postgres_user,
            "POSTGRES_PASSWORD": self.postgres_password,
            "POSTGRES_SCHEMA": self.postgres_schema,
            "POSTGRES_POOL_SIZE": "1",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_CONNECT_TIMEOUT": "3",  # waiting for a pooled connection; the library retries 10 times
            "POSTGRES_PRE_PING": "y",  # a connection the server dropped (restart) is replaced, not used
        }


class VariablesSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping of variables (os.environ, or a
    test's): it matches BACKUP_<FIELD> names to the fields, case aside, as the library does."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(Settings, case_sensitive=False)
        self.env_vars = {key.lower(): value for key, value in environ.items() if key.startswith(PREFIX)}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from BACKUP_* variables (and explicit overrides, which win; None is no override).

    An unknown BACKUP_ variable or a bad value raises SettingsError naming the variable.
    """
    env = os.environ if environ is None else environ
    known = [PREFIX + name.upper() for name in Settings.model_fields]
    for key in env:
        if key.startswith(PREFIX) and key.upper() not in known:
            raise SettingsError("SettingUnknown", f"{key} is not a setting; known: {', '.join(known)}", field=key)
    values = {**VariablesSource(env)(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        shown = "(hidden)" if name in SECRET_SETTINGS else repr(values.get(name))
        raise SettingsError(
            "SettingInvalid",
            f"{PREFIX}{name.upper()}={shown}: {err['msg']}",
            field=PREFIX + name.upper(),
        ) from None
