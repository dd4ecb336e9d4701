"""Long-running services of the distributed deployment, started by `backupctl serve NAME`: each is
`bootstrap` (the composition root: orchestrator/runtime/bootstrap.py) and then the one follower thread it
runs, built by the runtime's builder for that service (`SERVICES`). The workers' processes are
`rq worker` with orchestrator/runtime/worker.py's class, their own composition root."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from orchestrator.config import load_settings
from orchestrator.dispatch.scheduler import SchedulerThread
from orchestrator.errors import SettingsError
from orchestrator.runtime.bootstrap import Runtime, bootstrap
from projections.follower import FollowerThread

log = logging.getLogger("orchestrator.runtime.services")
SERVICES: dict[str, Callable[[Runtime], FollowerThread | SchedulerThread]] = {
    "dispatcher": Runtime.dispatcher_thread,
    "projections": Runtime.projections_thread,
    "scheduler": Runtime.scheduler_thread,
}


def serve(name: str) -> None:
    """Run one follower service in the foreground until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    if name == "dispatcher" and settings.redis_url is None:
        raise SettingsError(
            "SettingRequired",
            "BACKUP_REDIS_URL must point at the Redis the workers use: a separate dispatcher "
            "cannot share the embedded in-process queue",
            field="BACKUP_REDIS_URL",
        )
    runtime = bootstrap(settings)
    thread = SERVICES[name](runtime)
    stopped = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: signal %d, stopping", name, signum)
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread.start()
    log.info(
        "%s ready (event store %s, queue %s)",
        name,
        runtime.settings.event_store,
        runtime.settings.redis_url or "embedded",
    )
    while not stopped.wait(1.0):
        if not thread.is_alive():
            log.error("%s thread died", name)
            break
    thread.stop()
    runtime.close()
