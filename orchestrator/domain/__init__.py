"""The write model: the aggregates, each loaded when first asked for (`from orchestrator.domain
import Job`), so that a module that needs only the naming rules (`orchestrator.domain.names`) or the
values does not build every aggregate's event classes. An event's topic names its module, which the
mapper imports when it decodes one (orchestrator/write/persistence.py)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.domain.checkpoint import AuditCheckpoint
    from orchestrator.domain.discovery import Discovery
    from orchestrator.domain.guard import ResourceGuard
    from orchestrator.domain.identity import Identity
    from orchestrator.domain.item import VirtualMachine
    from orchestrator.domain.job import Job
    from orchestrator.domain.ledger import BlockLedger
    from orchestrator.domain.policy import BackupPolicy
    from orchestrator.domain.recovery_point import RecoveryPoint
    from orchestrator.domain.vault import Vault

AGGREGATES = {
    "AuditCheckpoint": "checkpoint",
    "BackupPolicy": "policy",
    "BlockLedger": "ledger",
    "Discovery": "discovery",
    "Identity": "identity",
    "Job": "job",
    "RecoveryPoint": "recovery_point",
    "ResourceGuard": "guard",
    "Vault": "vault",
    "VirtualMachine": "item",
}

__all__ = [
    "AuditCheckpoint",
    "BackupPolicy",
    "BlockLedger",
    "Discovery",
    "Identity",
    "Job",
    "RecoveryPoint",
    "ResourceGuard",
    "Vault",
    "VirtualMachine",
]


def __getattr__(name: str) -> Any:
    module = AGGREGATES.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator.domain' has no attribute {name!r}")
    return getattr(import_module(f"orchestrator.domain.{module}"), name)
