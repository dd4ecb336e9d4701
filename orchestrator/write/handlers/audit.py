"""Audit checkpoints of the hash chain."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from orchestrator.domain import AuditCheckpoint
from orchestrator.domain.checkpoint import checkpoint_id_for
from orchestrator.write import commands as c
from orchestrator.write.handlers import handles

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator


@handles(c.RecordAuditCheckpoint)
def record_checkpoint(app: Orchestrator, cmd: c.RecordAuditCheckpoint) -> UUID:
    """Once per position: a second recording (another chain follower, a retry) is a no-op."""
    checkpoint_id = checkpoint_id_for(cmd.position)
    if checkpoint_id not in app.repository:
        app.save(AuditCheckpoint(position=cmd.position, chain_hash=cmd.chain_hash))
    return checkpoint_id
