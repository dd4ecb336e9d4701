from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import SettingsError


def test_defaults_are_the_embedded_mode() -> None:
    settings = load_settings({})
    assert settings.event_store == "sqlite"
    assert settings.embedded_queue
    assert settings.data_dir == Path(".backup-orchestrator")
    assert settings.eventsourcing_env()["SQLITE_DBNAME"].endswith("events.sqlite")


def test_postgres_settings_become_eventsourcing_settings() -> None:
    settings = load_settings(
        {"BACKUP_EVENT_STORE": "postgres", "BACKUP_POSTGRES_HOST": "db", "BACKUP_POSTGRES_SCHEMA": "backup"}
    )
    env = settings.eventsourcing_env()
    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_SCHEMA"]) == ("db", "backup")


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("BACKUP_WORKERS", "0", "greater than or equal to 1"),
        ("BACKUP_WORKERS", "many", "valid integer"),
        ("BACKUP_EVENT_STORE", "mysql", "'sqlite' or 'postgres'"),
        ("BACKUP_REDIS_URL", "localhost:6379", "redis://"),
        ("BACKUP_POSTGRES_PORT", "70000", "less than or equal to 65535"),
        ("BACKUP_POSTGRES_SCHEMA", "Bad-Schema", "pattern"),
        ("BACKUP_POLL_INTERVAL", "-1", "greater than 0"),
        ("BACKUP_BLOCK_SIZE", "1000000", "power of two"),
        ("BACKUP_BLOCK_SIZE", "32768", "greater than or equal to 65536"),
        ("BACKUP_BLOCK_SIZE", "8388608", "less than or equal to 4194304"),
    ],
)
def test_a_bad_setting_names_the_variable_and_the_rule(variable: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({variable: value})
    assert caught.value.code == "SettingInvalid"
    assert caught.value.field == variable
    assert variable in caught.value.message and words in caught.value.message


def test_an_unknown_backup_variable_is_refused_rather_than_ignored() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"BACKUP_REDIS_ULR": "redis://x"})
    assert caught.value.code == "SettingUnknown"
    assert "BACKUP_REDIS_URL" in caught.value.message


def test_an_empty_redis_url_means_the_embedded_queue() -> None:
    assert load_settings({"BACKUP_REDIS_URL": ""}).embedded_queue


def test_explicit_overrides_win_over_the_environment(tmp_path: Path) -> None:
    settings = load_settings({"BACKUP_DATA_DIR": "/elsewhere"}, data_dir=tmp_path)
    assert settings.data_dir == tmp_path


def test_the_key_protection_key_is_checked_and_never_echoed() -> None:
    bad = "bm90LWEta2V5"  # base64 of 9 bytes: not an AES key
    with pytest.raises(SettingsError) as caught:
        load_settings({"BACKUP_KEY_PROTECTION_KEY": bad})
    assert caught.value.field == "BACKUP_KEY_PROTECTION_KEY" and "16, 24 or 32 bytes" in caught.value.message
    assert bad not in caught.value.message
    good = "A" * 43 + "="
    settings = load_settings({"BACKUP_KEY_PROTECTION_KEY": good})
    assert settings.key_protection_key is not None and good not in repr(settings)
    assert load_settings({"BACKUP_KEY_PROTECTION_KEY": ""}).key_protection_key is None


def test_the_replay_processes_setting_is_gone() -> None:
    """Replay runs in the calling process: BACKUP_REPLAY_PROCESSES is refused as unknown, naming it."""
    with pytest.raises(SettingsError) as caught:
        load_settings({"BACKUP_REPLAY_PROCESSES": "4"})
    assert caught.value.field == "BACKUP_REPLAY_PROCESSES" and caught.value.code == "SettingUnknown"


def test_a_given_mapping_is_read_alone_and_the_process_environment_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_WORKERS", "7")
    assert load_settings({}).workers == 2  # a test's or another process's variables never mix with ours
    assert load_settings({"BACKUP_JOB_TIMEOUT": "60"}).workers == 2
    assert load_settings().workers == 7
    assert load_settings(workers=3).workers == 3


def test_a_variable_is_read_whatever_the_case_after_its_prefix() -> None:
    assert load_settings({"BACKUP_Poll_Interval": "2"}).poll_interval == 2.0
    assert load_settings({"backup_workers": "5"}).workers == 2  # the prefix itself is upper case


def test_a_none_override_is_no_override(tmp_path: Path) -> None:
    assert load_settings({"BACKUP_DATA_DIR": str(tmp_path)}, data_dir=None, fabric=None).data_dir == tmp_path


def test_an_unknown_override_names_the_variable_it_would_be() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({}, workerz=3)
    assert (caught.value.code, caught.value.field) == ("SettingInvalid", "BACKUP_WORKERZ")


def test_the_block_size_is_the_measured_default_of_the_store_unless_set() -> None:
    assert load_settings({}).backup_block_size == 256 * 1024
    assert load_settings({"BACKUP_BLOCK_SIZE": ""}).backup_block_size == 256 * 1024
    assert load_settings({"BACKUP_S3_BUCKET": "vaults"}).backup_block_size == 1024 * 1024
    assert load_settings({"BACKUP_S3_BUCKET": "vaults", "BACKUP_BLOCK_SIZE": "65536"}).backup_block_size == 65536
