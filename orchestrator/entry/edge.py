"""The client's edge: every public method takes exactly the types its signature says (pydantic's strict
mode: no string for a number or a time, no bool for a number, no string where a list of names is
expected), and a value of the wrong type is a `CommandInvalid` naming the parameter, raised before
the method does anything."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pydantic import ConfigDict, ValidationError, validate_call

from orchestrator.errors import OrchestratorError

F = TypeVar("F", bound=Callable[..., Any])
STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True)


def strict(method: F) -> F:
    """Validate the call's arguments against `method`'s signature, strictly."""
    validated = validate_call(config=STRICT)(method)
    parameters = list(inspect.signature(method).parameters)
    title = method.__qualname__

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return validated(*args, **kwargs)
        except ValidationError as exc:
            if exc.title != title:  # raised inside the method, not by its arguments
                raise
            raise invalid(method.__name__, parameters, exc) from None

    return cast(F, call)


def invalid(name: str, parameters: list[str], exc: ValidationError) -> OrchestratorError:
    """A `CommandInvalid` for the arguments of `name` that `exc` refused, naming each."""
    errors = exc.errors()

    def where(loc: tuple[Any, ...]) -> str:
        head, *rest = loc or ("arguments",)
        field = parameters[head] if isinstance(head, int) and head < len(parameters) else str(head)
        return ".".join([field, *map(str, rest)])

    first = errors[0]
    field = where(first["loc"])
    return OrchestratorError(
        "CommandInvalid",
        f"{name}: {field}: {first['msg']}",
        field=field.split(".")[0],
        details=[{"field": where(e["loc"]), "rule": e["type"], "message": e["msg"]} for e in errors],
    )
