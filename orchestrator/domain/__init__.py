"""The write model. Importing this package registers every event topic."""

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
