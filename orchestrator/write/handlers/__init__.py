"""Command handlers, one module per noun. Each loads aggregates, calls their methods and saves:
no Redis, no fabric. `handles` registers a handler for a command class."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from orchestrator.write.application import Orchestrator
    from orchestrator.write.commands import Command

C = TypeVar("C", bound="Command")
Handler = Callable[["Orchestrator", Any], Any]
HANDLERS: dict[type[Any], Handler] = {}


def handles(command_class: type[C]) -> Callable[[Callable[[Orchestrator, C], Any]], Callable[[Orchestrator, C], Any]]:
    def register(handler: Callable[[Orchestrator, C], Any]) -> Callable[[Orchestrator, C], Any]:
        assert command_class not in HANDLERS, f"two handlers for {command_class.__name__}"
        HANDLERS[command_class] = handler
        return handler

    return register


def load_all() -> None:
    """Import every handler module, so that each registers its handlers."""
    from orchestrator.write.handlers import (  # noqa: F401
        audit,
        backups,
        guards,
        identities,
        ledger,
        policies,
        protection,
        registration,
        vaults,
    )
    from orchestrator.write.handlers import job_reports as jobs  # noqa: F401
