"""Command handlers, one module per noun. Each loads aggregates, calls their methods and saves:
no Redis, no fabric. `handles` registers a handler for a command class."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from orchestrator.application import Orchestrator
    from orchestrator.commands import Command

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
    from orchestrator.handlers import audit, backups, jobs, policies, protection, registration, vaults  # noqa: F401
