"""The write model. Importing this package registers every event topic."""

from orchestrator.domain.item import VirtualMachine
from orchestrator.domain.job import Job
from orchestrator.domain.vault import Vault

__all__ = ["Job", "Vault", "VirtualMachine"]
