"""A worker SIGKILLed mid-upload to SeaweedFS S3 (some of the backup's blocks PUT, others not, no
manifest): no recovery point without its blocks. RQ retries the job in another worker, which
completes it (one point, restored byte for byte, verified), and the dead attempt's blocks are
reused or left to collection, never referenced while missing."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.fabric.sample import vm_entry, write_fabric
from tests.deployment import Deployment, wait_for
from tests.seaweed import S3Server, new_bucket
from workers.objects import S3Objects

pytestmark = [pytest.mark.integration, pytest.mark.faults]
LEASE = 150.0  # seconds: a killed worker's job is retried within this (README, "A job whose worker dies")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_worker_killed_mid_upload_leaves_no_point_without_its_blocks(
    tmp_path: Path, deployment: Deployment, seaweed: S3Server
) -> None:
    bucket = new_bucket(seaweed)
    inventory = write_fabric(tmp_path / "fabric", {"default": [vm_entry("big", "japaneast")]}, disk_mib=48)
    # 64 KiB blocks: hundreds of PUTs per disk, so that the kill lands in the middle of them.
    deployment.env.update({**seaweed.settings(bucket), "BACKUP_FABRIC": str(inventory), "BACKUP_BLOCK_SIZE": "65536"})
    deployment.start_all(workers=1)
    with deployment.client() as client:
        vault = client.create_vault("vault-east", "japaneast", "rg")
        client.wait(client.discover(vault), timeout=60)
        client.wait_all(client.register(vault, ["big"]), timeout=60)
        assert {j.status for j in client.wait_all(client.protect(vault, ["big"]), timeout=60)} == {"completed"}
        location = client.settings.s3_location
        assert location is not None
        objects = S3Objects.at(location, vault)
        job_id = client.backup_now(vault, "big")
        wait_for(lambda: len(objects.sizes("blocks/")) >= 20, 120, "the backup to have PUT some of its blocks")
        deployment.kill("worker0")
        uploaded = objects.sizes("blocks/")
        assert objects.sizes("manifests/") == {}, "the upload ended before the kill: the test proves nothing"
        [(_, image)] = client._runtime.fabric.disk_paths("default/rg-japaneast/big")
        whole = sum(1 for b in _blocks(image) if b.strip(b"\0"))
        assert len(uploaded) < whole, (len(uploaded), whole)
        assert client.recovery_points(vault, "big") == []  # no point while its blocks are not all there

        killed = time.monotonic()
        deployment.start("worker1")
        job = client.wait(job_id, timeout=LEASE + 60)
        assert time.monotonic() - killed < LEASE
        assert job.status == "completed", (job.error_code, job.error_message, deployment.logs())
        assert job.attempts >= 2
        [point] = client.recovery_points(vault, "big")
        check = client.check_vault(vault)
        assert check["clean"] and check["missing"] == [] and check["corrupt"] == [], check
        assert set(uploaded) <= set(objects.sizes("blocks/"))  # the dead attempt's blocks reused, not lost
        restore = client.wait(client.restore(point.recovery_point_id, "big-copy"), timeout=120)
        assert restore.status == "completed", restore.error_message
        copy = client._runtime.fabric.find_vm("default", "big-copy")
        assert copy is not None
        [disk] = copy.spec.disks
        assert _sha(copy.disk_path(disk)) == _sha(image)
        verified = client.wait(client.verify(vault), timeout=120)
        assert verified.status == "completed" and verified.result["failed"] == 0, verified.result


def _blocks(image: Path) -> Iterator[bytes]:
    with image.open("rb") as f:
        while block := f.read(65536):
            yield block
