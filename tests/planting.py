"""RQ jobs as someone with write access to Redis would leave them (finding 8's tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job as RqJob

from workers.queues import JOBS


class Planted:
    """What an attacker pickles: unpickling it runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def plant(redis: Redis, rq_id: str, data: bytes, meta: bytes | None = None, status: str = "queued") -> None:
    """An RQ job as someone with write access to Redis would leave it: the job's hash, and (queued)
    its id on the queue."""
    fields = {"data": data, "status": status, "origin": JOBS, "description": "planted", "timeout": "60"}
    redis.hset(RqJob.key_for(rq_id), mapping={**fields, **({"meta": meta} if meta is not None else {})})
    if status == "queued":
        Queue(JOBS, connection=redis).push_job_id(rq_id)


def status(redis: Redis, rq_id: str) -> str | None:
    """Read straight from the job's hash: reading it as an RQ job would deserialize it."""
    value = redis.hget(RqJob.key_for(rq_id), "status")
    return value.decode() if value else None
