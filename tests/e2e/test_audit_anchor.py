"""The audit trail anchored outside the database, on SQLite: each tampering of issue 16's part 7,
made with raw SQL by someone without the audit key and the witness, is named by `audit verify`
(the same scenarios on PostgreSQL: tests/integration/test_audit_anchor_postgres.py)."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator import Client
from tests import anchoring
from tests.anchoring import Deployment
from tests.tampering import KINDS

FILES = ("events.sqlite", "readmodels.sqlite")


def _sql(path: Path) -> anchoring.Sql:
    def sql(statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as con:
            return con.execute(statement, params).fetchall()

    return sql


@pytest.fixture
def deployment(tmp_path: Path, fabric: Path) -> Iterator[Deployment]:
    data, aside = tmp_path / "data", tmp_path / "older-copy"

    def client(**settings: Any) -> Client:
        return Client(data_dir=data, fabric=fabric, principal="alice", scheduler_interval=3600, **settings)

    def snapshot() -> None:
        aside.mkdir()
        for path in data.iterdir():
            if path.name.startswith(FILES):
                shutil.copy2(path, aside / path.name)

    def restore() -> None:
        for path in data.iterdir():
            if path.name.startswith(FILES):
                path.unlink()
        for path in aside.iterdir():
            shutil.copy2(path, data / path.name)

    yield Deployment(
        client=client,
        events=_sql(data / "events.sqlite"),
        read=_sql(data / "readmodels.sqlite"),
        events_table="stored_events",
        id_column="rowid",
        chain_table="rm_audit_chain",
        positions_table="follower_positions",
        witness=tmp_path / "witness",
        key=anchoring.new_key(),
        snapshot=snapshot,
        restore=restore,
    )


def kinds(report: anchoring.Report) -> list[tuple[str, int]]:
    return [(f.kind, f.notification_id) for f in report.findings]


def test_the_chain_table_emptied_is_named_from_the_witness(deployment: Deployment) -> None:
    assert kinds(anchoring.chain_emptied(deployment)) == [("chain_truncated", 1)]


def test_the_chain_table_truncated_is_named_from_the_witness(deployment: Deployment) -> None:
    kept, report = anchoring.chain_truncated(deployment)
    assert kinds(report) == [("chain_truncated", kept + 1)]


@pytest.mark.parametrize(("sealed_as", "named"), [("none", "unauthenticated"), ("copied", "forged")])
def test_a_forged_event_appended_is_named(deployment: Deployment, sealed_as: str, named: str) -> None:
    forged, report = anchoring.forged_appended(deployment, sealed_as)
    assert kinds(report) == [(named, forged)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_history_changed_and_its_chain_rebuilt_is_named(deployment: Deployment, kind: str) -> None:
    expected, report = anchoring.rebuilt_over(deployment, kind)
    found = kinds(report)
    mismatch = [n for k, n in found if k == "witness_mismatch"]
    assert len(mismatch) == 1 and mismatch[0] >= min(expected), found
    unsealed = {"modified": "forged", "inserted": "unauthenticated"}
    assert [f for f in found if f[0] != "witness_mismatch"] == (
        [(unsealed[kind], expected[0])] if kind in unsealed else []
    )


def test_the_database_restored_from_an_older_copy_is_named(deployment: Deployment) -> None:
    newest, report = anchoring.rolled_back(deployment)
    assert kinds(report) == [("rolled_back", newest)]


def test_audit_verify_reads_the_witness_and_exits_1(deployment: Deployment, tmp_path: Path, fabric: Path) -> None:
    from orchestrator.entry.cli.main import app

    anchoring.built(deployment)
    env = {
        "BACKUP_DATA_DIR": str(tmp_path / "data"),
        "BACKUP_FABRIC": str(fabric),
        "BACKUP_AUDIT_KEY": deployment.key,
        "BACKUP_AUDIT_WITNESS": str(deployment.witness),
        "COLUMNS": "200",
    }
    runner = CliRunner()
    clean = runner.invoke(app, ["audit", "verify", "--chain-only"], env=env)
    assert clean.exit_code == 0 and "signed heads in the witness" in clean.output, clean.output
    newest = max(anchoring.heads(deployment))
    deployment.events("DELETE FROM stored_events WHERE rowid >= ?", (newest - 5,))  # the newest events
    found = runner.invoke(app, ["audit", "verify", "--chain-only"], env=env)
    assert found.exit_code == 1 and "rolled_back" in found.output, found.output
    assert deployment.key not in found.output


def test_the_witness_must_be_outside_the_data_and_needs_the_key(tmp_path: Path, fabric: Path) -> None:
    from orchestrator import OrchestratorError

    key = anchoring.new_key()
    for settings, problem in (
        ({"audit_key": key, "audit_witness": tmp_path / "data" / "witness"}, "outside BACKUP_DATA_DIR"),
        ({"audit_witness": tmp_path / "witness"}, "needs BACKUP_AUDIT_KEY"),
        ({"audit_key": key, "audit_witness": Path("relative")}, "absolute"),
        ({"audit_key": "not base64!"}, "base64"),
    ):
        with pytest.raises(OrchestratorError) as caught:
            Client(data_dir=tmp_path / "data", fabric=fabric, **settings)
        assert caught.value.code == "SettingInvalid" and problem in caught.value.message, caught.value.message
        assert key not in caught.value.message


def test_a_forged_witness_head_is_named(deployment: Deployment) -> None:
    anchoring.built(deployment)
    [first, *_] = sorted(deployment.witness.iterdir())
    planted = deployment.witness / "head-000000999999-0000000000000000.json"
    planted.write_bytes(first.read_bytes().replace(b'"position":', b'"position":9'))
    report = anchoring.verified(deployment)
    assert ("witness_invalid", 0) in kinds(report)
    assert any(planted.name in f.describe() for f in report.findings)


def test_a_witness_emptied_or_not_the_one_written_is_named(deployment: Deployment) -> None:
    anchoring.built(deployment)
    for head in deployment.witness.iterdir():
        head.chmod(0o600)
        head.unlink()
    report = anchoring.verified(deployment)
    assert kinds(report) == [("witness_invalid", 0)] and "holds no head" in report.findings[0].detail


def test_the_chain_follower_never_chains_an_event_without_its_seal(deployment: Deployment) -> None:
    """Even restarted with the key and no witness: the last event it chained was sealed, so sealing
    had begun, and a forged event after it stops the chain rather than being chained (and so anchored)."""
    with deployment.client(audit_key=deployment.key) as client:
        head = anchoring.history(client, vms=3)
    [(topic, state)] = deployment.events("SELECT topic, state FROM stored_events WHERE rowid = ?", (head,))
    forged_id = anchoring.insert_unsealed(deployment, topic, bytes(state))
    with deployment.client(audit_key=deployment.key) as client:
        time.sleep(1.0)  # the follower's passes: it reads the forged event and stops there
        chained = deployment.read("SELECT MAX(notification_id) FROM rm_audit_chain", ())
        report = client.audit_verify(chain_only=True)
    assert chained == [(head,)]
    assert [(f.kind, f.notification_id) for f in report.findings] == [("unauthenticated", forged_id)]
