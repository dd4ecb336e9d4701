"""A projection's `apply` by event class (`on_event`): a plain dict from class to method."""

from __future__ import annotations

from typing import Any

from projections.base import on_event
from projections.store import Tx


class Base:
    pass


class Child(Base):
    pass


class Other:
    pass


class Recording:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @on_event
    def apply(self, event: Any, tx: Tx) -> None:
        self.seen.append(("ignored", event))

    @apply.register
    def _(self, event: Base, tx: Tx) -> None:
        self.seen.append(("base", event))


def test_an_event_goes_to_the_method_of_its_class_or_its_nearest_base_else_the_default() -> None:
    projection = Recording()
    events = [Base(), Child(), Other()]
    for event in events:
        projection.apply(event, None)  # type: ignore[arg-type]
    assert projection.seen == [("base", events[0]), ("base", events[1]), ("ignored", events[2])]
    dispatch = Recording.__dict__["apply"]
    assert isinstance(dispatch, on_event) and dispatch.handler(Child) is dispatch.handler(Base)
