from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.entry.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, fabric: Path) -> dict[str, str]:
    return {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_PRINCIPAL": "ops",
        "COLUMNS": "200",
    }


def _json(args: list[str], env: dict[str, str]) -> object:
    result = runner.invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_operator_flow_through_the_cli(env: dict[str, str]) -> None:
    created = _json(["vault", "create", "vault-east", "--region", "japaneast", "-g", "rg"], env)
    assert "vault_id" in created  # type: ignore[operator]
    discovered = _json(["discover", "vault-east"], env)
    assert "vm01" in discovered["new_vms"]  # type: ignore[index]
    jobs = _json(["register", "vm01", "noagent", "--vault", "vault-east"], env)
    assert [(j["vm_name"], j["status"], j["error_code"]) for j in jobs] == [  # type: ignore[union-attr]
        ("vm01", "completed", ""),
        ("noagent", "failed", "VmAgentNotInstalled"),
    ]
    failed = _json(["jobs", "--status", "failed"], env)
    assert [j["vm_name"] for j in failed] == ["noagent"]  # type: ignore[union-attr]
    items = _json(["items", "vault-east"], env)
    assert [i["vm_name"] for i in items] == ["vm01"]  # type: ignore[union-attr]
    table = runner.invoke(app, ["jobs", "--operation", "register"], env=env)
    assert table.exit_code == 0 and "VmAgentNotInst" in table.output


def test_a_refused_command_prints_its_code_and_exits_2(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["vault", "create", "1bad", "--region", "japaneast", "-g", "rg"], env=env)
    assert result.exit_code == 2
    assert "VaultNameInvalid" in result.output


def test_an_unknown_vault_name_is_reported(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["items", "nowhere"], env=env)
    assert result.exit_code == 2 and "VaultNotFound" in result.output


def test_a_bad_setting_is_reported_with_its_variable(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["jobs"], env={**env, "BACKUP_WORKERS": "zero"})
    assert result.exit_code == 2 and "BACKUP_WORKERS" in result.output


def test_fabric_init_writes_a_usable_sample(tmp_path: Path) -> None:
    result = runner.invoke(app, ["fabric", "init", str(tmp_path / "f")])
    assert result.exit_code == 0
    assert (tmp_path / "f" / "inventory.yaml").is_file()


def test_the_demo_runs_the_flow_on_the_embedded_default(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--dir", str(tmp_path / "demo")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Discovery found 7 new VMs" in result.output
    assert "VmAgentNotInstalled" in result.output and "VmAlreadyRegistered" in result.output
    assert "6 registered" in result.output
    assert "byte-for-byte equal to the source: True" in result.output
    assert "Vault check: clean" in result.output
    assert "protected VMs" in result.output and "stored after deduplication" in result.output
    assert "Audit:" in result.output and "events clean" in result.output


def test_serving_the_dispatcher_needs_a_real_redis(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["serve", "dispatcher"], env=env)
    assert result.exit_code != 0
    assert "BACKUP_REDIS_URL" in str(result.exception) or "BACKUP_REDIS_URL" in result.output
