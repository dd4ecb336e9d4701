"""Long-running services of the distributed deployment, started by `backupctl serve NAME`."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from orchestrator.bootstrap import bootstrap
from orchestrator.config import load_settings
from orchestrator.errors import SettingsError
from orchestrator.follower import FollowerThread
from orchestrator.scheduler import SchedulerThread

log = logging.getLogger("orchestrator.services")


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
    thread: FollowerThread | SchedulerThread
    if name == "dispatcher":
        thread = runtime.dispatcher_thread()
    elif name == "projections":
        thread = runtime.projections_thread()
    else:
        thread = runtime.scheduler_thread()
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
