"""What counts as an outage of the event or read store (waited out) as opposed to a failure (reported):
shared by the tasks, which run their work again after one, and the workers, which take no job during one."""

from __future__ import annotations

import logging
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError

from orchestrator.errors import ServiceUnavailableError

OUTAGES = (OperationalError, InterfaceError, ServiceUnavailableError)
OUTAGE_CODES = frozenset({"EventStoreUnavailable", "ReadStoreUnavailable"})
log = logging.getLogger(__name__)


def is_outage(exc: BaseException) -> bool:
    """The event store or the read store did not answer (as opposed to the job's own failure)."""
    if isinstance(exc, ServiceUnavailableError):
        return exc.code in OUTAGE_CODES
    return isinstance(exc, OUTAGES)


def event_store_answers(app: Any) -> bool:
    """Whether the application's event store answers a read of its head now (on SQLite: the file
    opens and reads). Another failure than an outage (no such table, say) is raised, not waited out."""
    try:
        app.recorder.max_notification_id()
    except OUTAGES as exc:
        if not is_outage(exc):
            raise
        log.debug("the event store does not answer: %s", exc)
        return False
    return True
