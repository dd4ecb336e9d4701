"""Collection on shared storage: backups' leases and the two-phase mark and sweep, recorded in the
event store (orchestrator/domain/ledger.py, workers/collection.py), played step by step."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from uuid import uuid4

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.write import commands as c
from tests.collecting import Playing, playing
from workers import collection


def _block(vault: Playing, fill: int) -> tuple[str, bytes]:
    data = bytes([fill]) * 65536
    return vault.store.block_name(data), data


def _orphans(vault: Playing, *fills: int) -> list[tuple[str, bytes]]:
    blocks = [_block(vault, f) for f in fills]
    for digest, data in blocks:
        assert vault.store.put_block(digest, data)
    return blocks


def test_a_backup_running_at_the_mark_holds_the_sweep_back_until_it_ends(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        [(x, _)] = _orphans(vault, 1)
        size = vault.store.block_files()[x]  # as stored: compressed and sealed
        with vault.lease() as running:
            result = vault.collect()
            assert result["skipped"] is True and result["blocks_removed"] == 0
            assert str(running.job.id) in result["reason"] and "the mark stays" in result["reason"]
            marked = vault.ledger()["collection"]
            assert (marked["phase"], marked["candidate_count"]) == ("marked", 1)
            assert marked["waiting_for"] == [str(running.job.id)]
            assert vault.store.has_block(x)
        assert vault.ledger()["leases"] == []
        result = vault.collect()  # takes the mark over and sweeps
        assert (result["skipped"], result["blocks_removed"], result["bytes_freed"]) == (False, 1, size)
        assert not vault.store.has_block(x)
        ledger = vault.ledger()
        assert ledger["collection"] is None and ledger["collections"] == 1
        assert ledger["last_collection"]["removed"] == 1 and ledger["last_collection"]["candidates"] == 1
        assert not list(vault.store.objects.sizes("collections"))  # the candidates' object is gone


def test_a_backup_started_after_the_mark_rescues_the_candidate_it_counts_on(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        (x, x_data), (y, _) = _orphans(vault, 1, 2)
        before = vault.lease("vm01").__enter__()
        assert vault.collect()["skipped"] is True  # marked: x and y are candidates
        with vault.lease("vm02") as after:
            assert after.candidates == {x, y}
            assert after.store.put_block(x, x_data) == 0  # stored already: it counts on it
            assert vault.ledger()["collection"]["rescued"] == [x]
            before.__exit__(None, None, None)
            result = vault.collect()
        assert (result["blocks_removed"], result["blocks_rescued"]) == (1, 1)
        assert vault.store.has_block(x) and not vault.store.has_block(y)


def test_a_block_written_after_the_mark_is_never_swept(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        [(x, _)] = _orphans(vault, 1)
        with vault.lease("vm01") as running:
            assert vault.collect()["skipped"] is True
            late, data = _block(vault, 7)
            assert running.store.put_block(late, data)  # written after the mark, in no manifest yet
        assert vault.collect()["blocks_removed"] == 1
        assert vault.store.has_block(late) and not vault.store.has_block(x)


def test_a_rescue_refused_once_the_sweep_started_waits_for_its_end_and_stores_the_block_again(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        [(x, x_data)] = _orphans(vault, 1)
        first = vault.lease("vm01").__enter__()
        assert vault.collect()["skipped"] is True
        late = vault.lease("vm02").__enter__()  # knows the candidates
        first.__exit__(None, None, None)
        collector = vault.retention_job()
        assert vault.ctx.report(c.TakeOverCollection(job_id=collector.id)) is not None
        assert vault.ctx.report(c.StartSweep(job_id=collector.id)) == []  # the sweep has started
        assert late.counting_on([x]) is False  # too late to rescue
        stored: list[bool] = []
        writer = threading.Thread(target=lambda: stored.append(late.store.put_block(x, x_data)))
        writer.start()
        writer.join(1.0)
        assert writer.is_alive()  # waiting for the sweep's end
        outcome = collection.collect(vault.ctx, collector, vault.store)  # the sweep removes x, and ends
        writer.join(10)
        assert outcome["blocks_removed"] == 1 and len(stored) == 1 and stored[0] > 0  # then the backup stored x again
        assert vault.store.has_block(x)
        late.__exit__(None, None, None)


def test_a_backup_waiting_on_a_sweep_whose_collector_died_fails_with_a_code(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        [(x, x_data)] = _orphans(vault, 1)
        first = vault.lease("vm01").__enter__()
        assert vault.collect()["skipped"] is True
        late = vault.lease("vm02").__enter__()
        first.__exit__(None, None, None)
        collector = vault.retention_job()
        vault.ctx.report(c.TakeOverCollection(job_id=collector.id))
        assert vault.ctx.report(c.StartSweep(job_id=collector.id)) == []
        vault.ended(collector)  # its worker died mid-sweep
        with pytest.raises(OrchestratorError) as refused:
            late.store.put_block(x, x_data)
        assert refused.value.code == "CollectionInterrupted" and str(collector.id) in refused.value.message
        late.__exit__(None, None, None)
        assert vault.collect()["blocks_removed"] == 1  # the next collection takes the sweep over


def test_a_collector_killed_mid_sweep_is_taken_over_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collection, "PROGRESS_EVERY", 2)
    with playing(tmp_path) as vault:
        blocks = _orphans(vault, 1, 2, 3, 4, 5)
        removing = vault.store.remove_block
        removed: list[str] = []

        def dies_at_the_fourth(digest: str) -> int:
            if len(removed) == 3:
                raise KeyboardInterrupt  # the process killed
            removed.append(digest)
            return removing(digest)

        monkeypatch.setattr(vault.store, "remove_block", dies_at_the_fourth)
        collector = vault.retention_job()
        with pytest.raises(KeyboardInterrupt):
            collection.collect(vault.ctx, collector, vault.store)
        swept = vault.ledger()["collection"]
        assert (swept["phase"], swept["swept"], swept["removed"]) == ("sweeping", 2, 2)  # recorded every 2
        vault.ended(collector)
        monkeypatch.setattr(vault.store, "remove_block", removing)
        result = vault.collect()
        assert result["skipped"] is False and all(not vault.store.has_block(d) for d, _ in blocks)
        assert vault.ledger()["last_collection"]["removed"] >= 4  # the third was removed before the kill
        assert len(vault.ledger()["collection"] or []) == 0


def test_a_collection_under_way_is_not_taken_over_while_its_job_runs(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        _orphans(vault, 1)
        with vault.lease():
            collector = vault.retention_job()
            assert collection.collect(vault.ctx, collector, vault.store)["skipped"] is True  # its job goes on
            result = vault.collect()
        assert result["skipped"] is True and "still running" in result["reason"]
        assert str(collector.id) in result["reason"]


def test_a_lease_is_only_for_a_running_backup_job(tmp_path: Path) -> None:
    with playing(tmp_path) as vault:
        retention = vault.retention_job()
        with pytest.raises(OrchestratorError) as refused:
            vault.ctx.report(c.TakeLease(job_id=retention.id, lease_id=uuid4()))
        assert refused.value.code == "JobNotRunning"
        lease = vault.lease()
        vault.ended(lease.job)
        with pytest.raises(OrchestratorError) as ended:
            lease.__enter__()
        assert ended.value.code == "JobNotRunning"


def test_the_cli_shows_the_collection_under_way(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestrator.entry.cli.main import app

    with playing(tmp_path) as vault:
        _orphans(vault, 1, 2)
        with vault.lease() as running:
            vault.collect()
            assert vault.client.collection(vault.vault)["collection"]["waiting_for"] == [str(running.job.id)]
        env = vault.env
    shown = CliRunner().invoke(app, ["vault", "collection", "vault-east", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    marked = json.loads(shown.stdout)["collection"]  # stdout only: a log line on stderr is not the document
    assert (marked["phase"], marked["candidate_count"], marked["waiting_for"], marked["swept"]) == ("marked", 2, [], 0)


def test_two_deliveries_of_one_backup_hold_a_lease_each(tmp_path: Path) -> None:
    from workers.collection import BackupLease

    with playing(tmp_path) as vault:
        _orphans(vault, 1)
        first = vault.lease()
        second = BackupLease(vault.ctx, first.job, vault.ctx.vault_store(first.job.vault_id))  # RQ's retry
        first.__enter__()
        second.__enter__()  # while a work horse RQ gave up on still runs
        assert vault.collect()["skipped"] is True
        first.__exit__(None, None, None)  # the first ends: the second still counts on the blocks
        result = vault.collect()
        assert result["skipped"] is True and str(first.job.id) in result["reason"]
        second.__exit__(None, None, None)
        assert vault.collect()["blocks_removed"] == 1
