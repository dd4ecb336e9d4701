"""Event-sourced backup orchestrator for virtual machines. Importing it builds nothing, and imports
nothing but this file: `Client` (and everything it stands on) is loaded when first asked for, so
that `import orchestrator.domain` loads the domain alone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.entry.client import Client
    from orchestrator.errors import OrchestratorError

__all__ = ["Client", "OrchestratorError"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from orchestrator.entry.client import Client

        return Client
    if name == "OrchestratorError":
        from orchestrator.errors import OrchestratorError

        return OrchestratorError
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
