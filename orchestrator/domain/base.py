"""Pydantic aggregates and events for eventsourcing 9.5 (the library ships no pydantic module).

Every event records the principal who caused it, taken from a context variable that the
application sets around each command, so the audit log can say who did what.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate
from pydantic import BaseModel, ConfigDict, Field

_principal: ContextVar[str] = ContextVar("principal", default="system")


def current_principal() -> str:
    return _principal.get()


@contextmanager
def acting_as(principal: str) -> Iterator[None]:
    """Record `principal` on every event created inside the block."""
    token = _principal.set(principal)
    try:
        yield
    finally:
        _principal.reset(token)


class Value(BaseModel):
    """An immutable value object carried inside events and commands."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DomainEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    TOPIC: ClassVar[str]
    originator_id: UUID
    originator_version: int
    timestamp: datetime
    principal: str = Field(default_factory=current_principal)


class Aggregate(BaseAggregate[UUID]):
    """Base of our aggregates: pydantic events with explicit, stable topics."""

    @staticmethod
    def create_id(*_: Any, **__: Any) -> UUID:
        return uuid4()

    def __deepcopy__(self, memo: dict[int, Any]) -> Aggregate:
        """The copy a command works on, made from the repository's cached aggregate.

        Attributes hold immutable values (frozen pydantic values, UUIDs, strings, enums, times)
        or lists of them, which commands replace or extend: new lists are enough, and sharing the
        values keeps the copy of a vault with thousands of VMs cheap. Dicts (job parameters and
        results) are copied deeply; they are small.
        """
        clone = object.__new__(type(self))
        for name, value in self.__dict__.items():
            if isinstance(value, list):
                value = list(value)
            elif isinstance(value, (dict, set)):
                value = copy.deepcopy(value, memo)
            clone.__dict__[name] = value
        return clone

    class Event(DomainEvent, CanMutateAggregate[UUID]):
        pass

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str
