"""`backupctl health`: can this process reach what the deployment needs?"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError
from rq import Queue

from orchestrator.runtime.bootstrap import Runtime
from projections.runner import NAMES as PROJECTION_NAMES
from workers.queues import QUEUES

MAX_LAG = 1000  # events a read model may trail by and still count as healthy


def check(runtime: Runtime) -> dict[str, Any]:
    """The event store answers, the queue answers, and the read models are within MAX_LAG events."""
    head = runtime.app.recorder.max_notification_id() or 0
    lag = {name: head - runtime.store.position(name) for name in PROJECTION_NAMES}
    report: dict[str, Any] = {"event_store": "ok", "events": head, "read_model_lag": lag}
    try:
        runtime.redis.ping()
        report["queue"] = {n: Queue(n, connection=runtime.redis).count for n in QUEUES}
    except RedisError as exc:
        report["queue"] = f"unreachable: {exc}"
    report["healthy"] = isinstance(report["queue"], dict) and max(lag.values()) <= MAX_LAG
    return report
