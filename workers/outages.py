"""What counts as an outage of the event or read store (waited out) as opposed to a failure (reported):
shared by the tasks, which run their work again after one, and the workers, which take no job during one."""

from __future__ import annotations

from eventsourcing.persistence import InterfaceError, OperationalError

from orchestrator.errors import ServiceUnavailableError

OUTAGES = (OperationalError, InterfaceError, ServiceUnavailableError)
OUTAGE_CODES = frozenset({"EventStoreUnavailable", "ReadStoreUnavailable"})


def is_outage(exc: BaseException) -> bool:
    """The event store or the read store did not answer (as opposed to the job's own failure)."""
    if isinstance(exc, ServiceUnavailableError):
        return exc.code in OUTAGE_CODES
    return isinstance(exc, OUTAGES)
