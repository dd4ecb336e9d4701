"""A read command on read models that are current answers from the read store alone, without the
application, the aggregates or any service (orchestrator/entry/reader.py); one that finds them behind
the event log, or asks about a vault they do not list, is answered by the client, as before."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Client
from projections import names, runner

ROOT = Path(__file__).resolve().parents[2]
WRITE_SIDE = ("orchestrator.entry.client", "orchestrator.write.application", "orchestrator.domain.job", "redis", "rq")
PROGRAM = """
import json, sys
from typer.testing import CliRunner
from orchestrator.entry.cli.main import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = {heavy!r}
print(json.dumps({{"exit": result.exit_code, "output": result.output,
                  "loaded": sorted(m for m in heavy if m in sys.modules)}}))
"""


@pytest.fixture
def env(tmp_path: Path, fabric: Path) -> dict[str, str]:
    return {"BACKUP_DATA_DIR": str(tmp_path / "data"), "BACKUP_FABRIC": str(fabric), "COLUMNS": "200"}


def backupctl(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`backupctl ARGS` in a fresh interpreter: its exit code, output, and which write-side modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(heavy=WRITE_SIDE), *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def settings(env: dict[str, str]) -> dict[str, Any]:
    return {"data_dir": Path(env["BACKUP_DATA_DIR"]), "fabric": Path(env["BACKUP_FABRIC"])}


def test_a_read_on_current_read_models_loads_no_write_side(env: dict[str, str]) -> None:
    with Client(**settings(env)) as client:
        vault_id = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault_id))
        client.wait_all(client.register(vault_id, ["vm01"]))
        client.vaults()  # caught up: every read model at the log's head
    listed = backupctl(env, "vault", "list", "--json")
    assert listed["exit"] == 0 and listed["loaded"] == [], listed
    assert [v["vault_id"] for v in json.loads(listed["output"])] == [vault_id]
    items = backupctl(env, "items", "vault-east", "--json")
    assert items["loaded"] == [] and [i["vm_name"] for i in json.loads(items["output"])] == ["vm01"]
    jobs = backupctl(env, "jobs", "--vault", "vault-east", "--json")
    assert jobs["loaded"] == [] and {j["operation"] for j in json.loads(jobs["output"])} == {"discovery", "register"}
    board = backupctl(env, "dashboard", "vault-east", "--json")
    assert board["exit"] == 0 and board["loaded"] == [] and json.loads(board["output"])["vaults"], board


def test_a_read_behind_the_log_is_answered_by_the_client(env: dict[str, str]) -> None:
    with Client(**settings(env), start_services=False) as client:  # no follower: the read models stay behind
        vault_id = client.create_vault("vault-east", "japaneast", "rg")
    listed = backupctl(env, "vault", "list", "--json")
    assert listed["exit"] == 0 and "orchestrator.entry.client" in listed["loaded"], listed
    assert [v["vault_id"] for v in json.loads(listed["output"])] == [vault_id]
    again = backupctl(env, "vault", "list", "--json")  # the client caught them up: now they are current
    assert again["loaded"] == [] and json.loads(again["output"]) == json.loads(listed["output"])


def test_a_vault_the_read_models_do_not_list_is_the_clients_to_name(env: dict[str, str]) -> None:
    with Client(**settings(env)) as client:
        gone = client.create_vault("vault-gone", "japaneast", "rg")
        client.delete_vault(gone)
        client.vaults()
    deleted = backupctl(env, "jobs", "--vault", "vault-gone", "--json")  # its history stays: the client knows it
    assert deleted["exit"] == 0 and "orchestrator.entry.client" in deleted["loaded"], deleted
    assert json.loads(deleted["output"]) == []
    unknown = backupctl(env, "items", "nowhere")
    assert unknown["exit"] == 2 and "VaultNotFound" in unknown["output"]


def test_a_read_on_a_data_dir_in_use_is_refused_as_before(env: dict[str, str]) -> None:
    with Client(**settings(env)) as client:
        client.create_vault("vault-east", "japaneast", "rg")
        client.vaults()
        refused = backupctl(env, "vault", "list")
    assert refused["exit"] == 2 and "DataDirInUse" in refused["output"], refused


def test_a_read_on_a_new_data_dir_makes_it_through_the_client(env: dict[str, str]) -> None:
    listed = backupctl(env, "vault", "list", "--json")
    assert listed["exit"] == 0 and json.loads(listed["output"]) == []
    assert (Path(env["BACKUP_DATA_DIR"]) / "readmodels.sqlite").exists()


def test_the_light_list_of_read_models_is_the_projections_own() -> None:
    assert list(names.NAMES) == runner.NAMES
    assert {p.name: p.version for p in runner.PROJECTIONS} == names.VERSIONS


def test_a_read_model_at_another_version_is_rebuilt_by_the_client(env: dict[str, str]) -> None:
    with Client(**settings(env)) as client:
        vault_id = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault_id))
    with sqlite3.connect(Path(env["BACKUP_DATA_DIR"]) / "readmodels.sqlite") as db:  # as an older release left it
        db.execute("UPDATE view_versions SET version = version - 1 WHERE view = 'jobs'")
    jobs = backupctl(env, "jobs", "--json")
    assert jobs["exit"] == 0 and "orchestrator.entry.client" in jobs["loaded"], jobs
    assert [j["operation"] for j in json.loads(jobs["output"])] == ["discovery"]
