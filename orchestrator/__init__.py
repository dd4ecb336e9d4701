"""Event-sourced backup orchestrator for virtual machines. Importing it builds nothing."""

from orchestrator.client import Client
from orchestrator.errors import OrchestratorError

__all__ = ["Client", "OrchestratorError"]
