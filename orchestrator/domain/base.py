"""Pydantic aggregates and events for eventsourcing 9.5 (the library ships no pydantic module).

Every event records the principal who caused it, taken from a context variable that the
application sets around each command, so the audit log can say who did what.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate as LibraryAggregate
from eventsourcing.domain import CanInitAggregate, CanMutateAggregate, CanSnapshotAggregate
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
    """An event, stored as its JSON. A class whose fields change gets a `class_version` (an int
    class attribute, 2 and up) and a static `upcast_v1_v2(state)` (and so on) that turns the stored
    JSON object of the version before into the one after: the library's convention, which the mapper
    (orchestrator/write/persistence.py) follows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TOPIC: ClassVar[str]
    originator_id: UUID
    originator_version: int
    timestamp: datetime
    principal: str = Field(default_factory=current_principal)


class SnapshotState(BaseModel):
    """An aggregate's attributes, typed, for its snapshots: each snapshotted aggregate lists every
    attribute in a subclass (an attribute it does not list makes taking a snapshot fail).

    The library's snapshot holds the aggregate's attributes as they are in its `vars()`, where
    its creation and modification times are `_created_on` and `_modified_on`: the aliases of the two
    fields below. Stored snapshots name them `created_on` and `modified_on`, read by name."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    created_on: datetime = Field(alias="_created_on")
    modified_on: datetime = Field(alias="_modified_on")

    def attributes(self) -> dict[str, Any]:
        """The aggregate's attributes, named as in its `vars()`, with their typed values."""
        return {field.alias or name: getattr(self, name) for name, field in type(self).model_fields.items()}


class AggregateSnapshot(DomainEvent, CanSnapshotAggregate[UUID]):
    """An aggregate's whole state at one version, kept beside its events (never instead of them),
    so that loading it reads the snapshot and the events after it only. Derived data: the audit
    chain and the read models are built from the events.

    The library takes and restores the snapshot (`CanSnapshotAggregate.take` and `mutate`); this
    class only types the state on the way to JSON and back, through the aggregate's
    `snapshot_state`. An aggregate whose attributes change gets a `class_version` and static
    `upcast_v1_v2(state)` methods, which the library runs on older snapshots' states."""

    TOPIC = "backup.snapshot"
    topic: str
    state: dict[str, Any]

    @classmethod
    def take(cls, aggregate: Any) -> AggregateSnapshot:
        taken = super().take(aggregate)
        state = dict(taken.state)
        class_version = state.pop("class_version", None)
        typed = type(aggregate).snapshot_state.model_validate(state).model_dump(mode="json")
        if class_version is not None:
            typed["class_version"] = class_version
        return taken.model_copy(update={"state": typed})

    def mutate(self, _: None) -> Any:
        cls = resolve_topic(self.topic)
        state = dict(self.state)
        from_version, class_version = state.pop("class_version", 1), getattr(cls, "class_version", 1)
        while from_version < class_version:  # before the typing: the older state does not fit it
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        typed = cls.snapshot_state.model_validate(state).attributes()
        if class_version > 1:
            typed["class_version"] = class_version  # upcast already: nothing left for the library to do
        return super(AggregateSnapshot, self.model_copy(update={"state": typed})).mutate(None)


get_topic(AggregateSnapshot)  # registers its TOPIC, for processes that read snapshots before taking one


class Aggregate(LibraryAggregate):
    """Base of our aggregates: pydantic events with explicit, stable topics."""

    # The library's Aggregate names its dataclass snapshot here; ours is the pydantic one above.
    Snapshot = AggregateSnapshot  # type: ignore[assignment]
    snapshot_state: ClassVar[type[SnapshotState]]  # on the aggregates the application snapshots
    # An aggregate that can be deleted (a vault) sets this on itself: a deleted one is found by no
    # command (Orchestrator.find), though its history stays.
    deleted: bool = False

    class Event(DomainEvent, CanMutateAggregate[UUID]):
        pass

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str
