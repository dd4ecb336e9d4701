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

from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate, CanSnapshotAggregate
from eventsourcing.utils import get_topic, resolve_topic
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


class SnapshotState(BaseModel):
    """An aggregate's attributes, typed, for its snapshots: each snapshotted aggregate lists every
    attribute in a subclass (an attribute it does not list makes taking a snapshot fail)."""

    model_config = ConfigDict(extra="forbid")

    created_on: datetime
    modified_on: datetime


_INTERNAL = {"_id", "_version", "_pending_events"}


class AggregateSnapshot(DomainEvent, CanSnapshotAggregate[UUID]):
    """An aggregate's whole state at one version, kept beside its events (never instead of them),
    so that loading it reads the snapshot and the events after it only. Derived data: the audit
    chain and the read models are built from the events."""

    TOPIC = "backup.snapshot"
    topic: str
    state: dict[str, Any]

    @classmethod
    def take(cls, aggregate: Any) -> AggregateSnapshot:
        values = {name: value for name, value in vars(aggregate).items() if name not in _INTERNAL}
        values["created_on"], values["modified_on"] = values.pop("_created_on"), values.pop("_modified_on")
        state = type(aggregate).snapshot_state.model_validate(values)
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=cls.create_timestamp(),
            topic=get_topic(type(aggregate)),
            state=state.model_dump(mode="json"),
        )

    def mutate(self, _: None) -> Any:
        cls = resolve_topic(self.topic)
        state = cls.snapshot_state.model_validate(self.state)
        aggregate = object.__new__(cls)
        values = {name: getattr(state, name) for name in type(state).model_fields}
        values["_created_on"], values["_modified_on"] = values.pop("created_on"), values.pop("modified_on")
        aggregate.__dict__.update(
            _id=self.originator_id, _version=self.originator_version, _pending_events=[], **values
        )
        return aggregate


get_topic(AggregateSnapshot)  # registers its TOPIC, for processes that read snapshots before taking one


class Aggregate(BaseAggregate[UUID]):
    """Base of our aggregates: pydantic events with explicit, stable topics."""

    Snapshot: ClassVar[type[AggregateSnapshot]] = AggregateSnapshot
    snapshot_state: ClassVar[type[SnapshotState]]  # on the aggregates the application snapshots

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
