"""Bad input gets a coded error naming the field and writes nothing; the client sends operators'
commands only; the data dir and what is in it are private (issue 14, findings 5, 6, 7, 9 and 20)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from typer.testing import CliRunner

from orchestrator import Client, OrchestratorError
from orchestrator.config import load_settings
from orchestrator.entry.cli.main import app
from orchestrator.write import commands as c
from tests.helpers import event_count

runner = CliRunner()


def _refused(client: Client, call: Any, code: str, field: str | None = None) -> OrchestratorError:
    before = event_count(client)
    with pytest.raises(OrchestratorError) as caught:
        call()
    assert caught.value.code == code, caught.value
    if field is not None:
        assert caught.value.field == field, caught.value
    assert event_count(client) == before  # nothing stored
    return caught.value


@pytest.mark.parametrize(
    ("subscription", "rule"),
    [
        ("a\x00b", "characters"),
        ("../x", "first_character"),
        ("x\ny", "characters"),
        ("s" * 500, "length"),
        ("", "required"),
        ("sub/x", "characters"),
    ],
)
def test_finding_5_a_subscription_follows_its_rule(client: Client, subscription: str, rule: str) -> None:
    error = _refused(
        client,
        lambda: client.create_vault("vault-a", "japaneast", "rg", subscription),
        "SubscriptionInvalid",
        "subscription",
    )
    assert error.details[0]["rule"] == rule


@pytest.mark.parametrize(("name", "rule"), [("ab-", "last_character"), ("a" * 51, "length"), ("ab\n", "characters")])
def test_finding_5_a_vault_name_follows_its_rule(client: Client, name: str, rule: str) -> None:
    error = _refused(client, lambda: client.create_vault(name, "japaneast", "rg"), "VaultNameInvalid", "name")
    assert error.details[0]["rule"] == rule


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda cl, v: cl.register(v, ["vm01\n"]), "VmNameInvalid"),
        (lambda cl, v: cl.register(v, ["../vm01"]), "VmNameInvalid"),
        (lambda cl, v: cl.protect(v, ["vm01"], policy="x\ny"), "PolicyNameInvalid"),
        (lambda cl, v: cl.backup_now(v, "vm\x0001"), "VmNameInvalid"),
        (
            lambda cl, v: cl.create_policy(
                v, "Nightly\n", {"frequency": "daily", "times": ["01:00"]}, {"daily": {"days": 30}}
            ),
            "PolicyNameInvalid",
        ),
        (lambda cl, v: cl.create_vault("vault-b", "japaneast", "rg\n"), "ResourceGroupInvalid"),
    ],
)
def test_finding_5_one_name_type_per_kind_is_used_by_every_command(
    client: Client, discovered_vault: str, call: Any, code: str
) -> None:
    _refused(client, lambda: call(client, discovered_vault), code)


@pytest.mark.parametrize(
    "principal", ["ops\nforged line", "worker:ops", "system:scheduler", "System:x", "", "a" * 201, "ops\x1b[31m"]
)
def test_finding_6_an_operator_principal_is_validated_and_cannot_pose_as_the_product(
    tmp_path: Path, fabric: Path, principal: str
) -> None:
    with pytest.raises(OrchestratorError) as caught:
        load_settings({"BACKUP_PRINCIPAL": principal})
    assert (caught.value.code, caught.value.field) == ("SettingInvalid", "BACKUP_PRINCIPAL")
    with pytest.raises(OrchestratorError) as caught:
        Client(data_dir=tmp_path / "data", fabric=fabric, principal=principal)
    assert caught.value.code == "SettingInvalid"
    assert not (tmp_path / "data").exists()


def test_finding_7_the_client_sends_no_worker_report(client: Client, discovered_vault: str) -> None:
    assert not hasattr(client, "runtime")  # no public way to the application behind the client
    job_id = client.discover(discovered_vault)
    client.wait(job_id)
    reports = [
        (c.CompleteJob, {"job_id": job_id}),
        (c.FailJob, {"job_id": job_id, "error_code": "X", "error_message": "forged"}),
        (c.StartJob, {"job_id": job_id, "worker": "mallory"}),
        (
            c.RecordBackupTaken,
            {
                "job_id": job_id,
                "taken_at": datetime.now(UTC),
                "consistency": "crash",
                "logical_bytes": 1,
                "stored_bytes": 1,
                "manifest_digest": "0" * 64,
                "disks": [],
            },
        ),
    ]
    for command, values in reports:
        _refused(client, lambda command=command, values=values: client._do(command, **values), "CommandNotAllowed")


def test_finding_7_the_application_takes_a_report_from_a_worker_only(client: Client, discovered_vault: str) -> None:
    client._runtime.close_workers()
    job_id = UUID(client.discover(discovered_vault))
    app = client._runtime.app
    for principal in ("alice@example.com", "system:scheduler"):
        _refused(
            client, lambda principal=principal: app.handle(c.CompleteJob(job_id=job_id), principal), "CommandNotAllowed"
        )
    _refused(
        client,
        lambda: app.handle(c.CreateVault(name="vault-w", region="japaneast", resource_group="rg"), "worker:ops"),
        "CommandNotAllowed",
    )
    app.handle(c.CompleteJob(job_id=job_id), "worker:ops")  # the workers' own path
    assert client.wait(str(job_id)).status == "completed"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_finding_9_the_data_dir_is_private_and_so_is_every_file_in_it(client: Client, discovered_vault: str) -> None:
    data = client.settings.data_dir
    assert _mode(data) == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"events.sqlite", "readmodels.sqlite", "runtime.lock"}
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_finding_9_an_older_wider_data_dir_is_made_private(tmp_path: Path, fabric: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "events.sqlite").touch(mode=0o644)
    with Client(data_dir=data, fabric=fabric, principal="alice"):
        assert _mode(data) == 0o700 and _mode(data / "events.sqlite") == 0o600


def test_finding_9_the_fabrics_state_files_are_private(client: Client, discovered_vault: str, fabric: Path) -> None:
    client.wait_all(client.register(discovered_vault, ["vm01"]))  # installs the extension: a state file
    state = fabric.parent / "state"
    assert _mode(state) == 0o700 and [p for p in state.iterdir() if p.is_file()]
    assert {_mode(p) for p in state.iterdir() if p.is_file()} == {0o600}


@pytest.mark.parametrize("zone", ["x" * 300, "Asia", "../../etc/passwd", "Asia/Tokyo\n", "UTC\x00"])
def test_finding_20_a_time_zone_that_is_not_a_zone_is_time_zone_unknown(
    client: Client, discovered_vault: str, zone: str
) -> None:
    _refused(
        client,
        lambda: client.create_policy(
            discovered_vault,
            "Nightly",
            {"frequency": "daily", "times": ["01:00"]},
            {"daily": {"days": 30}},
            timezone=zone,
        ),
        "TimeZoneUnknown",
        "timezone",
    )


@pytest.fixture
def protected(client: Client, discovered_vault: str) -> str:
    client.wait_all(client.register(discovered_vault, ["vm01"]))
    client.wait_all(client.protect(discovered_vault, ["vm01"]))
    return discovered_vault


def test_finding_20_retain_until_must_be_a_time_with_its_zone(client: Client, protected: str) -> None:
    naive = datetime.now() + timedelta(days=3)
    _refused(client, lambda: client.backup_now(protected, "vm01", naive), "RetainUntilInvalid", "retain_until")
    _refused(
        client,
        lambda: client.backup_now(protected, "vm01", "2099-01-01"),
        "CommandInvalid",  # type: ignore[arg-type]
        "retain_until",
    )


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda cl, v: cl.dashboard(now="yesterday"), "now"),
        (lambda cl, v: cl.dashboard(now=datetime.now()), "now"),
        (lambda cl, v: cl.recovery_points(v, vm_name=["vm01"]), "vm_name"),
        (lambda cl, v: cl.history(start=["2026"]), "start"),
        (
            lambda cl, v: cl.update_policy(v, 3, {"frequency": "daily", "times": ["01:00"]}, {"daily": {"days": 30}}),
            "name",
        ),
        (lambda cl, v: cl.register(v, None), "vm_names"),
        (lambda cl, v: cl.protect(v, 1.5), "vm_names"),
        (lambda cl, v: cl.register(v, "vm01"), "vm_names"),  # a string is not a list of names
        (lambda cl, v: cl.wait(str(uuid4()), timeout=float("nan")), "timeout"),
        (lambda cl, v: cl.stop_protection(v, "vm01", delete_data="yes"), "delete_data"),
        (lambda cl, v: cl.restore(str(uuid4()), "vm01-r", target_dir=3), "target_dir"),
    ],
)
def test_finding_20_the_clients_edge_takes_strict_types(
    client: Client, discovered_vault: str, call: Any, field: str
) -> None:
    _refused(client, lambda: call(client, discovered_vault), "CommandInvalid", field)


@pytest.mark.parametrize(
    ("retention", "code"),
    [
        ({"daily": {"days": True}}, "CommandInvalid"),
        ({"daily": {"days": "30"}}, "CommandInvalid"),
        ({"daily": {"days": 30.0}}, "CommandInvalid"),
        ({"daily": {"days": 30}, "monthly": {"on": {"days": [1, 1]}, "months": 2}}, "RetentionSelectorInvalid"),
        (
            {
                "daily": {"days": 30},
                "monthly": {"on": {"weeks": ["first", "first"], "weekdays": ["sunday"]}, "months": 2},
            },
            "RetentionSelectorInvalid",
        ),
        (
            {"daily": {"days": 30}, "yearly": {"months_of_year": [1, 1], "on": {"days": ["last"]}, "years": 2}},
            "RetentionSelectorInvalid",
        ),
    ],
)
def test_finding_20_retention_counts_are_numbers_and_selectors_distinct(
    client: Client, discovered_vault: str, retention: dict[str, Any], code: str
) -> None:
    _refused(
        client,
        lambda: client.create_policy(
            discovered_vault, "Nightly", {"frequency": "daily", "times": ["01:00"]}, retention
        ),
        code,
    )


def test_finding_20_a_schedule_time_is_not_a_number(client: Client, discovered_vault: str) -> None:
    _refused(
        client,
        lambda: client.create_policy(
            discovered_vault, "Nightly", {"frequency": "daily", "times": [3600]}, {"daily": {"days": 30}}
        ),
        "CommandInvalid",
    )


def test_finding_20_a_data_dir_that_is_a_file_or_empty_is_a_bad_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    for value in (str(tmp_path / "file"), "", "  "):
        with pytest.raises(OrchestratorError) as caught:
            load_settings({"BACKUP_DATA_DIR": value})
        assert (caught.value.code, caught.value.field) == ("SettingInvalid", "BACKUP_DATA_DIR")


def test_finding_20_a_real_queue_on_the_embedded_store_is_a_bad_setting() -> None:
    with pytest.raises(OrchestratorError) as caught:
        load_settings({"BACKUP_REDIS_URL": "redis://127.0.0.1:6379/15"})
    assert (caught.value.code, caught.value.field) == ("SettingInvalid", "BACKUP_REDIS_URL")


def test_finding_20_a_second_process_on_an_sqlite_data_dir_is_refused_with_or_without_services(
    client: Client, tmp_path: Path, fabric: Path
) -> None:
    for start_services in (True, False):
        with pytest.raises(OrchestratorError) as caught:
            Client(data_dir=client.settings.data_dir, fabric=fabric, principal="bob", start_services=start_services)
        assert caught.value.code == "DataDirInUse"


@pytest.fixture
def env(tmp_path: Path, fabric: Path) -> dict[str, str]:
    return {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_PRINCIPAL": "ops",
        "COLUMNS": "200",
    }


@pytest.mark.parametrize(
    ("target", "code"), [("{tmp}/a-file", "TargetDirInvalid"), ("/proc/self", "TargetDirForbidden")]
)
def test_finding_20_disks_to_a_file_or_the_kernels_directory_is_refused_at_once(
    env: dict[str, str], tmp_path: Path, target: str, code: str
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    result = runner.invoke(
        app, ["restore", str(uuid4()), "--target", "vm01-r", "--disks-to", target.format(tmp=tmp_path)], env=env
    )
    assert result.exit_code == 2 and f"[{code}]" in result.output, result.output


@pytest.mark.parametrize("where", ["{tmp}/no/such/dir/out.jsonl", "{tmp}/exists.jsonl", "{tmp}"])
def test_finding_20_an_audit_export_to_a_bad_path_is_a_coded_error(
    env: dict[str, str], tmp_path: Path, where: str
) -> None:
    (tmp_path / "exists.jsonl").write_text("keep\n")
    result = runner.invoke(app, ["audit", "log", "--jsonl", where.format(tmp=tmp_path)], env=env)
    assert result.exit_code == 2 and "[ExportPathInvalid]" in result.output, result.output
    assert (tmp_path / "exists.jsonl").read_text() == "keep\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_finding_20_a_usage_mistake_on_the_command_line_is_coded(env: dict[str, str]) -> None:
    for args in (
        ["jobs", "--start", "not-a-time"],
        ["wait", "--timeout", "x", "y"],
        ["vault", "create"],
        ["--no-such-option"],
    ):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2 and "[CommandInvalid]" in result.output, (args, result.output)


def test_finding_2_a_relative_disks_to_is_the_operators_directory_not_the_workers(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["restore", str(uuid4()), "--target", "vm01-r", "--disks-to", "out"], env=env)
    assert result.exit_code == 2 and "[RecoveryPointNotFound]" in result.output, (
        result.output
    )  # past the directory check
    result = runner.invoke(app, ["restore", str(uuid4()), "--target", "vm01-r", "--disks-to", "data"], env=env)
    assert result.exit_code == 2 and "[TargetDirForbidden]" in result.output, result.output  # ./data is the data dir
