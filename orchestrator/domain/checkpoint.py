"""An audit checkpoint: the hash chain's value at a position of the event history, recorded in
the history itself (and printed by `audit verify`, for keeping elsewhere)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from orchestrator.domain.base import Aggregate


def checkpoint_id_for(position: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"/audit/checkpoints/{position}")


class AuditCheckpoint(Aggregate):
    TOPIC = "backup.audit_checkpoint"

    class Created(Aggregate.Created):
        TOPIC = "backup.audit_checkpoint.created"
        position: int
        chain_hash: str

    @staticmethod
    def create_id(position: int, chain_hash: str) -> UUID:
        return checkpoint_id_for(position)

    @event(Created)
    def __init__(self, position: int, chain_hash: str) -> None:
        self.position = position
        self.chain_hash = chain_hash
