"""How our pydantic events are stored: JSON state, topics from the classes' explicit TOPIC."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel

_TOPICS: dict[str, Any] = {}  # stored topic -> event class: resolving one costs more than decoding an event


class JsonTranscoder(Transcoder):
    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class PydanticMapper(Mapper[UUID]):
    """Stores `model_dump(mode="json")`; pydantic re-validates the state on the way back."""

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        state = cast(BaseModel, domain_event).model_dump(mode="json")
        data = self.transcoder.encode(state)
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[Any]:
        return self.decode(stored_event.topic, stored_event.state)

    def decode(self, topic: str, data: bytes) -> DomainEventProtocol[Any]:
        """The event stored as `data` under `topic` (the state holds every field, the originator's
        id and version too, so a reader needs no more of the stored row)."""
        if self.cipher:
            data = self.cipher.decrypt(data)
        if self.compressor:
            data = self.compressor.decompress(data)
        cls = _TOPICS.get(topic) or _TOPICS.setdefault(topic, resolve_topic(topic))
        if isinstance(self.transcoder, JsonTranscoder):  # parse and validate in one pass (pydantic-core)
            return cast(
                DomainEventProtocol[Any], cls.__pydantic_validator__.validate_json(data)
            )  # model_validate_json's own work
        state: dict[str, Any] = self.transcoder.decode(data)
        return cast(DomainEventProtocol[Any], cls(**state))

    def decoder(self) -> Callable[[str, bytes], DomainEventProtocol[Any]]:
        """`decode` for reading many events: with plain JSON state (no cipher, no compressor), each
        topic's validator is looked up once, and an event costs one call into pydantic-core."""
        if self.cipher or self.compressor or not isinstance(self.transcoder, JsonTranscoder):
            return self.decode
        validators: dict[str, Callable[[bytes], Any]] = {}

        def decode(topic: str, data: bytes) -> DomainEventProtocol[Any]:
            validate = validators.get(topic)
            if validate is None:
                cls = _TOPICS.get(topic) or _TOPICS.setdefault(topic, resolve_topic(topic))
                validate = validators[topic] = cls.__pydantic_validator__.validate_json
            return validate(data)  # type: ignore[no-any-return]  # (a cast here costs a third of the call)

        return decode
