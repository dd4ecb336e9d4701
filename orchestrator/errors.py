"""Errors an operator sees: each carries a stable `code`, and a message that says what to do."""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Base of every error the client raises on purpose. `code` is stable across releases."""

    code: str = "OrchestratorError"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.details = details or []

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.details:
            out["details"] = self.details
        return out


class DomainError(OrchestratorError):
    """A command broke a rule of the domain; nothing was stored."""


class NotFoundError(OrchestratorError):
    """The named vault, job or VM does not exist."""


class SettingsError(OrchestratorError):
    """A setting (environment variable) is invalid; names the variable and the rule."""


class InventoryError(OrchestratorError):
    """The fabric inventory file is invalid; names the VM and the field."""


class ConcurrencyError(OrchestratorError):
    """A command kept conflicting with concurrent writers; retry it."""


class ServiceUnavailableError(OrchestratorError):
    """A backing service (event store, queue) did not answer; the command may be retried."""
