"""`backupctl policy create --file`: a file that cannot be read, parsed or used as a policy is a coded
refusal naming the file (exit 2, nothing stored), not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.entry.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, fabric: Path) -> dict[str, str]:
    env = {"BACKUP_DATA_DIR": str(tmp_path / "data"), "BACKUP_FABRIC": str(fabric), "COLUMNS": "200"}
    created = runner.invoke(app, ["vault", "create", "vault-east", "--region", "japaneast", "-g", "rg"], env=env)
    assert created.exit_code == 0, created.output
    return env


def _policies(env: dict[str, str]) -> list[str]:
    listed = runner.invoke(app, ["policy", "list", "-v", "vault-east", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    return [p["name"] for p in json.loads(listed.output)]


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.yaml", None, "No such file"),
        ("broken.yaml", "schedule: [\n", "expected"),
        ("broken.json", '{"schedule": ', "Expecting value"),
        ("list.yaml", "- 1\n", "valid dictionary"),
        ("partial.yaml", "schedule: {frequency: daily, times: ['03:00']}\n", "retention: Field required"),
        ("latin1.yaml", b"schedule: caf\xe9\n", "utf-8"),
    ],
)
def test_a_policy_file_that_is_no_policy_is_refused_naming_it(
    tmp_path: Path, env: dict[str, str], name: str, content: str | bytes | None, words: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["policy", "create", "FromFile", "-v", "vault-east", "--file", str(path)], env=env)
    assert result.exit_code == 2 and isinstance(result.exception, (SystemExit, type(None))), result.output
    assert "error [CommandInvalid] --file" in result.output and words in result.output, result.output
    assert "FromFile" not in _policies(env)


def test_a_policy_file_makes_the_policy_with_its_time_zone_or_the_option(tmp_path: Path, env: dict[str, str]) -> None:
    spec = {"schedule": {"frequency": "daily", "times": ["03:00"]}, "retention": {"daily": {"days": 14}}}
    (tmp_path / "a.json").write_text(json.dumps({**spec, "timezone": "Asia/Tokyo"}))
    (tmp_path / "b.yaml").write_text(json.dumps(spec))  # JSON is YAML too
    for name, path, tz in (("Tokyo", "a.json", []), ("Paris", "b.yaml", ["--timezone", "Europe/Paris"])):
        args = ["policy", "create", name, "-v", "vault-east", "--file", str(tmp_path / path), *tz]
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["policy", "list", "-v", "vault-east", "--json"], env=env)
    zones = {p["name"]: p["timezone"] for p in json.loads(listed.output)}
    assert (zones["Tokyo"], zones["Paris"]) == ("Asia/Tokyo", "Europe/Paris")
