"""Errors an operator sees: each carries a stable `code`, and a message that says what to do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


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


def for_each_vm(names: list[str], action: str, resolve: Callable[[str], T]) -> list[T]:
    """Resolve every VM name of a bulk command, or refuse the whole command listing every problem
    (a bulk command is all or nothing). `action` completes "nothing was ...", e.g. "registered"."""
    if not names:
        raise DomainError("VmNamesRequired", f"name at least one VM ({action} nothing)", field="vm_names")
    resolved: list[T] = []
    problems: list[OrchestratorError] = []
    for name in names:
        try:
            resolved.append(resolve(name))
        except DomainError as exc:
            problems.append(exc)
    if problems:
        raise DomainError(
            problems[0].code,
            "; ".join(p.message for p in problems) + f" (nothing was {action})",
            field="vm_names",
            details=[p.as_dict() for p in problems],
        )
    return resolved


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
