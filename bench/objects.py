"""Which S3 client the object store uses: boto3 or obstore, measured on SeaweedFS.

Each round starts one `weed server -s3` and runs, as two whole processes, the same work through
each client: PUT (if absent) N blocks of 4 MiB of random data with T in flight, then GET them all
back with T in flight and check each; the order of the two alternates by round. Prints each
client's median and range of wall time per phase, and the ratio boto3/obstore (>1: obstore faster).
boto3 is not a dependency of the project: `pip install boto3` first.

    python bench/objects.py --blocks 64 --threads 8 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.processes import ROOT
from tests.seaweed import S3Server, make_bucket, seaweedfs

WORK = r"""
import hashlib, json, os, sys, time
from concurrent.futures import ThreadPoolExecutor
client, endpoint, access, secret, bucket, n, threads = sys.argv[1:8]
n, threads = int(n), int(threads)
blocks = [os.urandom(4 * 1024 * 1024) for _ in range(n)]
names = [f"blocks/{hashlib.sha256(b).hexdigest()}" for b in blocks]
if client == "boto3":
    import boto3
    from botocore.config import Config
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                      region_name="us-east-1", config=Config(max_pool_connections=threads))
    def put(i): s3.put_object(Bucket=bucket, Key=names[i], Body=blocks[i], IfNoneMatch="*")
    def get(i): return s3.get_object(Bucket=bucket, Key=names[i])["Body"].read()
else:
    import obstore
    from obstore.store import S3Store
    store = S3Store(bucket, endpoint=endpoint, access_key_id=access, secret_access_key=secret,
                    region="us-east-1", client_options={"allow_http": True})
    def put(i): obstore.put(store, names[i], blocks[i], mode="create")
    def get(i): return bytes(obstore.get(store, names[i]).bytes())
with ThreadPoolExecutor(threads) as pool:
    t = time.perf_counter(); list(pool.map(put, range(n))); put_s = time.perf_counter() - t
    t = time.perf_counter(); got = list(pool.map(get, range(n))); get_s = time.perf_counter() - t
assert got == blocks
print(json.dumps({"put": put_s, "get": get_s}))
"""


def run(client: str, server: S3Server, bucket: str, blocks: int, threads: int) -> dict[str, float]:
    make_bucket(server, bucket)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            WORK,
            client,
            server.endpoint,
            server.access_key,
            server.secret_key,
            bucket,
            str(blocks),
            str(threads),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode:
        raise SystemExit(f"{client} failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, dict[str, list[float]]] = {c: {"put": [], "get": []} for c in ("boto3", "obstore")}
    for round_ in range(args.rounds):
        with seaweedfs() as server:
            order = ("boto3", "obstore") if round_ % 2 == 0 else ("obstore", "boto3")
            for client in order:
                result = run(client, server, f"bench-{client}-{round_}", args.blocks, args.threads)
                for phase, seconds in result.items():
                    times[client][phase].append(seconds)
    mib = args.blocks * 4
    print(f"{args.blocks} blocks of 4 MiB ({mib} MiB), {args.threads} in flight, {args.rounds} rounds")
    print(f"{'phase':<6}{'boto3 median (range)':>28}{'obstore median (range)':>30}{'ratio boto3/obstore':>22}")
    for phase in ("put", "get"):
        b, o = times["boto3"][phase], times["obstore"][phase]
        cell = lambda xs: f"{statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})"  # noqa: E731
        print(f"{phase:<6}{cell(b):>28}{cell(o):>30}{statistics.median(b) / statistics.median(o):>22.2f}")


if __name__ == "__main__":
    main()
